"""Samplers: DDPM ancestral sampling and DDIM (book chapter 6), DPM-Solver++(2M) (chapter 9), with optional
guidance (chapters 7–8).

Everything here is stateless over a schedule and a callable ``model(x_t, t, y=None) -> ε``; ``t`` is a
LongTensor of code indices (code index t ↔ paper step t+1, see :mod:`diffusion_lab.schedules`).

Book equations:

  (3.7) μ_θ(x_t, t) = (x_t − β_t/√(1−ᾱ_t) · ε_θ(x_t, t)) / √α_t
  (6.1) x_{t−1} = μ_θ(x_t, t) + σ_t z,  z ~ N(0, I),  σ_t² = β_t or β̃_t,  no noise at the last step
  DDIM (Song et al. 2021, eq. 12), on a sub-sequence τ_1 < … < τ_S of code indices:
        x_{τ_{i−1}} = √ᾱ_{τ_{i−1}} x̂_0 + √(1 − ᾱ_{τ_{i−1}} − σ_i²) · ε_θ(x_{τ_i}, τ_i) + σ_i z
        σ_i = η · √((1 − ᾱ_{τ_{i−1}}) / (1 − ᾱ_{τ_i})) · √(1 − ᾱ_{τ_i} / ᾱ_{τ_{i−1}}),  ᾱ_{τ_0} := 1

  DPM-Solver++(2M) (Lu et al. 2022), in λ = log(√ᾱ/√(1−ᾱ)) with α = √ᾱ, σ = √(1−ᾱ), h_i = λ_{i−1} − λ_i:
        x_{τ_{i−1}} = (σ_{i−1}/σ_i) x_{τ_i} + α_{i−1} (1 − e^{−h_i}) D_i,
        D_i = (1 + 1/(2r_i)) x̂_0(τ_i) − 1/(2r_i) x̂_0(τ_{i+1}),  r_i = h_{i+1}/h_i  (D_i = x̂_0(τ_i): first order = DDIM)

The seed's sampling pseudo-code has 1/√ᾱ_t where eq. (3.7) has 1/√α_t, loops the paper's t from T to 1
while indexing 0-based arrays, and adds noise at the last step; :func:`p_sample` is the corrected update.

Each public function checks its inputs once (:mod:`diffusion_lab.checks`); the per-step functions
(:func:`_p_sample_step`, :func:`_ddim_step`) trust them and never read a value back from the device: the
coefficients come from per-device tables made before the loop, and "is this the last step" is the Python loop
index, not a tensor. The loops run the network inside :func:`diffusion_lab.checks.trusted`, so its own value
checks (a host sync each) are skipped too; the labels were checked against its number of classes up front.

All loops run under ``torch.no_grad()`` (classifier guidance opens its own ``enable_grad`` block for its
gradient); trajectories are sub-sampled and stored on the CPU, so memory stays flat over the steps.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from . import checks
from .checkpoint import LoadedModel
from .diffusion import call_model, check_variance, p_mean_variance
from .errors import unknown_name
from .guidance import Guidance, check_labels
from .models import device_of
from .schedules import NoiseSchedule, check_schedule

__all__ = ["p_sample", "ddpm_sample", "ddim_timesteps", "ddim_step", "ddim_sample", "ddim_invert",
           "DPM_SPACINGS", "dpm_solver_timesteps", "dpm_solver_coefficients", "dpm_solver_sample", "Trajectory", "SAMPLERS", "sample_batches"]

DEFAULT_TRAJECTORY_FRAMES = 20


# ----------------------------------------------------------------------------- helpers
@dataclass
class Trajectory:
    """Frames of a sampling run, oldest (x_T) first, kept on the CPU.

    ``steps``   paper step of each frame in the order visited: descending to 0 (the final sample x_0) for the
                samplers, ascending from 0 for :func:`ddim_invert`;
    ``x``       tensor (K, B, …): x at each of those steps;
    ``pred_x0`` tensor (K, B, …): the model's x̂_0 predicted from that frame (the last one is x_0 itself;
                for an inversion, the x_0 it started from).

    Iterating gives ``(paper_step, x)`` pairs; ``len`` is the number of frames K.
    """

    steps: list
    x: torch.Tensor
    pred_x0: torch.Tensor

    def __len__(self):
        return len(self.steps)

    def __iter__(self):
        return iter(zip(self.steps, self.x))

    def __getitem__(self, k):
        return self.steps[k], self.x[k]


def _check_every(every, n_steps):
    if every is None:
        return max(1, math.ceil(n_steps / DEFAULT_TRAJECTORY_FRAMES))
    if isinstance(every, bool) or not isinstance(every, numbers.Integral) or every < 1:
        raise ValueError(f"trajectory_every must be a positive int (keep every k-th step), got {every!r}")
    return int(every)


class _Recorder:
    """Collects frames every ``every`` sampling steps (plus the first and the last) on the CPU. (Recording copies
    a frame to the host: the one sync a sampling loop makes, and only when a trajectory is asked for.)"""

    def __init__(self, enabled, n_steps, every):
        self.enabled = enabled
        self.every, self.steps, self.xs, self.x0s = _check_every(every, n_steps), [], [], []

    def __call__(self, i, paper_step, x, pred_x0):
        if self.enabled and i % self.every == 0:
            self.steps.append(int(paper_step))
            self.xs.append(x.detach().to("cpu", copy=True))
            self.x0s.append(pred_x0.detach().to("cpu", copy=True))

    def finish(self, x0):
        x0 = x0.detach().to("cpu", copy=True)
        self.steps.append(0)
        self.xs.append(x0)
        self.x0s.append(x0)
        return Trajectory(self.steps, torch.stack(self.xs), torch.stack(self.x0s))


def _boundary(model, schedule, y, guidance, clip_x0=None):
    """The one boundary check of the public samplers: the model (a
    :class:`~diffusion_lab.checkpoint.LoadedModel` stands for its ε-model, and for its schedule when ``schedule``
    is None), the schedule, the guidance rule against ``y``, the clip range. Returns them checked."""
    if isinstance(model, LoadedModel):
        schedule = model.schedule if schedule is None else schedule
        model = model.model
    check_schedule(schedule)
    return model, schedule, _check_guidance(guidance, y), checks.clip_range(clip_x0)


def _check_guidance(guidance, y):
    if guidance is None:
        return None
    missing = [m for m in ("eps", "adjust_mean", "adjust_eps") if not callable(getattr(guidance, m, None))]
    if missing:
        raise TypeError(f"guidance must be a diffusion_lab.guidance.Guidance (e.g. ClassifierFreeGuidance(w) or "
                        f"ClassifierGuidance(classifier, scale)); {type(guidance).__name__} lacks {missing}")
    if y is None and getattr(guidance, "needs_labels", True):
        raise ValueError(f"{type(guidance).__name__} needs target labels: pass y=<LongTensor of shape (B,)> "
                         "(or an int for the whole batch), or guidance=None for unconditional sampling")
    return guidance


def _check_shape(shape, x_T):
    if shape is None:
        if x_T is None:
            raise ValueError("pass shape=(B, ...) (e.g. (16, 1, 8, 8)) or a starting noise x_T")
        return tuple(x_T.shape)
    if isinstance(shape, torch.Size):
        shape = tuple(shape)
    if not isinstance(shape, (tuple, list)) or len(shape) < 2 or any(
            isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 1 for s in shape):
        raise ValueError(f"shape must be a tuple of positive ints (B, ...) with the batch first, e.g. (16, 1, 8, 8) "
                         f"or (512, 2); got {shape!r}")
    shape = tuple(int(s) for s in shape)
    if x_T is not None and tuple(x_T.shape) != shape:
        raise ValueError(f"x_T has shape {tuple(x_T.shape)} but shape={shape}; pass shape=None to use x_T's shape")
    return shape


def _check_steps(steps, T):
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral):
        raise TypeError(f"steps must be an int in [1, T] = [1, {T}], got {steps!r}")
    if not 1 <= steps <= T:
        raise ValueError(f"steps must lie in [1, T] = [1, {T}] (the number of sampling steps), got steps={steps}")
    return int(steps)


def _check_eta(eta):
    return checks.real_number(eta, "eta", 0.0, 1.0, " (0 = deterministic DDIM, 1 = DDPM-like noise)")


def _resolve_device(device, model, x_T):
    if device is not None:
        return torch.device(device)
    if x_T is not None:
        return x_T.device
    return device_of(model)


def _randn(shape, generator, device, dtype=torch.float32):
    """Standard normal noise. With a generator the draw happens on the generator's device, then moves, so a
    CPU generator gives the same numbers whatever device the sampler runs on."""
    if generator is None:
        return torch.randn(shape, device=device, dtype=dtype)
    return torch.randn(shape, generator=generator, device=generator.device, dtype=dtype).to(device)


def _start_noise(shape, x_T, generator, device):
    if x_T is None:
        return _randn(shape, generator, device)
    checks.float_batch(x_T, "x_T")
    return x_T.to(device)


def _labels(y, batch, device, model, guidance):
    """The boundary check of the labels, once per sampling call, by the rule that will use them."""
    if y is None:
        return None
    check = getattr(guidance, "check_labels", None) if guidance is not None else _PLAIN.check_labels
    y = check(y, batch, model) if check is not None else check_labels(y, batch)
    return y.to(device)


_PLAIN = Guidance()


def _bcast(values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(B,) or (1,) float64 coefficients → (B, 1, …, 1) in x's dtype and device."""
    return values.to(device=x.device, dtype=x.dtype).reshape((-1,) + (1,) * (x.dim() - 1))


