"""Samplers: DDPM ancestral sampling and DDIM (book chapter 6), with optional guidance (chapters 7–8).

Everything here is stateless over a schedule and a callable ``model(x_t, t, y=None) -> ε``; ``t`` is a
LongTensor of code indices (code index t ↔ paper step t+1, see :mod:`diffusion_lab.schedules`).

Book equations:

  (3.7) μ_θ(x_t, t) = (x_t − β_t/√(1−ᾱ_t) · ε_θ(x_t, t)) / √α_t
  (6.1) x_{t−1} = μ_θ(x_t, t) + σ_t z,  z ~ N(0, I),  σ_t² = β_t or β̃_t,  no noise at the last step
  DDIM (Song et al. 2021, eq. 12), on a sub-sequence τ_1 < … < τ_S of code indices:
        x_{τ_{i−1}} = √ᾱ_{τ_{i−1}} x̂_0 + √(1 − ᾱ_{τ_{i−1}} − σ_i²) · ε_θ(x_{τ_i}, τ_i) + σ_i z
        σ_i = η · √((1 − ᾱ_{τ_{i−1}}) / (1 − ᾱ_{τ_i})) · √(1 − ᾱ_{τ_i} / ᾱ_{τ_{i−1}}),  ᾱ_{τ_0} := 1

The seed's sampling pseudo-code has 1/√ᾱ_t where eq. (3.7) has 1/√α_t, loops the paper's t from T to 1
while indexing 0-based arrays, and adds noise at the last step; :func:`p_sample` is the corrected update.

All loops run under ``torch.no_grad()`` (classifier guidance opens its own ``enable_grad`` block for its
gradient); trajectories are sub-sampled and stored on the CPU, so memory stays flat over the steps.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .diffusion import VARIANCES, call_model, p_mean_variance
from .guidance import Guidance, check_labels
from .schedules import NoiseSchedule, check_timesteps

__all__ = ["p_sample", "ddpm_sample", "ddim_timesteps", "ddim_step", "ddim_sample", "ddim_invert", "Trajectory"]

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


class _Recorder:
    """Collects frames every ``every`` sampling steps (plus the first and the last) on the CPU."""

    def __init__(self, enabled, n_steps, every):
        self.enabled = enabled
        if every is None:
            every = max(1, math.ceil(n_steps / DEFAULT_TRAJECTORY_FRAMES))
        if isinstance(every, bool) or not isinstance(every, numbers.Integral) or every < 1:
            raise ValueError(f"trajectory_every must be a positive int (keep every k-th step), got {every!r}")
        self.every, self.steps, self.xs, self.x0s = int(every), [], [], []

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


def _check_schedule(schedule):
    if not isinstance(schedule, NoiseSchedule):
        raise TypeError(
            f"schedule must be a NoiseSchedule (e.g. diffusion_lab.schedules.linear_schedule()), got {type(schedule).__name__}")


def _check_variance(variance):
    if variance not in VARIANCES:
        raise ValueError(f"variance must be one of {VARIANCES} (σ_t² = β_t or β̃_t), got {variance!r}")


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


def _check_x(x, name="x_t"):
    if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating-point tensor of shape (B, ...), got "
                        f"{type(x).__name__ if not isinstance(x, torch.Tensor) else x.dtype}")
    if x.dim() < 2:
        raise ValueError(f"{name} must have shape (B, ...) with a batch dimension first, got shape {tuple(x.shape)}")


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


def _resolve_device(device, model, x_T):
    if device is not None:
        return torch.device(device)
    if x_T is not None:
        return x_T.device
    params = getattr(model, "parameters", None)
    if callable(params):
        try:
            return next(iter(params())).device
        except (StopIteration, TypeError):
            pass
    return torch.device("cpu")


def _randn(shape, generator, device, dtype=torch.float32):
    """Standard normal noise. With a generator the draw happens on the generator's device, then moves, so a
    CPU generator gives the same numbers whatever device the sampler runs on."""
    if generator is None:
        return torch.randn(shape, device=device, dtype=dtype)
    return torch.randn(shape, generator=generator, device=generator.device, dtype=dtype).to(device)


def _start_noise(shape, x_T, generator, device):
    if x_T is None:
        return _randn(shape, generator, device)
    _check_x(x_T, "x_T")
    return x_T.to(device)


def _labels(y, batch, device):
    return None if y is None else check_labels(y, batch).to(device)


def _bcast(values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(B,) float64 coefficients → (B, 1, …, 1) in x's dtype and device."""
    return values.to(device=x.device, dtype=x.dtype).reshape((-1,) + (1,) * (x.dim() - 1))


def _guided_eps(model, x_t, t, y, guidance):
    if guidance is None:
        return call_model(model, x_t, t, y)
    return guidance.eps(model, x_t, t, y)


