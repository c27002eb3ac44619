"""Shared pieces of the baselines: argument checks, a small MLP, the result record, minibatches."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import torch.nn as nn


@dataclass
class BaselineResult:
    """What every ``train_*`` returns: the model (eval mode), the loss history per step (a dict of lists, one
    list per loss the method tracks) and the wall time of the training loop in seconds."""

    model: nn.Module
    losses: dict = field(default_factory=dict)
    steps: int = 0
    wall_time: float = 0.0


def check_data(x, name: str = "x") -> torch.Tensor:
    """A float tensor of shape (N, D), N ≥ 2, finite; returned as float32."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, D), got {type(x).__name__}")
    if not x.dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if x.dim() != 2 or x.shape[0] < 2 or x.shape[1] < 1:
        raise ValueError(f"{name} must have shape (N, D) with N >= 2 (flatten images first), got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    return x.float()


def check_positive_int(v, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise ValueError(f"{name} must be a positive int, got {v!r}")
    return v


def check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    return seed


def check_train_args(x, *, steps, batch_size, seed, lr, callback_every) -> torch.Tensor:
    """The checks every ``train_*`` makes on its arguments; returns ``x`` as a float32 (N, D) tensor."""
    x = check_data(x)
    check_positive_int(steps, "steps"), check_positive_int(batch_size, "batch_size"), check_seed(seed)
    check_positive_int(callback_every, "callback_every")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    return x


def model_for(x: torch.Tensor, model, build):
    """``model`` when one is given (it must fit the data's dimension), else a fresh ``build()``."""
    net = model if model is not None else build()
    if net.data_dim != x.shape[1]:
        raise ValueError(f"model.data_dim={net.data_dim} but the data have {x.shape[1]} dimensions")
    return net


def mlp(d_in: int, d_out: int, hidden: int, layers: int = 2, act=nn.SiLU) -> nn.Sequential:
    """d_in → hidden (× ``layers`` hidden layers, each followed by ``act``) → d_out."""
    mods, d = [], d_in
    for _ in range(layers):
        mods += [nn.Linear(d, hidden), act()]
        d = hidden
    mods.append(nn.Linear(d, d_out))
    return nn.Sequential(*mods)


def batches(n: int, batch_size: int, steps: int, generator: torch.Generator):
    """``steps`` index tensors of size ``batch_size`` (with replacement across batches, without inside one)."""
    bs = min(batch_size, n)
    for _ in range(steps):
        yield torch.randperm(n, generator=generator)[:bs]


class Timer:
    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0