def _guided_eps(model, x_t, t, y, guidance, t_index=None):
    if guidance is None:
        return call_model(model, x_t, t, y)
    step_eps = getattr(guidance, "step_eps", None)
    if t_index is not None and step_eps is not None:
        return step_eps(model, x_t, t, y, t_index)
    return guidance.eps(model, x_t, t, y)


# ----------------------------------------------------------------------------- DDPM
def _p_sample_step(model, schedule, x_t, t, *, t_index, y, noise, variance, guidance, clip_x0, generator,
                   noise_mask=None):
    """One step of eq. (6.1) on checked inputs. ``t_index`` is the code step when every item is at the same one
    (a Python int), else None; ``noise_mask`` (x_t-broadcastable, 1 = noise, 0 = none) is for mixed steps."""
    # 1. ε̃ = ε_θ(x_t, t[, y]), or the guidance rule's ε (CFG, eq. 8.1)
    eps = _guided_eps(model, x_t, t, y, guidance, t_index)
    # 2. x̂_0, μ_θ (3.7) and σ_t² — or μ̃ (3.5) at the clamped x̂_0 with clip_x0 (called inside checks.trusted():
    #    its checks are then the free ones, types and shapes)
    out = p_mean_variance(model, schedule, x_t, t, variance=variance, clip_x0=clip_x0, eps=eps)
    mean = out["mean"]
    # 3. classifier guidance shifts the mean, eq. (7.1)
    if guidance is not None:
        mean = guidance.adjust_mean(mean, out["variance"], x_t, t, y)
    # 4. the last step (code index 0, paper step 1) adds no noise: decided from the loop index, not a tensor
    if t_index == 0:
        return mean, out
    # 5. x_{t−1} = μ + σ_t z, eq. (6.1)
    if noise is None:
        noise = _randn(x_t.shape, generator, x_t.device, x_t.dtype)
    if noise_mask is not None:
        return mean + noise_mask * out["variance"].sqrt() * noise, out
    return mean + out["variance"].sqrt() * noise, out


