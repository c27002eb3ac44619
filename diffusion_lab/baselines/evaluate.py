"""Judging 2-D samples (book chapter 1): two-sample distances, mode coverage on 8 Gaussians, a Gaussian baseline.

* :func:`energy_distance` (Székely & Rizzo 2013), the chapter's measure of sample quality; it has no kernel and no
  bandwidth to choose:   E(P, Q) = 2 E‖X − Y‖ − E‖X − X'‖ − E‖Y − Y'‖ ≥ 0, with equality iff P = Q.
* :func:`mmd2`: squared maximum mean discrepancy with a sum of Gaussian kernels
  k(a, b) = Σ_h exp(−‖a − b‖² / (2h²)), bandwidths h = 0.05, 0.1, 0.2, 0.5, 1 by default (the 8 Gaussians have
  σ = 0.1 and sit 1.15 apart).
Both use unbiased U-statistics for the within-sample terms, so their estimate can dip slightly below 0 when P = Q.

* :func:`mode_coverage`: which of the 8 Gaussians receive samples. A sample belongs to a mode if it lies within
  3σ = 0.3 of its centre; a mode is covered when it gets at least a quarter of its fair share n/8.
* :class:`SampleJudge`: all of the above for one set of samples against fixed held-out points, each set judged
  once (chapter 1's comparison tables look the same samples up several times).
"""
from __future__ import annotations

import math

import torch

__all__ = ["energy_distance", "mmd2", "mode_coverage", "SampleJudge", "FittedGaussian", "eight_gaussians_mixture",
           "EIGHT_GAUSSIANS_CENTERS", "EIGHT_GAUSSIANS_STD", "DEFAULT_BANDWIDTHS"]

# The same construction as diffusion_lab.data.make_toy("eight_gaussians"): centres on a circle of radius 1.5.
EIGHT_GAUSSIANS_CENTERS = torch.tensor([[1.5 * math.cos(2 * math.pi * k / 8), 1.5 * math.sin(2 * math.pi * k / 8)]
                                        for k in range(8)], dtype=torch.float64)
EIGHT_GAUSSIANS_STD = 0.1
DEFAULT_BANDWIDTHS = (0.05, 0.1, 0.2, 0.5, 1.0)


def _pair(x, y):
    for name, a in (("x", x), ("y", y)):
        if not isinstance(a, torch.Tensor) or a.dim() != 2 or a.shape[0] < 2:
            raise ValueError(f"{name} must be a tensor of shape (N, D) with N >= 2, "
                             f"got {tuple(a.shape) if isinstance(a, torch.Tensor) else type(a).__name__}")
        if not torch.isfinite(a).all():
            raise ValueError(f"{name} holds NaN or infinite values (a diverged model?)")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same dimension, got {x.shape[1]} and {y.shape[1]}")
    return x.double(), y.double()


def _within_mean(k: torch.Tensor) -> torch.Tensor:
    n = k.shape[0]
    return (k.sum() - k.diagonal().sum()) / (n * (n - 1))


def energy_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    """Energy distance between samples x (N, D) and y (M, D): 2E‖X−Y‖ − E‖X−X'‖ − E‖Y−Y'‖ (U-statistics)."""
    x, y = _pair(x, y)
    return _energy(x, y, _energy_within(y))


def _energy_within(y: torch.Tensor) -> torch.Tensor:
    return _within_mean(torch.cdist(y, y))


def _energy(x: torch.Tensor, y: torch.Tensor, yy: torch.Tensor) -> float:
    """The energy distance of checked float64 samples, given y's within-sample term ``yy``."""
    return float(2 * torch.cdist(x, y).mean() - _within_mean(torch.cdist(x, x)) - yy)


def _bandwidths(bandwidths) -> list[float]:
    hs = [float(h) for h in bandwidths]
    if not hs or any(not h > 0 for h in hs):
        raise ValueError(f"bandwidths must be positive numbers, got {bandwidths!r}")
    return hs


def _kernel(a: torch.Tensor, b: torch.Tensor, hs: list[float]) -> torch.Tensor:
    d2 = torch.cdist(a, b) ** 2
    return sum(torch.exp(-d2 / (2 * h * h)) for h in hs)


def _mmd2(x: torch.Tensor, y: torch.Tensor, hs: list[float], kyy: torch.Tensor) -> float:
    """The squared MMD of checked float64 samples, given y's within-sample term ``kyy``."""
    return float(_within_mean(_kernel(x, x, hs)) + kyy - 2 * _kernel(x, y, hs).mean())


def mmd2(x: torch.Tensor, y: torch.Tensor, bandwidths=DEFAULT_BANDWIDTHS) -> float:
    """Unbiased squared MMD with the kernel Σ_h exp(−‖a−b‖²/(2h²)) over ``bandwidths``."""
    x, y = _pair(x, y)
    hs = _bandwidths(bandwidths)
    return _mmd2(x, y, hs, _within_mean(_kernel(y, y, hs)))


