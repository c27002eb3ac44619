"""The variational bound (book chapter 4): KL between Gaussians, the discretized decoder, L_T, L_{t-1}, L_0, bits/dim.

  (4.6)  L_vlb = L_T + Σ_{t≥2} L_{t-1} + L_0
         L_T     = KL(q(x_T | x_0) ‖ p(x_T))                                  :func:`prior_kl`
         L_{t-1} = KL(q(x_{t-1} | x_t, x_0) ‖ p_θ(x_{t-1} | x_t))             :func:`vlb_terms`
         L_0     = −log p_θ(x_0 | x_1)                                         :func:`discretized_gaussian_log_likelihood`
  (4.7)  KL(N(μ₁, σ₁²) ‖ N(μ₂, σ₂²)) = log(σ₂/σ₁) + (σ₁² + (μ₁−μ₂)²)/(2σ₂²) − ½  :func:`normal_kl`

Bits per dimension divide nats by D·log 2. On data that lives on a grid of K levels in [-1, 1]
(256 for 8-bit images, 17 for sklearn's digits) L_0 is a discrete probability, so the bound is an
upper bound on the negative log-likelihood of the discrete data. For continuous data (2-D toys) use
``decoder="continuous"``: L_0 is then a negative log-density and the bound bounds −log p(x_0).
"""
from __future__ import annotations

import math

import torch

from . import checks
from .diffusion import VARIANCES, call_model, p_mean_variance, q_mean_variance, q_posterior, q_sample
from .schedules import NoiseSchedule, check_schedule

__all__ = ["normal_kl", "discretized_gaussian_log_likelihood", "gaussian_log_likelihood", "prior_kl", "vlb_terms",
           "bits_per_dim", "DECODERS"]

DECODERS = ("discretized", "continuous")


def normal_kl(mean1, logvar1, mean2, logvar2) -> torch.Tensor:
    """Elementwise KL(N(mean1, e^{logvar1}) ‖ N(mean2, e^{logvar2})) in nats, eq. (4.7).

    Arguments broadcast; scalars are allowed. The denominator is 2σ₂² — not 2‖σ²I‖² as the seed writes.
    """
    tensor = next((a for a in (mean1, logvar1, mean2, logvar2) if isinstance(a, torch.Tensor)), None)
    if tensor is None:
        raise TypeError("normal_kl needs at least one torch.Tensor argument")
    logvar1, logvar2 = (a if isinstance(a, torch.Tensor) else torch.tensor(a, dtype=tensor.dtype, device=tensor.device)
                        for a in (logvar1, logvar2))
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def _log_ndtr(x):
    return torch.special.log_ndtr(x)


def discretized_gaussian_log_likelihood(x: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor,
                                        num_bins: int = 256) -> torch.Tensor:
    """log P(x) of the decoder that turns N(means, e^{2 log_scales}) into a distribution over ``num_bins``
    evenly spaced levels in [-1, 1] (DDPM §3.3). The outermost bins extend to ±∞, so the probabilities of
    all bins sum to exactly 1. ``x`` must lie on that grid. Returns elementwise log-probabilities (nats)."""
    if not isinstance(num_bins, int) or num_bins < 2:
        raise ValueError(f"num_bins must be an int >= 2, got {num_bins!r}")
    if x.shape != means.shape:
        raise ValueError(f"x and means must have the same shape, got {tuple(x.shape)} and {tuple(means.shape)}")
    half = 1.0 / (num_bins - 1)  # half the bin width 2/(K-1)
    grid = (x + 1) / (2 * half)
    if (grid - grid.round()).abs().max() > 1e-3 or x.min() < -1 - 1e-6 or x.max() > 1 + 1e-6:
        raise ValueError(f"x must lie on the {num_bins}-level grid in [-1, 1] (step {2 * half:g}); "
                         "pass num_bins matching your data (256 for 8-bit images, 17 for sklearn digits) "
                         "or use the continuous decoder")
    inv_std = torch.exp(-log_scales)
    upper = inv_std * (x - means + half)
    lower = inv_std * (x - means - half)
    log_cdf_upper = _log_ndtr(upper)            # log Φ(upper)
    log_sf_lower = _log_ndtr(-lower)            # log (1 − Φ(lower))
    # log(Φ(upper) − Φ(lower)), computed on the side of the distribution where it is not a tiny difference
    mid = torch.where(
        lower > 0,
        _log_ndtr(-lower) + torch.log1p(-torch.exp((_log_ndtr(-upper) - _log_ndtr(-lower)).clamp(max=-1e-12))),
        log_cdf_upper + torch.log1p(-torch.exp((_log_ndtr(lower) - log_cdf_upper).clamp(max=-1e-12))),
    )
    lo_edge = x < -1 + 1e-3 * half
    hi_edge = x > 1 - 1e-3 * half
    return torch.where(lo_edge, log_cdf_upper, torch.where(hi_edge, log_sf_lower, mid))