def p_sample(model, schedule: NoiseSchedule, x_t: torch.Tensor, t, *, y=None, noise=None, variance: str = "beta",
             guidance=None, clip_x0: tuple[float, float] | None = None, generator=None) -> torch.Tensor:
    """One ancestral DDPM step x_t → x_{t−1}, book eq. (6.1) with the mean of eq. (3.7):

        x_{t−1} = (x_t − β_t/√(1−ᾱ_t) · ε_θ(x_t, t)) / √α_t + σ_t z,   z ~ N(0, I)

    ``t`` is the code index (an int or a LongTensor of shape (B,)); ``variance`` picks σ_t² = β_t (``"beta"``,
    the seed's choice) or β̃_t (``"beta_tilde"``). Items at code index 0 (paper step 1) get no noise: their
    output is the mean. ``noise`` fixes z (x_t's shape); otherwise it is drawn from ``generator``.

    By default this is the seed's update exactly. ``clip_x0=(lo, hi)`` opts in to clamping x̂_0 to the data
    range; the mean is then the posterior mean (3.5) at the clamped x̂_0 and ε is re-derived from it
    (:func:`diffusion_lab.diffusion.p_mean_variance`).

    ``guidance`` (see :mod:`diffusion_lab.guidance`) decides how ``y`` is used; without guidance ``y`` goes to
    the model as it is.
    """
    model, schedule, guidance, clip_x0 = _boundary(model, schedule, y, guidance, clip_x0)
    checks.float_batch(x_t)
    check_variance(variance)
    B = x_t.shape[0]
    t = checks.timesteps(t, schedule.T, B, device=x_t.device)
    if noise is not None:
        checks.same_shape(noise, x_t, "noise", "x_t")
    y = _labels(y, B, x_t.device, model, guidance)
    # The items' steps decide, here at the boundary: one step shared by all, or a per-item noise mask.
    steps = t.unique().tolist()
    t_index, mask = (steps[0], None) if len(steps) == 1 else (None, _bcast((t != 0).double(), x_t))
    with checks.trusted():
        x_prev, _ = _p_sample_step(model, schedule, x_t, t, t_index=t_index, y=y, noise=noise, variance=variance,
                                   guidance=guidance, clip_x0=clip_x0, generator=generator, noise_mask=mask)
    return x_prev


def ddpm_sample(model, schedule: NoiseSchedule, shape, *, y=None, guidance=None, variance: str = "beta",
                generator: torch.Generator | None = None, return_trajectory: bool = False,
                trajectory_every: int | None = None, progress: bool = True, device=None,
                clip_x0: tuple[float, float] | None = None, x_T: torch.Tensor | None = None):
    """DDPM ancestral sampling (Ho et al. 2020, Algorithm 2): x_T ~ N(0, I), then T steps of eq. (6.1) down to x_0.

    ``shape`` is (B, …) (``None`` when ``x_T`` is given); ``x_T`` fixes the starting noise. ``generator`` seeds
    every draw (x_T and each z), so a seeded run is reproducible. ``device`` defaults to x_T's, else the model's.
    ``y`` are the target labels (an int or LongTensor (B,)); see :func:`p_sample` for ``variance``, ``guidance``
    and ``clip_x0``.

    Returns x_0, or ``(x_0, trajectory)`` with ``return_trajectory=True``: a :class:`Trajectory` holding x_T and
    every ``trajectory_every``-th step after it (default: about 20 frames) plus x_0, on the CPU.
    """
    model, schedule, guidance, clip_x0 = _boundary(model, schedule, y, guidance, clip_x0)
    check_variance(variance)
    shape = _check_shape(shape, x_T)
    device = _resolve_device(device, model, x_T)
    T, B = schedule.T, shape[0]
    rec = _Recorder(return_trajectory, T, trajectory_every)
    y = _labels(y, B, device, model, guidance)
    with torch.no_grad(), checks.trusted():
        x = _start_noise(shape, x_T, generator, device)
        # Algorithm 2: for t = T, …, 1 (code index T−1 … 0)
        for i, idx in enumerate(tqdm(range(T - 1, -1, -1), desc="DDPM sampling", disable=not progress, leave=False)):
            t = torch.full((B,), idx, dtype=torch.long, device=device)
            x_new, out = _p_sample_step(model, schedule, x, t, t_index=idx, y=y, noise=None, variance=variance,
                                        guidance=guidance, clip_x0=clip_x0, generator=generator)
            rec(i, idx + 1, x, out["pred_x0"])
            x = x_new
    return (x, rec.finish(x)) if return_trajectory else x


