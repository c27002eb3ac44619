"""Exact denoisers and classifiers for Gaussian data: the "perfect network" of a verification cell.

When the data are Gaussian, x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε is jointly Gaussian with ε, so the best possible
ε-prediction (the minimiser of L_simple, eq. 4.9) is the conditional mean, which is linear in x_t:

    x_0 ~ N(m, s² I):   E[ε | x_t] = √(1−ᾱ_t) / (ᾱ_t s² + 1 − ᾱ_t) · (x_t − √ᾱ_t m)

(Cov(ε, x_t) = √(1−ᾱ_t) I, Var(x_t) = (ᾱ_t s² + 1 − ᾱ_t) I.) A sampler driven by this oracle must give back
the data's mean and variance, which tests the sampler alone, with no network in the way.

For K equally likely classes x_0 | y ~ N(m_y, s² I), the class posterior at noise level t is a softmax of
−‖x_t − √ᾱ_t m_k‖² / (2 v_t), v_t = ᾱ_t s² + 1 − ᾱ_t, and the unconditional ε is the posterior-weighted
mixture of the per-class ε's. The two are tied by Bayes' rule,

    ε(x_t, t, y) = ε(x_t, t, ∅) − √(1−ᾱ_t) ∇_{x_t} log p(y | x_t),

which is what classifier guidance (book eq. 7.2) relies on, so guidance can be checked against it exactly.
"""
from __future__ import annotations

import torch

from .schedules import NoiseSchedule

__all__ = ["GaussianOracle", "GaussianMixtureOracle"]


def _as_item(value, dtype=torch.float64):
    return torch.as_tensor(value, dtype=dtype)


class GaussianOracle:
    """ε-model that is exact for data x_0 ~ N(``mean``, ``std``² I); a callable ``model(x_t, t, y=None)``.

    ``mean`` is a float or a tensor broadcastable to one item (e.g. shape (D,) or (C, H, W)).
    """

    def __init__(self, schedule: NoiseSchedule, mean=0.0, std: float = 1.0):
        if not float(std) > 0:
            raise ValueError(f"std must be > 0, got {std}")
        self.schedule, self.mean, self.std = schedule, _as_item(mean), float(std)

    def var_xt(self, t, x):
        """Var(x_t) per coordinate: ᾱ_t s² + 1 − ᾱ_t, shaped to broadcast over x."""
        ab = self.schedule.extract("alpha_bars", t, x)
        return ab * self.std ** 2 + 1 - ab

    def __call__(self, x_t, t, y=None):
        ab = self.schedule.extract("alpha_bars", t, x_t)
        m = self.mean.to(x_t.device, x_t.dtype)
        return (1 - ab).sqrt() / (ab * self.std ** 2 + 1 - ab) * (x_t - ab.sqrt() * m)


class GaussianMixtureOracle:
    """Exact class-conditional ε-model for K equally likely classes x_0 | y ~ N(means[y], std² I).

    ``model(x_t, t, y)`` gives the class-conditional ε for labels in [0, K) and the unconditional (mixture) ε
    for the null label K (or for ``y=None``), exactly like a CFG model trained with label dropout.
    :meth:`classifier` is the exact noise-aware classifier ``classifier(x_t, t) -> logits`` (log p(y | x_t)),
    differentiable in x_t. ``means`` has shape (K, *item_shape).
    """

    def __init__(self, schedule: NoiseSchedule, means, std: float = 1.0):
        means = _as_item(means)
        if means.dim() < 2:
            raise ValueError(f"means must have shape (K, *item_shape), got {tuple(means.shape)}")
        if not float(std) > 0:
            raise ValueError(f"std must be > 0, got {std}")
        self.schedule, self.means, self.std = schedule, means, float(std)
        self.num_classes = int(means.shape[0])

    def _parts(self, x_t, t):
        ab = self.schedule.extract("alpha_bars", t, x_t)                     # (B, 1, …)
        v = ab * self.std ** 2 + 1 - ab
        m = self.means.to(x_t.device, x_t.dtype)                              # (K, *item)
        diff = x_t.unsqueeze(1) - ab.sqrt().unsqueeze(1) * m.unsqueeze(0)    # (B, K, *item)
        return ab, v, diff

    def classifier(self, x_t, t):
        """Exact logits log p(y | x_t) of shape (B, K)."""
        ab, v, diff = self._parts(x_t, t)
        sq = diff.pow(2).flatten(2).sum(-1)                                   # (B, K)
        return torch.log_softmax(-sq / (2 * v.reshape(-1, 1)), dim=1)

    def __call__(self, x_t, t, y=None):
        ab, v, diff = self._parts(x_t, t)
        coef = ((1 - ab).sqrt() / v).unsqueeze(1)                            # (B, 1, 1, …)
        eps_k = coef * diff                                                   # (B, K, *item)
        post = self.classifier(x_t, t).exp()                                  # (B, K)
        eps_uncond = (post.reshape(post.shape + (1,) * (x_t.dim() - 1)) * eps_k).sum(1)
        if y is None:
            return eps_uncond
        y = torch.as_tensor(y, dtype=torch.long, device=x_t.device).reshape(-1).expand(x_t.shape[0])
        if int(y.min()) < 0 or int(y.max()) > self.num_classes:
            raise ValueError(f"labels must lie in [0, {self.num_classes}] (the null label included)")
        is_null = y == self.num_classes
        eps_cond = eps_k[torch.arange(x_t.shape[0], device=x_t.device), y.clamp(max=self.num_classes - 1)]
        mask = is_null.reshape((-1,) + (1,) * (x_t.dim() - 1))
        return torch.where(mask, eps_uncond, eps_cond)