def mode_coverage(samples: torch.Tensor, centers: torch.Tensor = EIGHT_GAUSSIANS_CENTERS,
                  std: float = EIGHT_GAUSSIANS_STD, *, radius_sd: float = 3.0, min_share: float = 0.25) -> dict:
    """Mode coverage of ``samples`` (N, 2) on a mixture with the given centres and standard deviation.

    Returns ``{"covered": int, "counts": [per-mode counts], "in_mode": fraction of samples within
    radius_sd·std of some centre}``; a mode is covered when its count ≥ ``min_share`` · N / K.
    """
    if not isinstance(samples, torch.Tensor) or samples.dim() != 2 or samples.shape[1] != centers.shape[1]:
        raise ValueError(f"samples must have shape (N, {centers.shape[1]}), "
                         f"got {tuple(samples.shape) if isinstance(samples, torch.Tensor) else type(samples).__name__}")
    if not 0 < min_share <= 1:
        raise ValueError(f"min_share must lie in (0, 1], got {min_share}")
    d = torch.cdist(samples.double(), centers.double())
    dmin, which = d.min(1)
    near = dmin <= radius_sd * std
    K, n = centers.shape[0], samples.shape[0]
    counts = torch.bincount(which[near], minlength=K)
    covered = int((counts >= min_share * n / K).sum())
    return {"covered": covered, "counts": counts.tolist(), "in_mode": float(near.double().mean())}


class SampleJudge:
    """The measures of chapter 1's comparison for sets of 2-D samples against fixed held-out points.

    ``judge = SampleJudge(x_held)``, then ``judge(samples)`` returns a new dict with

    * ``"energy"``: :func:`energy_distance` to the held-out points,
    * ``"mmd"``: :func:`mmd2` to the held-out points,
    * ``"modes"`` and ``"in_mode"``: modes covered and the fraction of samples inside some mode
      (:func:`mode_coverage` with ``centers`` and ``std``, the 8 Gaussians by default).

    Each set of samples is judged once: the result is kept for that tensor object (a reference to it is held, so its
    ``id`` cannot be reused) and computed again only if the tensor was changed in place since. A different tensor
    with the same values is judged afresh. ``evaluations`` counts the sets actually judged. The reference's own
    within-sample terms of the two distances are computed once, so a judgement costs what the samples add.
    """

    def __init__(self, reference: torch.Tensor, centers: torch.Tensor = EIGHT_GAUSSIANS_CENTERS,
                 std: float = EIGHT_GAUSSIANS_STD):
        if not isinstance(reference, torch.Tensor) or reference.dim() != 2 or reference.shape[0] < 2:
            got = tuple(reference.shape) if isinstance(reference, torch.Tensor) else type(reference).__name__
            raise ValueError(f"reference must be the held-out points, a tensor of shape (N, D) with N >= 2, got {got}")
        if not isinstance(centers, torch.Tensor) or centers.dim() != 2 or centers.shape[1] != reference.shape[1]:
            raise ValueError(f"centers must have shape (K, {reference.shape[1]}), the reference's dimension")
        if not std > 0:
            raise ValueError(f"std must be > 0, got {std!r}")
        self.reference, self.centers, self.std = reference, centers, float(std)
        self._ref = _pair(reference, reference)[0]
        self._hs = _bandwidths(DEFAULT_BANDWIDTHS)
        self._ref_terms = None            # the reference's within-sample terms, computed once, at the first call
        self.evaluations = 0
        self._cache: dict[int, tuple[torch.Tensor, int, dict]] = {}

    def __call__(self, samples: torch.Tensor) -> dict:
        if not isinstance(samples, torch.Tensor):
            raise TypeError(f"samples must be a tensor of shape (N, {self.reference.shape[1]}), "
                            f"got {type(samples).__name__}")
        hit = self._cache.get(id(samples))
        if hit is not None and hit[0] is samples and hit[1] == samples._version:
            return dict(hit[2])
        cov = mode_coverage(samples, self.centers, self.std)
        x, y = _pair(samples, self._ref)
        if self._ref_terms is None:
            self._ref_terms = (_energy_within(y), _within_mean(_kernel(y, y, self._hs)))
        result = {"energy": _energy(x, y, self._ref_terms[0]), "mmd": _mmd2(x, y, self._hs, self._ref_terms[1]),
                  "modes": cov["covered"], "in_mode": cov["in_mode"]}
        self._cache[id(samples)] = (samples, samples._version, result)
        self.evaluations += 1
        return dict(result)


def eight_gaussians_mixture():
    """The true density of ``make_toy("eight_gaussians")`` as a :class:`diffusion_lab.gaussian_mixture.GaussianMixture`."""
    from ..gaussian_mixture import GaussianMixture
    return GaussianMixture(torch.full((8,), 1 / 8), EIGHT_GAUSSIANS_CENTERS, stds=EIGHT_GAUSSIANS_STD)


class FittedGaussian:
    """The simplest baseline: one Gaussian with the data's mean and covariance (maximum likelihood)."""

    def __init__(self, x: torch.Tensor):
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[0] <= x.shape[1]:
            raise ValueError("FittedGaussian needs x of shape (N, D) with N > D")
        x = x.double()
        self.mean = x.mean(0)
        self.cov = torch.cov(x.T).reshape(x.shape[1], x.shape[1])
        self.dist = torch.distributions.MultivariateNormal(self.mean, self.cov)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return self.dist.log_prob(x.double())

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        L = torch.linalg.cholesky(self.cov)
        z = torch.randn(n, self.mean.numel(), generator=generator, dtype=torch.float64)
        return (self.mean + z @ L.T).float()