# ----------------------------------------------------------------------------- DDIM
def ddim_timesteps(T: int, steps: int) -> torch.Tensor:
    """The DDIM sub-sequence τ_1 < … < τ_S of code indices: ``steps`` indices evenly spaced over [0, T−1],
    always including T−1 (the start, x_T) and, for steps ≥ 2, 0 (the last model call, at paper step 1).

    With steps = T it is every index, and DDIM with η = 1 is then DDPM with σ_t² = β̃_t.
    """
    steps = _check_steps(steps, T)
    if steps == 1:
        return torch.tensor([T - 1], dtype=torch.long)
    # spacing (T−1)/(S−1) ≥ 1, so rounding half up keeps the indices distinct
    return torch.floor(torch.linspace(0, T - 1, steps, dtype=torch.float64) + 0.5).long()


def _alpha_bar_ext(schedule):
    """ᾱ with a leading 1: index k+1 holds ᾱ at code index k, index 0 holds ᾱ = 1 ("before step 1")."""
    return torch.cat([torch.ones(1, dtype=torch.float64), schedule.alpha_bars])


def _ddim_coefficients(schedule, t, t_prev, eta: float) -> dict:
    """The float64 coefficients of DDIM steps τ = ``t`` → τ' = ``t_prev`` (code indices; −1 means x_0), one per
    entry of ``t`` (per item of a batch, or per step of a run), all on the CPU:

        ᾱ = ᾱ_τ,  ᾱ' = ᾱ_τ'  (1 before the first step),  σ = η √((1−ᾱ')/(1−ᾱ)) √(1 − ᾱ/ᾱ'),  c = √(1 − ᾱ' − σ²)
    """
    ab_ext = _alpha_bar_ext(schedule)
    a_t = ab_ext[t + 1]                 # ᾱ at τ_i  (not ᾱ_prev: the classic pitfall)
    a_prev = ab_ext[t_prev + 1]         # ᾱ at τ_{i−1} of the sub-sequence, 1 before the first step
    sigma = eta * ((1 - a_prev) / (1 - a_t)).sqrt() * (1 - a_t / a_prev).clamp(min=0).sqrt()
    return {"sqrt_one_minus_a_t": (1 - a_t).sqrt(), "sqrt_a_t": a_t.sqrt(), "sqrt_a_prev": a_prev.sqrt(),
            "dir_coef": (1 - a_prev - sigma ** 2).clamp(min=0).sqrt(), "sigma": sigma}


def _ddim_step(model, schedule, x_t, t, coef, *, t_index, add_noise, y, guidance, noise, clip_x0, generator):
    """One DDIM step on checked inputs: ``coef`` holds the step's coefficients, already on x_t's device and in its
    dtype, shaped to broadcast; ``add_noise`` (a Python bool) says whether σ > 0 here."""
    # 1. ε̃ = ε_θ(x_τ, τ) after guidance (CFG eq. 8.1, or classifier guidance eq. 7.2)
    eps = _guided_eps(model, x_t, t, y, guidance, t_index)
    if guidance is not None:
        eps = guidance.adjust_eps(eps, schedule, x_t, t, y)
    # 2. x̂_0 = (x_τ − √(1−ᾱ_τ) ε̃) / √ᾱ_τ, the "predicted x_0" of DDIM eq. 12
    pred_x0 = (x_t - coef["sqrt_one_minus_a_t"] * eps) / coef["sqrt_a_t"]
    if clip_x0 is not None:
        # 2a. opt-in: clamp x̂_0 to the data range and re-derive ε̃ from it
        pred_x0 = pred_x0.clamp(*clip_x0)
        eps = (x_t - coef["sqrt_a_t"] * pred_x0) / coef["sqrt_one_minus_a_t"]
    # 3. x_τ' = √ᾱ_τ' x̂_0 + √(1 − ᾱ_τ' − σ²) ε̃ ("direction pointing to x_t") …
    x_prev = coef["sqrt_a_prev"] * pred_x0 + coef["dir_coef"] * eps
    # 4. … + σ z, only where σ > 0 (η > 0 and not the last step)
    if add_noise:
        if noise is None:
            noise = _randn(x_t.shape, generator, x_t.device, x_t.dtype)
        x_prev = x_prev + coef["sigma"] * noise
    return x_prev, pred_x0


