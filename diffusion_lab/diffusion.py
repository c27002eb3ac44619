"""Diffusion math, stateless over a schedule and a callable ``model(x_t, t, y=None) -> ε``.

Book equations (code index t ↔ paper step t+1, see :mod:`diffusion_lab.schedules`):

  (2.1) q(x_t | x_{t-1}) = N(√(1-β_t) x_{t-1}, β_t I)                         :func:`q_step`
  (2.4) q(x_t | x_0)     = N(√ᾱ_t x_0, (1-ᾱ_t) I)                              :func:`q_sample`, :func:`q_mean_variance`
  (3.5) μ̃_t(x_t, x_0)   = √α_t(1-ᾱ_{t-1})/(1-ᾱ_t) x_t + √ᾱ_{t-1}β_t/(1-ᾱ_t) x_0  :func:`q_posterior`
  (3.6) β̃_t             = (1-ᾱ_{t-1})/(1-ᾱ_t) β_t                             :func:`q_posterior`
  (3.7) μ_θ(x_t, t)      = (x_t - β_t/√(1-ᾱ_t) ε_θ(x_t, t)) / √α_t            :func:`mean_from_eps`, :func:`p_mean_variance`
  (4.9) L_simple         = E ||ε - ε_θ(√ᾱ_t x_0 + √(1-ᾱ_t) ε, t)||²            :func:`loss_simple`
"""
from __future__ import annotations

import torch

from . import checks
from .schedules import NoiseSchedule, check_schedule

__all__ = [
    "q_step", "q_mean_variance", "q_sample", "q_posterior", "predict_x0_from_eps", "predict_eps_from_x0",
    "mean_from_eps", "p_mean_variance", "loss_simple", "VARIANCES", "check_model_output", "call_model",
    "model_variance", "check_variance",
]

VARIANCES = ("beta", "beta_tilde")
# σ_t² of the reverse step and its log, by name (schedule coefficients, see NoiseSchedule.table)
_VARIANCE_TABLES = {"beta": ("betas", "log_betas"),
                    "beta_tilde": ("posterior_variance_clipped", "log_posterior_variance_clipped")}


def check_variance(variance) -> str:
    """``variance`` if it is one of :data:`VARIANCES`, else an :class:`~.errors.UnknownNameError`."""
    return checks.choice(variance, VARIANCES,
                         f"variance must be one of {VARIANCES}, got {variance!r} (σ_t² = β_t or β̃_t)")


def _boundary(schedule, x, t):
    """The checks every public function here starts with: a schedule, and t as a LongTensor (B,) on x's device."""
    check_schedule(schedule)
    return checks.timesteps(t, schedule.T, x.shape[0], device=x.device)


def _noise_like(x, noise, generator=None):
    if noise is None:
        # draw on the generator's device (a CPU generator may serve CUDA data), then move to x's device
        device = generator.device if generator is not None else x.device
        return torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)
    checks.same_shape(noise, x, "noise", "x")
    return noise


def q_step(schedule: NoiseSchedule, x_prev: torch.Tensor, t, noise=None, *, generator=None) -> torch.Tensor:
    """One Markov step of the forward process, eq. (2.1): x_t = √(1-β_t) x_{t-1} + √β_t ε.

    With code index t this maps x at paper step t to paper step t+1 using ``betas[t]``.
    """
    t = _boundary(schedule, x_prev, t)
    noise = _noise_like(x_prev, noise, generator)
    beta = schedule.extract("betas", t, x_prev)
    return (1 - beta).sqrt() * x_prev + beta.sqrt() * noise


def q_mean_variance(schedule: NoiseSchedule, x0: torch.Tensor, t):
    """Mean and variance of q(x_t | x_0), eq. (2.4): (√ᾱ_t x_0, (1-ᾱ_t) I)."""
    t = _boundary(schedule, x0, t)
    mean = schedule.extract("sqrt_alpha_bars", t, x0) * x0
    var = schedule.extract("one_minus_alpha_bars", t, x0).expand_as(x0)
    return mean, var


def _q_sample(schedule, x0, t, noise):
    return schedule.extract("sqrt_alpha_bars", t, x0) * x0 + schedule.extract("sqrt_one_minus_alpha_bars", t, x0) * noise


