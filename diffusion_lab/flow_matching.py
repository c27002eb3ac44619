"""Flow matching (rectified flow) on the straight path, book chapter 9.

The path from data to noise is a straight line, t ∈ [0, 1] (0 = data, 1 = noise; the convention of
Stable Diffusion 3 and diffusers' ``FlowMatchEulerDiscreteScheduler``, whose σ is this t):

  (9.6)  x_t = (1 − t) x_0 + t ε,            its velocity  dx_t/dt = ε − x_0
  (9.7)  L_CFM = E_{t, x_0, ε} ‖v_θ(x_t, t) − (ε − x_0)‖²
  (9.8)  its minimiser is the marginal velocity  v*(x, t) = E[ε − x_0 | x_t = x]
  (9.10), (9.11) sampling integrates dx/dt = v(x, t) from t = 1 (x ~ N(0, I)) down to t = 0 (Euler, Heun)

A velocity model is a callable ``model(x_t, t, y=None) -> v`` with ``t`` a float tensor of shape (B,) in [0, 1].
The package's networks embed an integer step, so :class:`FlowNet` wraps one: it feeds round(t·(K−1)) for a grid of
K = ``grid`` times, and :func:`flow_matching_loss` (with ``grid``) and :func:`flow_timesteps` draw t on that grid,
so the network only ever sees the times it was trained on.

Classifier-free guidance works on v exactly as on ε (eq. 8.1 is linear in the prediction):
ṽ = (1 + w) v(x, t, y) − w v(x, t, ∅), with :class:`diffusion_lab.guidance.ClassifierFreeGuidance`.

For the 2-D mixtures of the book the exact v* is :meth:`diffusion_lab.gaussian_mixture.GaussianMixture.flow_velocity`.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from . import checks
from .guidance import ClassifierFreeGuidance, check_labels, num_classes_of
from .models import device_of
from .train import EpochSampler, TrainConfig, ema_model_for, lr_multiplier

__all__ = ["interpolate", "velocity_target", "flow_matching_loss", "flow_timesteps", "euler_sample", "heun_sample",
           "FlowNet", "train_flow", "FlowTrainResult", "DEFAULT_GRID"]

DEFAULT_GRID = 1000      # the number of times a FlowNet embeds: t = k / (grid − 1), k = 0 … grid − 1


def _check_t(t, batch: int, device, dtype) -> torch.Tensor:
    t = torch.as_tensor(t, dtype=torch.float64)
    if t.dim() == 0:
        t = t.expand(batch)
    if t.shape != (batch,):
        raise ValueError(f"t must be a number or have shape (B,) = ({batch},), got {tuple(t.shape)}")
    if not bool(((t >= 0) & (t <= 1)).all()):
        raise ValueError("flow-matching time t must lie in [0, 1] (0 = data, 1 = noise)")
    return t.to(device=device, dtype=dtype)


def _bshape(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return t.reshape((-1,) + (1,) * (x.dim() - 1))


def interpolate(x0: torch.Tensor, noise: torch.Tensor, t) -> torch.Tensor:
    """x_t = (1 − t) x_0 + t ε, eq. (9.6); ``t`` a number or shape (B,) in [0, 1]."""
    checks.float_batch(x0, "x0")
    checks.same_shape(noise, x0, "noise", "x0")
    t = _bshape(_check_t(t, x0.shape[0], x0.device, x0.dtype), x0)
    return (1 - t) * x0 + t * noise


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """dx_t/dt = ε − x_0, the regression target of eq. (9.7) (the same at every t: the path is straight)."""
    checks.same_shape(noise, x0, "noise", "x0")
    return noise - x0


def flow_matching_loss(model, x0: torch.Tensor, *, y=None, t=None, noise=None, generator=None,
                       grid: int | None = DEFAULT_GRID, reduction: str = "mean") -> torch.Tensor:
    """The conditional flow-matching loss (9.7): ‖v_θ(x_t, t, y) − (ε − x_0)‖², averaged over the pixels.

    ``t`` defaults to a uniform draw: on the grid k/(grid − 1) (what a :class:`FlowNet` embeds), or continuous in
    [0, 1] with ``grid=None``. ``noise`` defaults to N(0, I). ``reduction="none"`` gives one value per item.
    """
    checks.float_batch(x0, "x0")
    B = x0.shape[0]
    if t is None:
        if grid is None:
            t = torch.rand(B, generator=generator, dtype=torch.float64)
        else:
            grid = checks.positive_int(grid, "grid")
            t = torch.randint(0, grid, (B,), generator=generator).double() / max(grid - 1, 1)
    t = _check_t(t, B, x0.device, x0.dtype)
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
    x_t = interpolate(x0, noise, t)
    pred = model(x_t, t) if y is None else model(x_t, t, y=y)
    if not isinstance(pred, torch.Tensor) or pred.shape != x0.shape:
        raise ValueError(f"the velocity model must return a tensor of x_t's shape {tuple(x0.shape)}, "
                         f"got {getattr(pred, 'shape', type(pred).__name__)}")
    per_item = (pred - velocity_target(x0, noise)).pow(2).reshape(B, -1).mean(1)
    if reduction == "none":
        return per_item
    if reduction != "mean":
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    return per_item.mean()


def flow_timesteps(steps: int, grid: int | None = DEFAULT_GRID) -> torch.Tensor:
    """The ``steps`` + 1 times 1 = t_0 > t_1 > … > t_S = 0 of a sampler, evenly spaced, float64; with ``grid``
    rounded to multiples of 1/(grid − 1) (the times a :class:`FlowNet` was trained on)."""
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    t = torch.linspace(1.0, 0.0, int(steps) + 1, dtype=torch.float64)
    if grid is not None:
        grid = checks.positive_int(grid, "grid")
        if steps > grid - 1:
            raise ValueError(f"steps={steps} exceeds the grid's {grid - 1} intervals")
        t = torch.floor(t * (grid - 1) + 0.5) / (grid - 1)
    return t


def _velocity(model, x, t_val: float, y, guidance):
    t = torch.full((x.shape[0],), t_val, dtype=x.dtype, device=x.device)
    if guidance is None:
        v = model(x, t) if y is None else model(x, t, y=y)
    else:
        v = guidance.eps(model, x, t, y)          # CFG mixes the two predictions; on v exactly as on ε
    if not isinstance(v, torch.Tensor) or v.shape != x.shape:
        raise ValueError(f"the velocity model must return a tensor of x's shape {tuple(x.shape)}, "
                         f"got {getattr(v, 'shape', type(v).__name__)}")
    return v


def _prepare(model, shape, x_T, y, guidance, generator, device):
    if guidance is not None:
        if not isinstance(guidance, ClassifierFreeGuidance) or guidance.interval is not None:
            raise ValueError("the flow samplers take guidance=ClassifierFreeGuidance(w) (no interval: its steps are "
                             "diffusion code indices)")
        if y is None:
            raise ValueError("classifier-free guidance needs target labels y")
    if x_T is None:
        if shape is None:
            raise ValueError("pass shape=(B, ...) or a starting noise x_T")
        shape = tuple(int(s) for s in shape)
        dev = torch.device(device) if device is not None else device_of(model)
        x = torch.randn(shape, generator=generator, dtype=torch.float32).to(dev)
    else:
        checks.float_batch(x_T, "x_T")
        if shape is not None and tuple(shape) != tuple(x_T.shape):
            raise ValueError(f"x_T has shape {tuple(x_T.shape)} but shape={tuple(shape)}")
        x = x_T if device is None else x_T.to(device)
    if y is not None:
        if guidance is not None:
            y = guidance.check_labels(y, x.shape[0], model)
        else:
            y = check_labels(y, x.shape[0], num_classes_of(model), allow_null=True)
        y = y.to(x.device)
    return x, y




def _sample(model, shape, steps, y, guidance, x_T, generator, progress, grid, device, heun, return_trajectory):
    x, y = _prepare(model, shape, x_T, y, guidance, generator, device)
    ts = flow_timesteps(steps, grid).tolist()
    frames = [x.detach().cpu().clone()]
    with torch.no_grad(), checks.trusted():
        for i in tqdm(range(len(ts) - 1), desc="Heun" if heun else "Euler", disable=not progress, leave=False):
            t, t_next = ts[i], ts[i + 1]
            h = t_next - t                                           # negative: from noise towards data
            v = _velocity(model, x, t, y, guidance)
            x_euler = x + h * v                                      # (9.10) Euler
            if heun:
                v_next = _velocity(model, x_euler, t_next, y, guidance)
                x = x + h * 0.5 * (v + v_next)                       # (9.11) Heun: the trapezoid of the two slopes
            else:
                x = x_euler
            if return_trajectory:
                frames.append(x.detach().cpu().clone())
    if return_trajectory:
        return x, (ts, torch.stack(frames))
    return x


def euler_sample(model, shape=None, *, steps: int = 20, y=None, guidance=None, x_T: torch.Tensor | None = None,
                 generator: torch.Generator | None = None, progress: bool = False, grid: int | None = DEFAULT_GRID,
                 device=None, return_trajectory: bool = False):
    """Euler's method on dx/dt = v(x, t) from t = 1 (x_T ~ N(0, I), drawn from ``generator`` unless given) to
    t = 0 in ``steps`` equal steps (:func:`flow_timesteps`): x ← x + (t_next − t) v(x, t). ``steps`` network
    calls (2·``steps`` images with CFG). ``guidance=ClassifierFreeGuidance(w)`` with labels ``y``.

    This is diffusers' ``FlowMatchEulerDiscreteScheduler`` step, prev = x + (σ_next − σ) · v, with σ = t.
    Returns x_0, or ``(x_0, (times, frames))`` with ``return_trajectory``: the S + 1 states, on the CPU."""
    return _sample(model, shape, steps, y, guidance, x_T, generator, progress, grid, device, False,
                   return_trajectory)


def heun_sample(model, shape=None, *, steps: int = 10, y=None, guidance=None, x_T: torch.Tensor | None = None,
                generator: torch.Generator | None = None, progress: bool = False, grid: int | None = DEFAULT_GRID,
                device=None, return_trajectory: bool = False):
    """Heun's method (the explicit trapezoid, second order): an Euler step to x̃, then
    x ← x + (t_next − t) (v(x, t) + v(x̃, t_next)) / 2. Two network calls per step, 2·``steps`` in all; otherwise
    as :func:`euler_sample`."""
    return _sample(model, shape, steps, y, guidance, x_T, generator, progress, grid, device, True,
                   return_trajectory)


class FlowNet(nn.Module):
    """A velocity model v_θ(x_t, t, y) from one of the package's networks (which embed an integer step):
    ``forward(x_t, t, y=None)`` calls ``net(x_t, round(t·(grid − 1)), y)``. ``config`` is the network's."""

    def __init__(self, net: nn.Module, grid: int = DEFAULT_GRID):
        super().__init__()
        self.net = net
        self.grid = checks.positive_int(grid, "grid")
        self.config = getattr(net, "config", None)
        self.num_classes = num_classes_of(net)

    def forward(self, x_t: torch.Tensor, t, y=None) -> torch.Tensor:
        t = torch.as_tensor(t, device=x_t.device)
        if t.dim() == 0:
            t = t.expand(x_t.shape[0])
        k = torch.floor(t.double() * (self.grid - 1) + 0.5).long()
        return self.net(x_t, k) if y is None else self.net(x_t, k, y=y)