def ddim_step(model, schedule: NoiseSchedule, x_t: torch.Tensor, t, t_prev, *, eta: float = 0.0, y=None,
              guidance=None, noise=None, clip_x0: tuple[float, float] | None = None, generator=None) -> torch.Tensor:
    """One DDIM step from code index ``t`` to code index ``t_prev`` < t (``-1`` means "to x_0", ᾱ = 1)
    (Song et al. 2021, eq. 12; book chapter 6):

        x̂_0 = (x_t − √(1−ᾱ_t) ε̃) / √ᾱ_t,   x_prev = √ᾱ_prev x̂_0 + √(1 − ᾱ_prev − σ²) ε̃ + σ z

    with σ = η √((1−ᾱ_prev)/(1−ᾱ_t)) √(1 − ᾱ_t/ᾱ_prev), ᾱ_prev = ᾱ at ``t_prev`` (of the sub-sequence, not
    the schedule's ᾱ_{t−1}). ε̃ is ε_θ after guidance (CFG eq. 8.1 or classifier guidance eq. 7.2).
    """
    model, schedule, guidance, clip_x0 = _boundary(model, schedule, y, guidance, clip_x0)
    checks.float_batch(x_t)
    eta = _check_eta(eta)
    if noise is not None:
        checks.same_shape(noise, x_t, "noise", "x_t")
    B = x_t.shape[0]
    t = checks.timesteps(t, schedule.T, B).cpu()
    if isinstance(t_prev, numbers.Integral) and not isinstance(t_prev, bool):
        t_prev = torch.full((B,), int(t_prev), dtype=torch.long)
    elif not isinstance(t_prev, torch.Tensor):
        raise TypeError(f"t_prev must be an int or a LongTensor of shape (B,), got {type(t_prev).__name__}")
    t_prev = t_prev.long().reshape(-1).expand(B).cpu()
    if bool((t_prev >= t).any()) or bool((t_prev < -1).any()):
        raise ValueError("t_prev must satisfy -1 <= t_prev < t (code indices; -1 means the final x_0)")
    c = _ddim_coefficients(schedule, t, t_prev, eta)
    add_noise = eta > 0 and bool((c["sigma"] > 0).any())
    coef = {k: _bcast(v, x_t) for k, v in c.items()}
    steps = t.unique().tolist()
    y = _labels(y, B, x_t.device, model, guidance)
    with torch.no_grad(), checks.trusted():
        x_prev, _ = _ddim_step(model, schedule, x_t, t.to(x_t.device), coef, t_index=steps[0] if len(steps) == 1
                               else None, add_noise=add_noise, y=y, guidance=guidance, noise=noise, clip_x0=clip_x0,
                               generator=generator)
    return x_prev


def ddim_sample(model, schedule: NoiseSchedule, shape, *, steps: int = 50, eta: float = 0.0, y=None, guidance=None,
                generator: torch.Generator | None = None, return_trajectory: bool = False,
                trajectory_every: int | None = None, progress: bool = True, device=None,
                clip_x0: tuple[float, float] | None = None, x_T: torch.Tensor | None = None):
    """DDIM sampling (Song et al. 2021) in ``steps`` model calls over the sub-sequence :func:`ddim_timesteps`.

    ``eta = 0`` is the deterministic sampler (an ODE discretisation: the same x_T always gives the same x_0);
    ``eta = 1`` with ``steps = T`` is DDPM with σ_t² = β̃_t. Arguments as in :func:`ddpm_sample`; the
    trajectory's steps are the paper steps τ_i + 1 of the frames kept, then 0.
    """
    model, schedule, guidance, clip_x0 = _boundary(model, schedule, y, guidance, clip_x0)
    steps = _check_steps(steps, schedule.T)
    eta = _check_eta(eta)
    shape = _check_shape(shape, x_T)
    device = _resolve_device(device, model, x_T)
    taus = ddim_timesteps(schedule.T, steps)
    prevs = torch.cat([torch.tensor([-1]), taus[:-1]])
    rec = _Recorder(return_trajectory, steps, trajectory_every)
    B = shape[0]
    y = _labels(y, B, device, model, guidance)
    # Every coefficient of every step, computed once in float64 on the CPU, then moved to the device (one copy)
    c = _ddim_coefficients(schedule, taus, prevs, eta)
    add_noise = [eta > 0 and s > 0 for s in c["sigma"].tolist()]
    tau_list = taus.tolist()
    with torch.no_grad(), checks.trusted():
        x = _start_noise(shape, x_T, generator, device)
        tables = {k: v.to(device=device, dtype=x.dtype) for k, v in c.items()}
        bshape = (1,) + (1,) * (len(shape) - 1)
        for i in tqdm(range(steps - 1, -1, -1), desc="DDIM sampling", disable=not progress, leave=False):
            tau = tau_list[i]
            t = torch.full((B,), tau, dtype=torch.long, device=device)
            coef = {k: v[i:i + 1].reshape(bshape) for k, v in tables.items()}
            x_new, pred_x0 = _ddim_step(model, schedule, x, t, coef, t_index=tau, add_noise=add_noise[i], y=y,
                                        guidance=guidance, noise=None, clip_x0=clip_x0, generator=generator)
            rec(steps - 1 - i, tau + 1, x, pred_x0)
            x = x_new
    return (x, rec.finish(x)) if return_trajectory else x