def q_sample(schedule: NoiseSchedule, x0: torch.Tensor, t, noise=None, *, generator=None) -> torch.Tensor:
    """Sample x_t ~ q(x_t | x_0) in one shot, eq. (2.4): x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε."""
    t = _boundary(schedule, x0, t)
    noise = _noise_like(x0, noise, generator)
    return _q_sample(schedule, x0, t, noise)


def _q_posterior_mean(schedule, x0, x_t, t):
    return schedule.extract("posterior_mean_coef_x0", t, x_t) * x0 + schedule.extract("posterior_mean_coef_xt", t, x_t) * x_t


def q_posterior(schedule: NoiseSchedule, x0: torch.Tensor, x_t: torch.Tensor, t):
    """Mean and variance of the forward posterior q(x_{t-1} | x_t, x_0), eqs. (3.5)–(3.6).

    Returns ``(mean, variance)``, both of x_t's shape. At code index 0 the variance is exactly 0:
    x_0 is known, so the posterior is a point mass at x_0.
    """
    check_schedule(schedule)
    checks.same_shape(x0, x_t, "x0", "x_t")
    t = _boundary(schedule, x_t, t)
    mean = _q_posterior_mean(schedule, x0, x_t, t)
    var = schedule.extract("posterior_variance", t, x_t).expand_as(x_t)
    return mean, var


def _predict_x0(schedule, x_t, t, eps):
    return (x_t - schedule.extract("sqrt_one_minus_alpha_bars", t, x_t) * eps) / schedule.extract("sqrt_alpha_bars", t, x_t)


def _predict_eps(schedule, x_t, t, x0):
    return (x_t - schedule.extract("sqrt_alpha_bars", t, x_t) * x0) / schedule.extract("sqrt_one_minus_alpha_bars", t, x_t)


def _mean_from_eps(schedule, x_t, t, eps):
    return (x_t - schedule.extract("eps_coef", t, x_t) * eps) / schedule.extract("sqrt_alphas", t, x_t)


def predict_x0_from_eps(schedule: NoiseSchedule, x_t: torch.Tensor, t, eps: torch.Tensor) -> torch.Tensor:
    """Invert eq. (2.4) for x_0: x̂_0 = (x_t - √(1-ᾱ_t) ε) / √ᾱ_t."""
    check_schedule(schedule)
    checks.same_shape(eps, x_t, "eps", "x_t")
    return _predict_x0(schedule, x_t, _boundary(schedule, x_t, t), eps)


def predict_eps_from_x0(schedule: NoiseSchedule, x_t: torch.Tensor, t, x0: torch.Tensor) -> torch.Tensor:
    """Invert eq. (2.4) for ε: ε = (x_t - √ᾱ_t x_0) / √(1-ᾱ_t)."""
    check_schedule(schedule)
    checks.same_shape(x0, x_t, "x0", "x_t")
    return _predict_eps(schedule, x_t, _boundary(schedule, x_t, t), x0)


def mean_from_eps(schedule: NoiseSchedule, x_t: torch.Tensor, t, eps: torch.Tensor) -> torch.Tensor:
    """The seed's second form of the posterior mean, eq. (3.7): (x_t - β_t/√(1-ᾱ_t) ε) / √α_t.

    Exact for the true ε that produced x_t from x_0; with ε_θ it is μ_θ.
    """
    check_schedule(schedule)
    checks.same_shape(eps, x_t, "eps", "x_t")
    return _mean_from_eps(schedule, x_t, _boundary(schedule, x_t, t), eps)


def check_model_output(eps, x_t):
    """``eps`` if it is a tensor of x_t's shape (what every denoiser must return); shapes only, no host sync."""
    if not isinstance(eps, torch.Tensor):
        raise TypeError(f"the model must return a tensor ε of x_t's shape, got {type(eps).__name__}")
    if eps.shape != x_t.shape:
        raise ValueError(f"the model must return ε of x_t's shape {tuple(x_t.shape)}, got {tuple(eps.shape)}")
    return eps


def call_model(model, x_t, t, y=None):
    """Call ``model(x_t, t, y=y)`` (or ``model(x_t, t)`` when y is None) and check its output."""
    eps = model(x_t, t) if y is None else model(x_t, t, y=y)
    return check_model_output(eps, x_t)