@dataclass
class FlowTrainResult:
    """What :func:`train_flow` returns: the trained :class:`FlowNet`, its EMA (or the net itself without EMA),
    the loss of every step, the number of training images seen and the wall time."""

    model: FlowNet
    ema_model: nn.Module
    losses: list = field(default_factory=list)
    images: int = 0
    seconds: float = 0.0


def train_flow(net: nn.Module, data, *, config: TrainConfig | None = None, grid: int = DEFAULT_GRID,
               progress: bool = False, **overrides) -> FlowTrainResult:
    """Train ``net`` (a package network, wrapped in a :class:`FlowNet`) with the flow-matching loss (9.7) on
    ``data`` = x or (x, y), with the same optimiser as :func:`diffusion_lab.train.train` — AdamW, linear warm-up,
    gradient clipping, EMA — from the same :class:`~diffusion_lab.train.TrainConfig` (``steps``, ``batch_size``,
    ``lr``, ``warmup``, ``grad_clip``, ``ema_decay``, ``label_dropout``, ``seed``; keywords override fields), so a
    flow model and a diffusion model can be trained on the same images with the same recipe. CPU or the
    network's device; no AMP, DDP or checkpoints (the book's comparison is small)."""
    import time

    cfg = TrainConfig.resolve(config, **overrides)
    if cfg.prediction != "eps" or cfg.loss_weighting != "none":
        raise ValueError("train_flow regresses the velocity; prediction and loss_weighting do not apply")
    x, y = (data if isinstance(data, (tuple, list)) else (data, None))
    checks.float_batch(x, "x")
    K = num_classes_of(net)
    if y is not None:
        if K is None:
            raise ValueError("labels were given but the network is unconditional (num_classes=None)")
        y = check_labels(y, x.shape[0], K)
    elif cfg.label_dropout > 0:
        raise ValueError("label_dropout needs labels")
    model = FlowNet(net, grid)
    dev = device_of(net)
    x = x.to(dev)
    y = y.to(dev) if y is not None else None
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    sampler = EpochSampler(x.shape[0], cfg.seed)
    ema = ema_model_for(model, cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_multiplier(cfg))
    model.train()
    losses, t0 = [], time.perf_counter()
    for step in tqdm(range(cfg.steps), desc="flow matching", disable=not progress, leave=False):
        idx = sampler.batch(step, cfg.batch_size).to(dev)
        x0 = x[idx]
        t = torch.randint(0, grid, (cfg.batch_size,), generator=gen).double() / max(grid - 1, 1)
        noise = torch.randn(x0.shape, generator=gen).to(dev)
        yb = None
        if y is not None:
            yb = y[idx]
            if cfg.label_dropout > 0:
                drop = (torch.rand(cfg.batch_size, generator=gen) < cfg.label_dropout).to(dev)
                yb = torch.where(drop, torch.full_like(yb, K), yb)
        with checks.trusted():
            loss = flow_matching_loss(model, x0, y=yb, t=t, noise=noise)
        loss.backward()
        if cfg.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()
        if ema is not None:
            ema.update_parameters(model)
        loss = float(loss.detach())
        if not math.isfinite(loss):
            raise FloatingPointError(f"flow-matching loss became {loss} at step {step}; lower lr")
        losses.append(loss)
    model.eval()
    ema_model = model if ema is None else ema.module.eval()
    return FlowTrainResult(model, ema_model, losses, cfg.steps * cfg.batch_size, time.perf_counter() - t0)