def ddim_invert(model, schedule: NoiseSchedule, x0: torch.Tensor, *, steps: int = 50, y=None, guidance=None,
                progress: bool = False, return_trajectory: bool = False, trajectory_every: int | None = None):
    """DDIM inversion: run the η = 0 update forward, x_0 → x_T, over the same sub-sequence as
    :func:`ddim_sample` with the same ``steps``, so ``ddim_sample(..., x_T=ddim_invert(x0))`` ≈ x0.

    Step τ_{i−1} → τ_i:  x̂_0 = (x − √(1−ᾱ_{τ_{i−1}}) ε) / √ᾱ_{τ_{i−1}},  x ← √ᾱ_{τ_i} x̂_0 + √(1−ᾱ_{τ_i}) ε,
    with ε = ε_θ(x, τ_i) evaluated at the current x and the target step (diffusers' DDIMInverseScheduler):
    the sampler uses ε_θ(x_{τ_i}, τ_i), which is not known yet, so the round trip is exact only as the steps
    shrink. Returns x_T, or ``(x_T, trajectory)`` whose frames go from x_0 upward (steps ascending).
    """
    model, schedule, guidance, _ = _boundary(model, schedule, y, guidance)
    checks.float_batch(x0, "x0")
    steps = _check_steps(steps, schedule.T)
    every = _check_every(trajectory_every, steps)
    B, device = x0.shape[0], x0.device
    tau_list = ddim_timesteps(schedule.T, steps).tolist()
    ab_ext = _alpha_bar_ext(schedule)
    # the step's coefficients as Python floats, on the host, before the loop
    sqrt_ab = ab_ext.sqrt().tolist()
    sqrt_1m_ab = (1 - ab_ext).sqrt().tolist()
    frames_steps, frames = [0], [x0.detach().to("cpu", copy=True)]
    y = _labels(y, B, device, model, guidance)
    with torch.no_grad(), checks.trusted():
        x, prev = x0, -1
        for i in tqdm(range(steps), desc="DDIM inversion", disable=not progress, leave=False):
            tau = tau_list[i]
            t = torch.full((B,), tau, dtype=torch.long, device=device)
            # 1. ε = ε_θ(x, τ_i) (after guidance), at the target step
            eps = _guided_eps(model, x, t, y, guidance, tau)
            if guidance is not None:
                eps = guidance.adjust_eps(eps, schedule, x, t, y)
            # 2. x̂_0 from the current step τ_{i−1}, 3. re-noised to τ_i along ε
            pred_x0 = (x - sqrt_1m_ab[prev + 1] * eps) / sqrt_ab[prev + 1]
            x = sqrt_ab[tau + 1] * pred_x0 + sqrt_1m_ab[tau + 1] * eps
            prev = tau
            if return_trajectory and ((i + 1) % every == 0 or i == steps - 1):
                frames_steps.append(tau + 1)
                frames.append(x.detach().to("cpu", copy=True))
    if not return_trajectory:
        return x
    xs = torch.stack(frames)
    return x, Trajectory(frames_steps, xs, xs[:1].expand_as(xs).clone())


# ----------------------------------------------------------------------------- DPM-Solver++(2M)
def _check_timesteps_list(timesteps, T):
    """A custom grid of code indices for :func:`dpm_solver_sample`: distinct ints in [0, T−1], returned ascending."""
    t = torch.as_tensor(timesteps)
    if t.dim() != 1 or t.numel() < 1 or t.is_floating_point() or t.dtype == torch.bool:
        raise ValueError(f"timesteps must be a 1-D list of int code indices in [0, T−1] = [0, {T - 1}], got {timesteps!r}")
    t = t.long().sort().values
    if int(t[0]) < 0 or int(t[-1]) > T - 1 or bool((t[1:] == t[:-1]).any()):
        raise ValueError(f"timesteps must be distinct code indices in [0, T−1] = [0, {T - 1}], got {timesteps!r}")
    return t


DPM_SPACINGS = ("logsnr", "quadratic", "time")


