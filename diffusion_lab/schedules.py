"""Noise schedules β_1 … β_T and every coefficient derived from them (book chapter 2).

Index convention (stated once, used everywhere): the code index ``t ∈ {0, …, T-1}`` is the
paper's step ``t + 1``. So ``betas[0]`` is β₁ and ``alpha_bars[t]`` is ᾱ_{t+1}. This is the
convention of improved-diffusion and diffusers. Figures label their axes with the paper's step.

All coefficients are float64 tensors on the CPU; :meth:`NoiseSchedule.extract` casts the
value needed to the dtype and device of the tensor it is applied to.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from . import checks
from .errors import unknown_name

__all__ = ["NoiseSchedule", "linear_schedule", "cosine_schedule", "get_schedule", "check_timesteps", "check_schedule",
           "COEFFICIENTS"]

# the names NoiseSchedule.extract gathers; each is a float64 tensor of length T
COEFFICIENTS = ("betas", "alphas", "alpha_bars", "alpha_bars_prev", "posterior_variance", "sqrt_alpha_bars",
                "sqrt_one_minus_alpha_bars", "one_minus_alpha_bars", "snr", "posterior_variance_clipped",
                "posterior_mean_coef_x0", "posterior_mean_coef_xt", "eps_coef", "sqrt_alphas", "log_betas",
                "log_posterior_variance_clipped")


def _check_T(T) -> int:
    if isinstance(T, bool) or not isinstance(T, int):
        raise TypeError(f"T must be a positive int (number of diffusion steps), got {T!r} of type {type(T).__name__}")
    if T <= 0:
        raise ValueError(f"T must be a positive int (number of diffusion steps), got T={T}")
    return T


def check_timesteps(t, T: int, batch: int | None = None) -> torch.Tensor:
    """Validate code-index timesteps ``t`` and return them as a LongTensor of shape (B,) (see
    :func:`diffusion_lab.checks.timesteps`).

    ``t`` may be a Python int (broadcast to the batch) or an integer tensor of shape (B,) or ().
    Negative values are rejected rather than wrapped around, as Python indexing would do.
    """
    return checks.timesteps(t, T, batch)


def check_schedule(schedule) -> "NoiseSchedule":
    """``schedule`` if it is a :class:`NoiseSchedule`, else a TypeError saying what was given."""
    if not isinstance(schedule, NoiseSchedule):
        raise TypeError(f"schedule must be a NoiseSchedule (e.g. diffusion_lab.schedules.linear_schedule()), got "
                        f"{type(schedule).__name__}")
    return schedule


@dataclass(frozen=True)
class NoiseSchedule:
    """A variance schedule and its derived coefficients, all float64 of length T.

    Attributes (code index t ↔ paper step t+1):
      betas             β_t
      alphas            α_t = 1 − β_t
      alpha_bars        ᾱ_t = ∏_{s≤t} α_s                          (eq. 2.4)
      alpha_bars_prev   ᾱ_{t−1}, with ᾱ_0 = 1 at index 0
      posterior_variance β̃_t = (1 − ᾱ_{t−1}) / (1 − ᾱ_t) · β_t     (eq. 3.6); 0 at index 0
    """

    betas: torch.Tensor
    name: str = "custom"
    alphas: torch.Tensor = field(init=False, repr=False)
    alpha_bars: torch.Tensor = field(init=False, repr=False)
    alpha_bars_prev: torch.Tensor = field(init=False, repr=False)
    posterior_variance: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self):
        betas = self.betas
        if not isinstance(betas, torch.Tensor):
            betas = torch.as_tensor(betas)
        if betas.dim() != 1 or betas.numel() == 0:
            raise ValueError(f"betas must be a non-empty 1-D sequence, got shape {tuple(betas.shape)}")
        betas = betas.detach().to("cpu", torch.float64)
        if not torch.isfinite(betas).all():
            raise ValueError("betas must be finite")
        if not ((betas > 0) & (betas < 1)).all():
            bad = betas[(betas <= 0) | (betas >= 1)]
            raise ValueError(f"every beta must lie in the open interval (0, 1); got e.g. {bad[0].item():g}")
        alphas = 1.0 - betas
        alpha_bars = torch.cumprod(alphas, 0)
        alpha_bars_prev = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bars[:-1]])
        post_var = betas * (1.0 - alpha_bars_prev) / (1.0 - alpha_bars)
        for k, v in dict(betas=betas, alphas=alphas, alpha_bars=alpha_bars, alpha_bars_prev=alpha_bars_prev,
                         posterior_variance=post_var).items():
            object.__setattr__(self, k, v)
        object.__setattr__(self, "_tables", {})   # (name, device) → the coefficient on that device

    def table(self, name: str, device=None) -> torch.Tensor:
        """The float64 coefficient ``name`` (one of :data:`COEFFICIENTS`) on ``device``, copied there once and
        kept: the samplers gather from it every step with no host-device transfer."""
        device = torch.device("cpu") if device is None else torch.device(device)
        key = (name, device)
        tab = self._tables.get(key)
        if tab is None:
            if name not in COEFFICIENTS:
                raise unknown_name("schedule coefficient", name, COEFFICIENTS)
            tab = getattr(self, name).to(device)
            self._tables[key] = tab
        return tab

    # -- derived quantities -------------------------------------------------------------
    @property
    def T(self) -> int:
        return int(self.betas.shape[0])

    @property
    def sqrt_alpha_bars(self):
        return self.alpha_bars.sqrt()

    @property
    def sqrt_one_minus_alpha_bars(self):
        return (1.0 - self.alpha_bars).sqrt()

    @property
    def snr(self):
        """Signal-to-noise ratio ᾱ_t / (1 − ᾱ_t) of q(x_t | x_0)."""
        return self.alpha_bars / (1.0 - self.alpha_bars)

    @property
    def one_minus_alpha_bars(self):
        """1 − ᾱ_t, the variance of q(x_t | x_0)."""
        return 1.0 - self.alpha_bars

    @property
    def sqrt_alphas(self):
        """√α_t, the divisor of the mean (3.7)."""
        return self.alphas.sqrt()

    @property
    def eps_coef(self):
        """β_t / √(1 − ᾱ_t), the coefficient of ε in the mean (3.7)."""
        return self.betas / self.sqrt_one_minus_alpha_bars

    @property
    def log_betas(self):
        return self.betas.log()

    @property
    def log_posterior_variance_clipped(self):
        return self.posterior_variance_clipped.log()

    @property
    def posterior_variance_clipped(self):
        """β̃_t with index 0 (where β̃ = 0) replaced by β̃ at index 1, as improved-diffusion does
        for a usable log-variance of the decoder p(x_0 | x_1)."""
        v = self.posterior_variance.clone()
        if self.T > 1:
            v[0] = v[1]
        else:
            v[0] = self.betas[0]
        return v

    @property
    def posterior_mean_coef_x0(self):
        """Coefficient of x_0 in μ̃_t: √ᾱ_{t−1} β_t / (1 − ᾱ_t)   (eq. 3.5)."""
        return self.alpha_bars_prev.sqrt() * self.betas / (1.0 - self.alpha_bars)

    @property
    def posterior_mean_coef_xt(self):
        """Coefficient of x_t in μ̃_t: √α_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t)   (eq. 3.5)."""
        return self.alphas.sqrt() * (1.0 - self.alpha_bars_prev) / (1.0 - self.alpha_bars)

    def extract(self, coef, t, x: torch.Tensor) -> torch.Tensor:
        """Gather ``coef[t]`` (a name from :data:`COEFFICIENTS` or a float64 tensor of length T) and shape it
        (B, 1, …, 1) to broadcast over ``x``, in ``x``'s dtype and device.

        The one helper that gathers a per-timestep coefficient. It trusts ``t`` (an int, or an integer tensor
        of shape (B,) or (), whose values the caller checked): no host-device sync, so the samplers call it
        every step. Named coefficients come from a per-device table (:meth:`table`).
        """
        if isinstance(t, int):
            t = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
        elif t.dim() == 0:
            t = t.reshape(1).expand(x.shape[0])
        if isinstance(coef, str):
            coef = self.table(coef, t.device)
        else:
            coef = coef.to(t.device)
        out = coef[t]
        return out.to(device=x.device, dtype=x.dtype if x.dtype.is_floating_point else torch.float32).reshape(
            (-1,) + (1,) * (x.dim() - 1))

    def __repr__(self):
        return f"NoiseSchedule(name={self.name!r}, T={self.T}, beta_1={self.betas[0]:.3g}, beta_T={self.betas[-1]:.3g})"

    def to_config(self) -> dict:
        """A JSON-able description that :func:`get_schedule` turns back into this schedule."""
        if self.name.startswith("linear"):
            return {"name": "linear", "T": self.T, "beta_start": float(self.betas[0]), "beta_end": float(self.betas[-1])}
        if self.name.startswith("cosine"):
            return {"name": "cosine", "T": self.T, "s": getattr(self, "_s", 0.008),
                    "max_beta": getattr(self, "_max_beta", 0.999)}
        return {"name": "custom", "betas": self.betas.tolist()}


def linear_schedule(T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> NoiseSchedule:
    """β_t linearly interpolated from ``beta_start`` to ``beta_end`` — the seed's (and DDPM's) choice, eq. (2.1)."""
    T = _check_T(T)
    for nm, b in (("beta_start", beta_start), ("beta_end", beta_end)):
        if not (0.0 < float(b) < 1.0):
            raise ValueError(f"{nm} must lie in (0, 1), got {b}")
    betas = torch.linspace(float(beta_start), float(beta_end), T, dtype=torch.float64)
    return NoiseSchedule(betas, name="linear")


def cosine_schedule(T: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> NoiseSchedule:
    """Improved-DDPM cosine schedule: ᾱ(t) = f(t)/f(0), f(t) = cos²(((t/T + s)/(1 + s))·π/2),
    β_t = 1 − ᾱ(t)/ᾱ(t−1), clipped at ``max_beta`` (Nichol & Dhariwal 2021, eq. 17)."""
    T = _check_T(T)
    if not (s >= 0):
        raise ValueError(f"s must be >= 0, got {s}")
    if not (0.0 < max_beta < 1.0):
        raise ValueError(f"max_beta must lie in (0, 1), got {max_beta}")
    steps = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    abar = f / f[0]
    betas = (1 - abar[1:] / abar[:-1]).clamp(min=1e-12, max=max_beta)
    sch = NoiseSchedule(betas, name="cosine")
    object.__setattr__(sch, "_s", float(s))
    object.__setattr__(sch, "_max_beta", float(max_beta))
    return sch


_SCHEDULES = {"linear": linear_schedule, "cosine": cosine_schedule}


def get_schedule(name: str = "linear", **kwargs) -> NoiseSchedule:
    """Build a schedule by name (``"linear"`` or ``"cosine"``) or from a :meth:`NoiseSchedule.to_config` dict."""
    if isinstance(name, dict):
        cfg = dict(name)
        name = cfg.pop("name")
        kwargs = {**cfg, **kwargs}
    if name == "custom":
        return NoiseSchedule(torch.tensor(kwargs["betas"], dtype=torch.float64))
    if name not in _SCHEDULES:
        raise unknown_name("schedule", name, _SCHEDULES)
    return _SCHEDULES[name](**kwargs)