def gaussian_log_likelihood(x, means, log_scales):
    """Elementwise log N(x; means, e^{2 log_scales}) — the continuous decoder (nats)."""
    return -0.5 * (math.log(2 * math.pi) + 2 * log_scales + ((x - means) * torch.exp(-log_scales)) ** 2)


def prior_kl(schedule: NoiseSchedule, x0: torch.Tensor) -> torch.Tensor:
    """L_T = KL(q(x_T | x_0) ‖ N(0, I)) per item, in nats (summed over dimensions)."""
    check_schedule(schedule)
    B = x0.shape[0]
    t = torch.full((B,), schedule.T - 1, dtype=torch.long, device=x0.device)
    mean, var = q_mean_variance(schedule, x0, t)
    return normal_kl(mean, var.log(), torch.zeros_like(mean), torch.zeros_like(mean)).reshape(B, -1).sum(1)


@torch.no_grad()
def vlb_terms(model, schedule: NoiseSchedule, x0: torch.Tensor, *, y=None, variance: str = "beta",
              decoder: str = "discretized", num_bins: int = 256, generator=None, timesteps=None) -> dict:
    """Every term of the bound (4.6) for a batch x_0, one Monte Carlo draw of x_t per term, in nats per item.

    Returns a dict with
      ``terms``  (B, T): column t is L_t in code index — column 0 is L_0 = −log p_θ(x_0|x_1),
                 column t ≥ 1 is KL(q(x_{t}|x_{t+1},x_0) ‖ p_θ(x_{t}|x_{t+1})) in the paper's numbering,
      ``prior``  (B,):  L_T,
      ``total``  (B,):  L_T + Σ terms,
      ``bpd``    (B,):  total / (D log 2), and ``terms_bpd`` (B, T).
    ``timesteps`` restricts the loop to some code indices (the others stay NaN and ``total`` is NaN).
    ``variance`` may be a tuple such as ``("beta", "beta_tilde")``: then one network call per step serves every
    choice, all choices see the same draws of x_t (so their difference has little Monte Carlo noise), and the
    result is a dict ``{variance: result}``.
    """
    check_schedule(schedule)
    checks.choice(decoder, DECODERS, f"decoder must be one of {DECODERS}, got {decoder!r}")
    several = isinstance(variance, (tuple, list))
    variances = tuple(variance) if several else (variance,)
    if not variances or len(set(variances)) != len(variances):
        raise ValueError(f"variance must be one of {VARIANCES} or a tuple of distinct ones, got {variance!r}")
    for v in variances:
        checks.choice(v, VARIANCES, f"variance must be one of {VARIANCES} or a tuple of them, got {v!r}")
    B = x0.shape[0]
    D = x0[0].numel()
    T = schedule.T
    terms = {v: torch.full((B, T), float("nan"), dtype=torch.float64) for v in variances}
    steps = range(T) if timesteps is None else [int(s) for s in timesteps]
    for s in steps:
        t = torch.full((B,), s, dtype=torch.long, device=x0.device)
        x_t = q_sample(schedule, x0, t, generator=generator)
        eps = call_model(model, x_t, t, y)          # one network call serves every variance choice
        if s > 0:
            true_mean, true_var = q_posterior(schedule, x0, x_t, t)
        for v in variances:
            out = p_mean_variance(model, schedule, x_t, t, y=y, variance=v, eps=eps)
            if s == 0:
                log_scales = 0.5 * out["log_variance"]
                if decoder == "discretized":
                    term = -discretized_gaussian_log_likelihood(x0, out["mean"], log_scales, num_bins=num_bins)
                else:
                    term = -gaussian_log_likelihood(x0, out["mean"], log_scales)
            else:
                term = normal_kl(true_mean, true_var.log(), out["mean"], out["log_variance"])
            terms[v][:, s] = term.reshape(B, -1).sum(1).double().cpu()
    prior = prior_kl(schedule, x0).double().cpu()
    scale = D * math.log(2.0)
    results = {}
    for v in variances:
        total = prior + terms[v].sum(1)
        results[v] = {"terms": terms[v], "prior": prior, "total": total, "bpd": total / scale,
                      "terms_bpd": terms[v] / scale, "prior_bpd": prior / scale}
    return results if several else results[variance]


def bits_per_dim(model, schedule: NoiseSchedule, x0: torch.Tensor, **kwargs) -> float:
    """The full bound (4.6) in bits per dimension, averaged over the batch (see :func:`vlb_terms`)."""
    return float(vlb_terms(model, schedule, x0, **kwargs)["bpd"].mean())