def dpm_solver_timesteps(schedule: NoiseSchedule, steps: int, spacing: str = "logsnr") -> torch.Tensor:
    """The ascending grid of ``steps`` code indices for :func:`dpm_solver_sample`, from 0 to T−1.

    ``"logsnr"``     the code indices nearest to S values evenly spaced in λ = log(√ᾱ/√(1−ᾱ)) (the default);
    ``"time"``       :func:`ddim_timesteps`, evenly spaced in t (DDIM's grid);
    ``"quadratic"``  round((T−1)(i/(S−1))²), i = 0…S−1: the "time_quadratic" grid of Lu et al.'s code, dense at low
                     noise where x̂_0 changes fastest.

    Indices that coincide after rounding are merged (only for ``steps`` near T), so the grid may be shorter.
    """
    check_schedule(schedule)
    T = schedule.T
    steps = _check_steps(steps, T)
    if spacing not in DPM_SPACINGS:
        raise unknown_name("spacing", spacing, DPM_SPACINGS)
    if spacing == "time" or steps == 1:
        return ddim_timesteps(T, steps)
    if spacing == "quadratic":
        u = torch.linspace(0, 1, steps, dtype=torch.float64)
        return torch.unique(torch.floor(u ** 2 * (T - 1) + 0.5).long())
    ab = schedule.alpha_bars
    lam = 0.5 * (ab.log() - (1 - ab).log())                             # decreasing in t
    target = torch.linspace(float(lam[-1]), float(lam[0]), steps, dtype=torch.float64)
    return torch.unique((lam[None, :] - target[:, None]).abs().argmin(1))


def dpm_solver_coefficients(schedule: NoiseSchedule, taus: torch.Tensor, order: int = 2) -> dict:
    """The float64 coefficients of every DPM-Solver++ step over the ascending grid ``taus`` (code indices), in
    the order the sampler takes them (from τ_S = the largest down to τ_1, then to x_0):

        ``c_x``  σ_{i−1}/σ_i,  ``c_d``  α_{i−1} (1 − e^{−h_i}),  ``c_prev``  −1/(2 r_i) (0 for a first-order step),

    so that x_{τ_{i−1}} = c_x x_{τ_i} + c_d ((1 − c_prev) x̂_0(τ_i) + c_prev x̂_0(τ_{i+1})). The first step
    (no earlier x̂_0) and the last one (to σ = 0, where h = ∞) are first order, as in diffusers with
    ``final_sigmas_type="zero"``. e^{−h} is written as σ_{i−1} α_i / (α_{i−1} σ_i), which is 0 at the last step.
    """
    ab = schedule.alpha_bars[taus.flip(0)]                              # descending: ᾱ at τ_S, …, τ_1
    ab_next = torch.cat([ab[1:], torch.ones(1, dtype=torch.float64)])    # ᾱ at the target of each step (1 = x_0)
    a, s = ab.sqrt(), (1 - ab).sqrt()
    a_n, s_n = ab_next.sqrt(), (1 - ab_next).sqrt()
    lam = a.log() - s.log()
    exp_mh = s_n * a / (a_n * s)                                         # e^{−h}, h = λ_next − λ
    c_x, c_d = s_n / s, a_n * (1 - exp_mh)
    h = lam[1:] - lam[:-1]                                               # step sizes of the steps that have a next λ
    c_prev = torch.zeros_like(c_x)
    if order == 2 and len(taus) > 2:
        r = h[:-1] / h[1:]                                               # r_i = h_{i+1} / h_i for steps 1 … S−2
        c_prev[1:-1] = -1.0 / (2.0 * r)
    return {"c_x": c_x, "c_d": c_d, "c_prev": c_prev, "sqrt_ab": a, "sqrt_1m_ab": s}