# ----------------------------------------------------------------------------- DDPM
def _p_sample_step(model, schedule, x_t, t, *, y, noise, variance, guidance, clip_x0, generator):
    _check_schedule(schedule)
    _check_x(x_t)
    _check_variance(variance)
    guidance = _check_guidance(guidance, y)
    B = x_t.shape[0]
    t = check_timesteps(t, schedule.T, batch=B).to(x_t.device)
    y = _labels(y, B, x_t.device)
    eps = _guided_eps(model, x_t, t, y, guidance)
    out = p_mean_variance(model, schedule, x_t, t, variance=variance, clip_x0=clip_x0, eps=eps)
    mean = out["mean"]
    if guidance is not None:
        mean = guidance.adjust_mean(mean, out["variance"], x_t, t, y)
    nonzero = t != 0
    if not bool(nonzero.any()):  # the last step (code index 0, paper step 1) adds no noise
        return mean, out
    if noise is None:
        noise = _randn(x_t.shape, generator, x_t.device, x_t.dtype)
    elif noise.shape != x_t.shape:
        raise ValueError(f"noise must have x_t's shape {tuple(x_t.shape)}, got {tuple(noise.shape)}")
    mask = _bcast(nonzero.double(), x_t)
    return mean + mask * out["variance"].sqrt() * noise, out


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
    x_prev, _ = _p_sample_step(model, schedule, x_t, t, y=y, noise=noise, variance=variance, guidance=guidance,
                               clip_x0=clip_x0, generator=generator)
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
    _check_schedule(schedule)
    _check_variance(variance)
    guidance = _check_guidance(guidance, y)
    shape = _check_shape(shape, x_T)
    device = _resolve_device(device, model, x_T)
    T = schedule.T
    rec = _Recorder(return_trajectory, T, trajectory_every)
    with torch.no_grad():
        x = _start_noise(shape, x_T, generator, device)
        y = _labels(y, shape[0], device)
        for i, idx in enumerate(tqdm(range(T - 1, -1, -1), desc="DDPM sampling", disable=not progress, leave=False)):
            t = torch.full((shape[0],), idx, dtype=torch.long, device=device)
            x_new, out = _p_sample_step(model, schedule, x, t, y=y, noise=None, variance=variance, guidance=guidance,
                                        clip_x0=clip_x0, generator=generator)
            rec(i, idx + 1, x, out["pred_x0"])
            x = x_new
    return (x, rec.finish(x)) if return_trajectory else x


# ----------------------------------------------------------------------------- DDIM
def _check_steps(steps, T):
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral):
        raise TypeError(f"steps must be an int in [1, T] = [1, {T}], got {steps!r}")
    if not 1 <= steps <= T:
        raise ValueError(f"steps must lie in [1, T] = [1, {T}] (the number of sampling steps), got steps={steps}")
    return int(steps)


def _check_eta(eta):
    if isinstance(eta, bool) or not isinstance(eta, numbers.Real) or not math.isfinite(float(eta)):
        raise TypeError(f"eta must be a real number in [0, 1], got {eta!r}")
    if not 0.0 <= float(eta) <= 1.0:
        raise ValueError(f"eta must lie in [0, 1] (0 = deterministic DDIM, 1 = DDPM-like noise), got eta={eta}")
    return float(eta)


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


def _ddim_step(model, schedule, x_t, t, t_prev, *, eta, y, guidance, noise, clip_x0, generator):
    B = x_t.shape[0]
    eps = _guided_eps(model, x_t, t, y, guidance)
    if guidance is not None:
        eps = guidance.adjust_eps(eps, schedule, x_t, t, y)
    ab_ext = _alpha_bar_ext(schedule)
    a_t = ab_ext[t.cpu() + 1]                 # ᾱ at τ_i  (not ᾱ_prev: the classic pitfall)
    a_prev = ab_ext[t_prev.cpu() + 1]         # ᾱ at τ_{i−1} of the sub-sequence, 1 before the first step
    pred_x0 = (x_t - _bcast((1 - a_t).sqrt(), x_t) * eps) / _bcast(a_t.sqrt(), x_t)
    if clip_x0 is not None:
        lo, hi = clip_x0
        if not lo < hi:
            raise ValueError(f"clip_x0 must be (low, high) with low < high, got {clip_x0}")
        pred_x0 = pred_x0.clamp(lo, hi)
        eps = (x_t - _bcast(a_t.sqrt(), x_t) * pred_x0) / _bcast((1 - a_t).sqrt(), x_t)
    sigma = eta * ((1 - a_prev) / (1 - a_t)).sqrt() * (1 - a_t / a_prev).clamp(min=0).sqrt()
    dir_coef = (1 - a_prev - sigma ** 2).clamp(min=0).sqrt()
    x_prev = _bcast(a_prev.sqrt(), x_t) * pred_x0 + _bcast(dir_coef, x_t) * eps
    if eta > 0 and bool((sigma > 0).any()):
        if noise is None:
            noise = _randn(x_t.shape, generator, x_t.device, x_t.dtype)
        elif noise.shape != x_t.shape:
            raise ValueError(f"noise must have x_t's shape {tuple(x_t.shape)}, got {tuple(noise.shape)}")
        x_prev = x_prev + _bcast(sigma, x_t) * noise
    return x_prev, pred_x0


