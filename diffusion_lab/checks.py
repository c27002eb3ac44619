"""Validation at the public boundary, in one place (the ground floor: it imports nothing from the package but
:mod:`.errors`).

Public entry points (``q_*``, ``p_sample``, the samplers, model ``forward``, the guidance constructors,
``pretrained.load``) call these once; the inner per-step functions (``_p_sample_step``, ``_ddim_step``,
``NoiseSchedule.extract``, the guidance hooks) trust what they are given.

Value checks on tensors (``t`` in range, labels in range) need the values on the host: on a GPU each one is a
device→host sync. A sampler checks its inputs once, then runs its loop inside :func:`trusted`, where the value
checks of the networks it calls are skipped (their type and shape checks, which cost nothing, stay).
"""
from __future__ import annotations

import contextlib
import math
import numbers
import threading

import torch

from .errors import UnknownNameError

__all__ = ["timesteps", "labels", "interval", "clip_range", "same_shape", "float_batch", "positive_int",
           "real_number", "int_fields", "choice", "trusted", "value_checks_enabled"]

_STATE = threading.local()


@contextlib.contextmanager
def trusted():
    """Inside this block, :func:`value_checks_enabled` is false: inputs were checked at the boundary."""
    depth = getattr(_STATE, "depth", 0)
    _STATE.depth = depth + 1
    try:
        yield
    finally:
        _STATE.depth = depth


def value_checks_enabled() -> bool:
    """False inside :func:`trusted` and while ``torch.compile`` traces (a host sync would break the graph)."""
    return getattr(_STATE, "depth", 0) == 0 and not torch.compiler.is_compiling()


def _integer_tensor(v, batch, name: str, what: str, plural: str, device=None) -> torch.Tensor:
    """An int or an integer tensor of shape (B,) or () → LongTensor (B,): the one converter for steps and labels."""
    if isinstance(v, bool):
        raise TypeError(f"{name} must be {what} or an integer tensor of {plural}, got a bool")
    if isinstance(v, numbers.Integral):
        return torch.full((batch if batch is not None else 1,), int(v), dtype=torch.long, device=device)
    if not isinstance(v, torch.Tensor):
        raise TypeError(f"{name} must be an int or an integer torch.Tensor, got {type(v).__name__}")
    if v.dtype.is_floating_point or v.dtype.is_complex or v.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer {plural} (torch.long), got dtype {v.dtype}; use {name}.long() "
                        f"if the values are whole numbers" + (", e.g. torch.randint(0, T, (B,)) — integer step "
                                                                "indices" if name == "t" else ""))
    if v.dim() == 0:
        v = v.reshape(1).expand(batch if batch is not None else 1)
    elif v.dim() != 1:
        raise ValueError(f"{name} must be a 1-D tensor of shape (B,), got shape {tuple(v.shape)}")
    if batch is not None and v.shape[0] != batch:
        raise ValueError(f"{name} has {v.shape[0]} {plural} but the batch has {batch} items; pass one {name} per "
                         f"item (shape (B,))")
    return v.to(device=device if device is not None else v.device, dtype=torch.long)


def timesteps(t, T: int | None = None, batch: int | None = None, *, device=None) -> torch.Tensor:
    """Code-index timesteps → LongTensor (B,). ``t`` is an int (broadcast to the batch) or an integer tensor of
    shape (B,) or (). Values must lie in [0, T−1] (only ≥ 0 when ``T`` is None, as for a network, which does not
    know T); negative values are rejected rather than wrapped around as Python indexing would."""
    t = _integer_tensor(t, batch, "t", "an integer timestep", "timesteps", device)
    if t.numel() and value_checks_enabled():
        lo, hi = int(t.min()), int(t.max())
        if T is None and lo < 0:
            raise ValueError(f"t must be a non-negative step index (code index 0…T-1), got values in [{lo}, {hi}]")
        if T is not None and (lo < 0 or hi >= T):
            raise ValueError(f"t must lie in [0, T-1] = [0, {T - 1}] (code index; paper step = t+1), "
                             f"got values in [{lo}, {hi}]")
    return t