def dpm_solver_sample(model, schedule: NoiseSchedule, shape, *, steps: int = 10, y=None, guidance=None,
                      x_T: torch.Tensor | None = None, generator: torch.Generator | None = None, progress: bool = True,
                      order: int = 2, spacing: str = "logsnr", timesteps=None, return_trajectory: bool = False,
                      trajectory_every: int | None = None, device=None):
    """DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling", Algorithm 2): the
    probability-flow ODE solved in the half-log-SNR λ = log(√ᾱ/√(1−ᾱ)) by the exponential integrator, with a
    multistep second-order correction on the predicted x̂_0 (book chapter 9, eqs. 9.3–9.5). ``steps`` network
    calls (2·``steps`` images with CFG, as for DDIM).

    The grid is :func:`dpm_solver_timesteps` with ``spacing`` (``"logsnr"``, the default: evenly spaced in λ, as
    Lu et al. recommend for small images; ``"quadratic"``: code indices (T−1)(i/(S−1))², dense at low noise;
    ``"time"``: :func:`ddim_timesteps`, evenly spaced in t), or the code indices in ``timesteps``. ``order=1``
    is DDIM with η = 0 on the same grid, step for step; ``order=2`` (default) uses x̂_0 of the previous step too.
    The first step and the last one (to x_0, σ = 0) are first order. On the evenly spaced grid the last interval,
    into code index 0, is several times longer in λ than the one before it (λ rises steeply near t = 0), so the
    multistep extrapolation overshoots at few steps (book chapter 9 measures it); the log-SNR and quadratic grids
    keep neighbouring λ steps comparable.

    It matches diffusers' ``DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2,
    solver_type="midpoint", prediction_type="epsilon", lower_order_final=True, final_sigmas_type="zero")``
    (book chapter 9 and ``tests/test_dpm_solver.py`` check it): with ``set_timesteps(timesteps=...)`` given this
    grid descending, or, for diffusers' default ``timestep_spacing="linspace"``, with
    ``timesteps=`` its ``scheduler.timesteps`` here (that spacing skips step 0 and jumps to x_0 from
    round(999/S)).

    Arguments as in :func:`ddim_sample`: ``y`` and ``guidance`` (CFG, an interval, classifier guidance through
    ε), ``x_T`` fixes the starting noise, ``generator`` draws it. Returns x_0, or ``(x_0, trajectory)``.
    """
    model, schedule, guidance, _ = _boundary(model, schedule, y, guidance)
    if timesteps is None:
        taus = dpm_solver_timesteps(schedule, steps, spacing)
        steps = len(taus)
    else:
        taus = _check_timesteps_list(timesteps, schedule.T)
        steps = len(taus)
    if order not in (1, 2):
        raise ValueError(f"order must be 1 (DDIM) or 2 (DPM-Solver++(2M)), got {order!r}")
    shape = _check_shape(shape, x_T)
    device = _resolve_device(device, model, x_T)
    B = shape[0]
    y = _labels(y, B, device, model, guidance)
    c = dpm_solver_coefficients(schedule, taus, order)
    tau_desc = taus.flip(0).tolist()
    rec = _Recorder(return_trajectory, steps, trajectory_every)
    with torch.no_grad(), checks.trusted():
        x = _start_noise(shape, x_T, generator, device)
        tab = {k: v.tolist() for k, v in c.items()}      # Python floats: no device tensors to index in the loop
        x0_prev = None
        for i in tqdm(range(steps), desc="DPM-Solver++ sampling", disable=not progress, leave=False):
            tau = tau_desc[i]
            t = torch.full((B,), tau, dtype=torch.long, device=device)
            # 1. ε̃ = ε_θ(x_τ, τ) after guidance, 2. x̂_0 = (x_τ − σ_τ ε̃) / α_τ (the data prediction)
            eps = _guided_eps(model, x, t, y, guidance, tau)
            if guidance is not None:
                eps = guidance.adjust_eps(eps, schedule, x, t, y)
            x0 = (x - tab["sqrt_1m_ab"][i] * eps) / tab["sqrt_ab"][i]
            # 3. D = x̂_0 + (x̂_0 − x̂_0,prev)/(2r) (eq. 9.5), or x̂_0 at a first-order step
            cp = tab["c_prev"][i]
            d = x0 if cp == 0.0 or x0_prev is None else (1.0 - cp) * x0 + cp * x0_prev
            # 4. the exponential-integrator step (eq. 9.4)
            rec(i, tau + 1, x, x0)
            x = tab["c_x"][i] * x + tab["c_d"][i] * d
            x0_prev = x0
    return (x, rec.finish(x)) if return_trajectory else x


# ----------------------------------------------------------------------------- many samples
SAMPLERS = ("ddpm", "ddim")     # the names sample_batches takes: ddpm_sample, ddim_sample


def sample_batches(model, schedule: NoiseSchedule | None, item_shape=None, *, n: int | None = None, y=None,
                   sampler: str = "ddpm", batch_size: int = 1000, steps: int = 50, eta: float = 0.0,
                   variance: str = "beta", device=None, **kwargs) -> torch.Tensor:
    """``n`` samples (or one per label of ``y``) of shape ``item_shape``, drawn ``batch_size`` at a time with
    :func:`ddpm_sample` or :func:`ddim_sample` (``sampler``), concatenated on the CPU. One ``generator`` (in
    ``kwargs``, with ``guidance``, ``clip_x0``, ``progress`` …) serves every batch, so the result depends on the
    batch size. ``steps`` and ``eta`` are DDIM's, ``variance`` DDPM's. ``model`` may be a
    :class:`~diffusion_lab.checkpoint.LoadedModel`: ``schedule`` and ``item_shape`` then default to its own."""
    if isinstance(model, LoadedModel):
        item_shape = model.item_shape if item_shape is None else item_shape
        model, schedule, _, _ = _boundary(model, schedule, None, None)
    if item_shape is None:
        raise TypeError("sample_batches needs item_shape (the shape of one sample), or a LoadedModel that knows it")
    if sampler not in SAMPLERS:
        raise unknown_name("sampler", sampler, SAMPLERS)
    fn = ddpm_sample if sampler == "ddpm" else ddim_sample     # looked up at call time (tests may patch them)
    if y is not None:
        y = check_labels(y, y.shape[0] if isinstance(y, torch.Tensor) and y.dim() == 1 else n)
        n = y.shape[0]
    n = checks.positive_int(n, "n", " (the number of samples) when y is not given")
    batch_size = checks.positive_int(batch_size, "batch_size")
    item_shape = tuple(item_shape)
    extra = {"variance": variance} if sampler == "ddpm" else {"steps": steps, "eta": eta}
    out = []
    for i in range(0, n, batch_size):
        b = min(batch_size, n - i)
        yb = None if y is None else (y[i:i + b] if device is None else y[i:i + b].to(device))
        out.append(fn(model, schedule, (b,) + item_shape, y=yb, device=device, **extra, **kwargs).cpu())
    return torch.cat(out)