def ddim_step(model, schedule: NoiseSchedule, x_t: torch.Tensor, t, t_prev, *, eta: float = 0.0, y=None,
              guidance=None, noise=None, clip_x0: tuple[float, float] | None = None, generator=None) -> torch.Tensor:
    """One DDIM step from code index ``t`` to code index ``t_prev`` < t (``-1`` means "to x_0", ᾱ = 1)
    (Song et al. 2021, eq. 12; book chapter 6):

        x̂_0 = (x_t − √(1−ᾱ_t) ε̃) / √ᾱ_t,   x_prev = √ᾱ_prev x̂_0 + √(1 − ᾱ_prev − σ²) ε̃ + σ z

    with σ = η √((1−ᾱ_prev)/(1−ᾱ_t)) √(1 − ᾱ_t/ᾱ_prev), ᾱ_prev = ᾱ at ``t_prev`` (of the sub-sequence, not
    the schedule's ᾱ_{t−1}). ε̃ is ε_θ after guidance (CFG eq. 8.1 or classifier guidance eq. 7.2).
    """
    _check_schedule(schedule)
    _check_x(x_t)
    eta = _check_eta(eta)
    guidance = _check_guidance(guidance, y)
    B = x_t.shape[0]
    t = check_timesteps(t, schedule.T, batch=B)
    if isinstance(t_prev, numbers.Integral) and not isinstance(t_prev, bool):
        t_prev = torch.full((B,), int(t_prev), dtype=torch.long)
    elif not isinstance(t_prev, torch.Tensor):
        raise TypeError(f"t_prev must be an int or a LongTensor of shape (B,), got {type(t_prev).__name__}")
    t_prev = t_prev.long().reshape(-1).expand(B).cpu()
    if bool((t_prev >= t.cpu()).any()) or bool((t_prev < -1).any()):
        raise ValueError("t_prev must satisfy -1 <= t_prev < t (code indices; -1 means the final x_0)")
    with torch.no_grad():
        x_prev, _ = _ddim_step(model, schedule, x_t, t.to(x_t.device), t_prev, eta=eta, y=_labels(y, B, x_t.device),
                               guidance=guidance, noise=noise, clip_x0=clip_x0, generator=generator)
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
    _check_schedule(schedule)
    steps = _check_steps(steps, schedule.T)
    eta = _check_eta(eta)
    guidance = _check_guidance(guidance, y)
    shape = _check_shape(shape, x_T)
    device = _resolve_device(device, model, x_T)
    taus = ddim_timesteps(schedule.T, steps)
    prevs = torch.cat([torch.tensor([-1]), taus[:-1]])
    rec = _Recorder(return_trajectory, steps, trajectory_every)
    B = shape[0]
    with torch.no_grad():
        x = _start_noise(shape, x_T, generator, device)
        y = _labels(y, B, device)
        for i in tqdm(range(steps - 1, -1, -1), desc="DDIM sampling", disable=not progress, leave=False):
            t = torch.full((B,), int(taus[i]), dtype=torch.long, device=device)
            t_prev = torch.full((B,), int(prevs[i]), dtype=torch.long)
            x_new, pred_x0 = _ddim_step(model, schedule, x, t, t_prev, eta=eta, y=y, guidance=guidance, noise=None,
                                        clip_x0=clip_x0, generator=generator)
            rec(steps - 1 - i, int(taus[i]) + 1, x, pred_x0)
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
    _check_schedule(schedule)
    _check_x(x0, "x0")
    steps = _check_steps(steps, schedule.T)
    guidance = _check_guidance(guidance, y)
    B, device = x0.shape[0], x0.device
    taus = ddim_timesteps(schedule.T, steps)
    ab_ext = _alpha_bar_ext(schedule)
    frames_steps, frames = [0], [x0.detach().to("cpu", copy=True)]
    every = max(1, math.ceil(steps / DEFAULT_TRAJECTORY_FRAMES)) if trajectory_every is None else int(trajectory_every)
    with torch.no_grad():
        y = _labels(y, B, device)
        x, prev = x0, -1
        for i in tqdm(range(steps), desc="DDIM inversion", disable=not progress, leave=False):
            tau = int(taus[i])
            t = torch.full((B,), tau, dtype=torch.long, device=device)
            eps = _guided_eps(model, x, t, y, guidance)
            if guidance is not None:
                eps = guidance.adjust_eps(eps, schedule, x, t, y)
            a_cur, a_next = ab_ext[prev + 1], ab_ext[tau + 1]
            pred_x0 = (x - (1 - a_cur).sqrt().item() * eps) / a_cur.sqrt().item()
            x = a_next.sqrt().item() * pred_x0 + (1 - a_next).sqrt().item() * eps
            prev = tau
            if return_trajectory and ((i + 1) % every == 0 or i == steps - 1):
                frames_steps.append(tau + 1)
                frames.append(x.detach().to("cpu", copy=True))
    if not return_trajectory:
        return x
    xs = torch.stack(frames)
    return x, Trajectory(frames_steps, xs, xs[:1].expand_as(xs).clone())