def model_variance(schedule: NoiseSchedule, variance: str = "beta") -> torch.Tensor:
    """σ_t² of the reverse step: ``"beta"`` → β_t (the seed's choice), ``"beta_tilde"`` → β̃_t, with β̃ at
    index 0 replaced by β̃ at index 1 (β̃_1 = 0 would make the decoder a point mass)."""
    return getattr(schedule, _VARIANCE_TABLES[check_variance(variance)][0])


def _p_mean_variance(schedule, x_t, t, eps, variance, clip_x0) -> dict:
    """The body of :func:`p_mean_variance` on checked inputs (t a LongTensor (B,) on x_t's device, ε given)."""
    # 1. x̂_0 from ε, inverting (2.4)
    pred_x0 = _predict_x0(schedule, x_t, t, eps)
    if clip_x0 is not None:
        # 2a. clamp x̂_0 to the data range, re-derive ε from it, and take the posterior mean (3.5) at x̂_0
        pred_x0 = pred_x0.clamp(*clip_x0)
        eps = _predict_eps(schedule, x_t, t, pred_x0)
        mean = _q_posterior_mean(schedule, pred_x0, x_t, t)
    else:
        # 2b. the seed's mean (3.7), equal to the posterior mean (3.5) at the unclamped x̂_0
        mean = _mean_from_eps(schedule, x_t, t, eps)
    # 3. σ_t² and log σ_t², from the schedule's tables
    var_name, log_var_name = _VARIANCE_TABLES[variance]
    var = schedule.extract(var_name, t, x_t).expand_as(x_t)
    log_var = schedule.extract(log_var_name, t, x_t).expand_as(x_t)
    return {"mean": mean, "variance": var, "log_variance": log_var, "pred_x0": pred_x0, "eps": eps}


def p_mean_variance(model, schedule: NoiseSchedule, x_t: torch.Tensor, t, *, y=None, variance: str = "beta",
                    clip_x0: tuple[float, float] | None = None, eps: torch.Tensor | None = None) -> dict:
    """Mean and variance of the learned reverse step p_θ(x_{t-1} | x_t) for an ε-model, eqs. (3.1) and (3.7).

    Without clipping the mean is the seed's form (3.7), which equals q_posterior's mean at x̂_0.
    With ``clip_x0=(lo, hi)`` the predicted x̂_0 is clamped to the data range, the mean is the
    posterior mean (3.5) at the clamped x̂_0, and ε is re-derived from it so all three agree.

    Returns a dict with ``mean``, ``variance``, ``log_variance``, ``pred_x0`` and ``eps``.
    ``eps`` may be passed in (already computed, e.g. by a guidance rule) to skip the model call.
    """
    t = _boundary(schedule, x_t, t)
    check_variance(variance)
    clip_x0 = checks.clip_range(clip_x0)
    if eps is None:
        eps = call_model(model, x_t, t, y)
    else:
        check_model_output(eps, x_t)
    return _p_mean_variance(schedule, x_t, t, eps, variance, clip_x0)


def loss_simple(model, schedule: NoiseSchedule, x0: torch.Tensor, t=None, *, y=None, noise=None, generator=None,
                reduction: str = "mean") -> torch.Tensor:
    """L_simple, eq. (4.9): mean squared error between the true noise ε and ε_θ(x_t, t).

    ``t`` defaults to uniform draws from {0, …, T-1}. The squared error is averaged over the data
    dimensions (DDPM's implementation) — the seed's ``torch.norm(...)**2`` sums over every element of
    the batch instead, which only rescales the loss by B·D. ``reduction="none"`` returns one value per item.
    """
    check_schedule(schedule)
    checks.choice(reduction, ("mean", "none"), f"reduction must be 'mean' or 'none', got {reduction!r}")
    B = x0.shape[0]
    if t is None:
        t = torch.randint(0, schedule.T, (B,), generator=generator, device="cpu").to(x0.device)
    else:
        t = _boundary(schedule, x0, t)
    noise = _noise_like(x0, noise, generator)
    x_t = _q_sample(schedule, x0, t, noise)
    eps = call_model(model, x_t, t, y)
    per_item = (noise - eps).pow(2).reshape(B, -1).mean(1)
    return per_item.mean() if reduction == "mean" else per_item
