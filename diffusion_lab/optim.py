"""Optimisation aids of the training loop (:mod:`diffusion_lab.train`): the learning-rate multipliers (a linear
warm-up, then constant or a cosine / linear decay) and the exponential moving averages — of the weights (a
constant decay, or the power-function profile of Karras et al. 2024) and of a loss history (:func:`ema_smoothed`,
for reports)."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

__all__ = ["LinearWarmup", "WarmupDecay", "lr_multiplier", "power_ema_decay", "PowerEMA", "ema_model_for",
           "ema_smoothed", "LR_SCHEDULES"]

LR_SCHEDULES = ("constant", "cosine", "linear")


class LinearWarmup:
    """LR multiplier for ``LambdaLR``: linear from 1/warmup to 1 over ``warmup`` steps, then constant."""

    def __init__(self, warmup: int):
        self.warmup = int(warmup)

    def __call__(self, step: int) -> float:
        return 1.0 if self.warmup <= 0 else min(1.0, (step + 1) / self.warmup)


class WarmupDecay(LinearWarmup):
    """LR multiplier for ``LambdaLR`` at optimiser step ``step`` (0-based): the linear warm-up of
    :class:`LinearWarmup`, then, with p = (step − warmup)/(steps − warmup) ∈ [0, 1), a decay to ``min_ratio``:

        cosine:  min_ratio + (1 − min_ratio) · ½ (1 + cos π p)        linear:  1 − (1 − min_ratio) · p
    """

    def __init__(self, warmup: int, steps: int, kind: str = "cosine", min_ratio: float = 0.0):
        super().__init__(warmup)
        if kind not in ("cosine", "linear"):
            raise ValueError(f"kind must be 'cosine' or 'linear', got {kind!r}")
        self.steps, self.kind, self.min_ratio = int(steps), kind, float(min_ratio)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return super().__call__(step)
        p = (step - self.warmup) / max(1, self.steps - self.warmup)
        if self.kind == "cosine":
            return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * p))
        return 1.0 - (1.0 - self.min_ratio) * p


def lr_multiplier(cfg) -> LinearWarmup:
    """The ``LambdaLR`` multiplier that ``cfg.lr_schedule`` names (``cfg``: a :class:`~diffusion_lab.train.TrainConfig`)."""
    if cfg.lr_schedule == "constant":
        return LinearWarmup(cfg.warmup)
    return WarmupDecay(cfg.warmup, cfg.steps, cfg.lr_schedule, cfg.min_lr_ratio)


def power_ema_decay(t, gamma: float):
    """Decay of the power-function EMA after optimiser step ``t`` ≥ 1 (Karras et al. 2024, eq. 3):
    β_t = (1 − 1/t)^(γ+1). Its average weighs the weights of step τ ∝ τ^γ, so early (random) weights fade at
    any run length: β_1 = 0 (a copy), then the decay rises toward 1 as training goes on."""
    return (1.0 - 1.0 / t) ** (gamma + 1.0)


class PowerEMA:
    """``multi_avg_fn`` for ``AveragedModel``: ema ← β_t·ema + (1 − β_t)·θ with β_t = :func:`power_ema_decay`;
    ``num_averaged`` counts the updates before this one, so this is update t = num_averaged + 1."""

    def __init__(self, gamma: float):
        self.gamma = float(gamma)

    @torch.no_grad()
    def __call__(self, ema_params, params, num_averaged):
        beta = power_ema_decay(float(num_averaged) + 1.0, self.gamma)
        torch._foreach_lerp_(list(ema_params), list(params), 1.0 - beta)



def ema_model_for(net: nn.Module, cfg) -> AveragedModel | None:
    """The EMA of ``net`` that ``cfg`` (a :class:`~diffusion_lab.train.TrainConfig`) asks for: constant decay
    (``ema_decay``), power function (``ema_power``), or none."""
    if cfg.ema_power is not None:
        return AveragedModel(net, multi_avg_fn=PowerEMA(cfg.ema_power), use_buffers=True)
    if cfg.ema_decay is not None:
        return AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
    return None



def ema_smoothed(losses, alpha: float = 0.02) -> float:
    """Exponentially smoothed loss at the end of the history (bias-corrected; alpha = 1/50 steps)."""
    m, w = 0.0, 0.0
    for v in losses:
        m = (1 - alpha) * m + alpha * v
        w = (1 - alpha) * w + alpha
    return m / w if w else float("nan")