def labels(y, batch: int, num_classes: int | None = None, *, allow_null: bool = False, device=None) -> torch.Tensor:
    """Class labels → LongTensor (B,). ``y`` is an int (the whole batch) or an integer tensor of shape (B,) or ().
    With ``num_classes`` the labels must lie in [0, num_classes) — [0, num_classes] with ``allow_null`` (the value
    ``num_classes`` is the null label ∅ of classifier-free guidance)."""
    y = _integer_tensor(y, batch, "y", "integer class labels: an int", "class labels", device)
    if num_classes is not None and y.numel() and value_checks_enabled():
        hi = num_classes + 1 if allow_null else num_classes
        lo_v, hi_v = int(y.min()), int(y.max())
        if lo_v < 0 or hi_v >= hi:
            raise ValueError(
                f"labels must lie in [0, {hi - 1}] (num_classes={num_classes}"
                f"{', the null label included' if allow_null else ''}), got values in [{lo_v}, {hi_v}]")
    return y


def interval(value) -> tuple[int, int]:
    """A guidance interval ``(t_lo, t_hi)`` of code timesteps (0-based, both ends included)."""
    msg = ("interval must be (t_lo, t_hi): two ints with 0 <= t_lo <= t_hi, the code timesteps (0-based, both "
           "included) where guidance is applied, e.g. interval=(0, 300); got {!r}")
    if not isinstance(value, (tuple, list)) or len(value) != 2 or any(
            isinstance(v, bool) or not isinstance(v, numbers.Integral) for v in value):
        raise TypeError(msg.format(value))
    lo, hi = int(value[0]), int(value[1])
    if lo < 0 or hi < lo:
        raise ValueError(msg.format(value))
    return lo, hi


def clip_range(clip_x0):
    """``None`` or ``(low, high)`` with low < high: the opt-in clamp of x̂_0."""
    if clip_x0 is None:
        return None
    try:
        lo, hi = clip_x0
        ok = float(lo) < float(hi)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"clip_x0 must be (low, high) with low < high, e.g. (-1.0, 1.0), got {clip_x0!r}")
    return lo, hi


def same_shape(a: torch.Tensor, b: torch.Tensor, na: str, nb: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{na} and {nb} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")


def float_batch(x, name: str = "x_t") -> torch.Tensor:
    """A floating-point tensor with a batch dimension first."""
    if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating-point tensor of shape (B, ...), got "
                        f"{type(x).__name__ if not isinstance(x, torch.Tensor) else x.dtype}")
    if x.dim() < 2:
        raise ValueError(f"{name} must have shape (B, ...) with a batch dimension first, got shape {tuple(x.shape)}")
    return x


def positive_int(v, name: str, hint: str = "") -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
        raise (TypeError if isinstance(v, bool) or not isinstance(v, numbers.Integral) else ValueError)(
            f"{name} must be a positive int{hint}, got {v!r}")
    return int(v)


def int_fields(config, names, minimum: int = 1) -> None:
    """Each field ``names`` of a config dataclass is an int (not a bool) >= ``minimum``; else a ValueError naming
    ``Class.field``. The one loop of ``TrainConfig``, ``UNetConfig`` and ``MLPConfig``."""
    what = "a positive int" if minimum == 1 else f"an int >= {minimum}"
    for name in names:
        v = getattr(config, name)
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < minimum:
            raise ValueError(f"{type(config).__name__}.{name} must be {what}, got {v!r}")


def real_number(v, name: str, lo: float = -math.inf, hi: float = math.inf, hint: str = "") -> float:
    """A finite real number (not a bool) in [lo, hi]: TypeError for a non-number, ValueError out of range."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(float(v)):
        raise TypeError(f"{name} must be a finite real number{hint}, got {v!r}")
    if not lo <= float(v) <= hi:
        raise ValueError(f"{name} must lie in [{lo:g}, {hi:g}]{hint}, got {name}={v}")
    return float(v)


def choice(value, allowed, message: str | None = None):
    """``value`` if it is one of ``allowed``, else :class:`~.errors.UnknownNameError` (a LookupError and a
    ValueError) with ``message`` or "must be one of ..., got ..."."""
    try:
        ok = value in allowed
    except TypeError:
        ok = False
    if not ok:
        raise UnknownNameError(message or f"must be one of {tuple(allowed)}, got {value!r}", given=value,
                               allowed=allowed)
    return value
