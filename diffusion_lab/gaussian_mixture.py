"""Gaussian mixtures and their exact optimal denoiser (book chapters 4 and 6).

A mixture stays a mixture under the forward process (2.4). If q(x_0) = Σ_k w_k N(μ_k, Σ_k), then, eq. (4.10),

    q_t(x_t) = Σ_k w_k N(x_t; √ᾱ_t μ_k, ᾱ_t Σ_k + (1 − ᾱ_t) I),

so the score ∇ log q_t is known in closed form, and with it the best ε-model any network could learn
under L_simple, eq. (4.11) (Tweedie's formula):

    ε*(x_t, t) = E[ε | x_t] = −√(1 − ᾱ_t) ∇_{x_t} log q_t(x_t).

Its mean μ_θ (3.7) is then the true reverse mean E[x_{t−1} | x_t], which makes the variational bound of
chapter 4 computable for a "perfect" model and comparable with the exact −log q(x_0).

Each covariance is diagonalised once, Σ_k = U_k diag(λ_k) U_kᵀ. Adding isotropic noise keeps the eigenvectors,
ᾱΣ_k + (1 − ᾱ)I = U_k diag(ᾱλ_k + 1 − ᾱ) U_kᵀ, so densities and scores at any ᾱ — one per batch item —
cost O(B·K·D²) with no new factorisation. Everything is computed in float64.

With labels, each component is a class: x_0 | y=k ~ N(μ_k, Σ_k), p(y=k) = w_k. Then the class-conditional ε-model
is the component's own ε_k = −√(1 − ᾱ_t) ∇ log N_k(x_t), the unconditional one is their posterior-weighted mean
(the same formula as above), and the exact noise-aware classifier is the posterior of the components,

    log p(y=k | x_t) = log w_k + log N_k(x_t) − log q_t(x_t),

tied to the ε's by Bayes' rule, ε(x_t, t, y) = ε(x_t, t, ∅) − √(1−ᾱ_t) ∇_{x_t} log p(y | x_t) — what classifier
guidance (book eq. 7.2) relies on, so the samplers' guidance can be checked against it exactly. A single
Gaussian, x_0 ~ N(m, s² I), is the one-component case, where the best ε is linear in x_t:

    E[ε | x_t] = √(1−ᾱ_t) / (ᾱ_t s² + 1 − ᾱ_t) · (x_t − √ᾱ_t m).

Flow matching (book chapter 9) uses the straight path x_t = (1 − t) x_0 + t ε, t ∈ [0, 1]. Given component k,
x_t ~ N((1 − t) μ_k, C_k) with C_k = (1 − t)² Σ_k + t² I, and (x_0, ε, x_t) are jointly Gaussian, so the velocity
that minimises the flow-matching loss, the posterior mean of the target ε − x_0, is in closed form (eq. 9.9):

    v*(x, t) = Σ_k r_k(x) [ (t I − (1 − t) Σ_k) C_k⁻¹ (x − (1 − t) μ_k) − μ_k ],

r_k the responsibilities under the path's marginal at t (:meth:`GaussianMixture.flow_velocity`). It is regular at
both ends, t = 0 (the data) and t = 1 (pure noise).

This is the package's one exact oracle: :class:`OptimalDenoiser` (any mixture, optionally with labels),
:func:`GaussianOracle` (one isotropic Gaussian) and :func:`GaussianMixtureOracle` (K equally likely isotropic
classes, with ``.classifier``) are all the same object.

Code index t ∈ {0, …, T−1} is the paper's step t+1, as everywhere in the package.
"""
from __future__ import annotations

import math

import torch

from . import checks
from .schedules import NoiseSchedule, check_schedule, check_timesteps

__all__ = ["GaussianMixture", "OptimalDenoiser", "optimal_eps_model", "example_mixture_2d", "GaussianOracle",
           "GaussianMixtureOracle"]

_F64 = torch.float64


class GaussianMixture:
    """q(x) = Σ_k w_k N(x; μ_k, Σ_k) in D dimensions.

    ``weights`` (K,) positive (normalised to sum to 1); ``means`` (K, D); and either ``covs`` (K, D, D),
    symmetric positive definite, or ``stds`` — isotropic standard deviations, a number or shape (K,),
    giving Σ_k = stds_k² I.
    """

    def __init__(self, weights, means, covs=None, *, stds=None):
        means = torch.as_tensor(means, dtype=_F64)
        if means.dim() != 2:
            raise ValueError(f"means must have shape (K, D), got {tuple(means.shape)}")
        K, D = means.shape
        weights = torch.as_tensor(weights, dtype=_F64).reshape(-1)
        if weights.shape[0] != K:
            raise ValueError(f"got {weights.shape[0]} weights for {K} means")
        if not (weights > 0).all():
            raise ValueError("mixture weights must be positive")
        if (covs is None) == (stds is None):
            raise ValueError("give exactly one of covs (K, D, D) or stds (isotropic, a number or shape (K,))")
        if covs is not None:
            covs = torch.as_tensor(covs, dtype=_F64)
            if covs.shape != (K, D, D):
                raise ValueError(f"covs must have shape (K, D, D) = ({K}, {D}, {D}), got {tuple(covs.shape)}")
            if not torch.allclose(covs, covs.transpose(1, 2), atol=1e-12):
                raise ValueError("covs must be symmetric")
            evals, evecs = torch.linalg.eigh(covs)
        else:
            stds = torch.as_tensor(stds, dtype=_F64).reshape(-1)
            if stds.numel() == 1:
                stds = stds.expand(K)
            if stds.shape[0] != K:
                raise ValueError(f"stds must be a number or have shape (K,) = ({K},), got {tuple(stds.shape)}")
            evals = (stds ** 2)[:, None].expand(K, D).clone()
            evecs = torch.eye(D, dtype=_F64).expand(K, D, D).clone()
        if not (evals > 0).all():
            raise ValueError("every covariance must be positive definite")
        self.weights = weights / weights.sum()
        self.means = means
        self.evals = evals      # (K, D): eigenvalues λ_k of Σ_k
        self.evecs = evecs      # (K, D, D): columns are the eigenvectors U_k

    # ------------------------------------------------------------------ basics
    @property
    def K(self) -> int:
        return int(self.means.shape[0])

    @property
    def D(self) -> int:
        return int(self.means.shape[1])

    @property
    def covs(self) -> torch.Tensor:
        """Σ_k = U_k diag(λ_k) U_kᵀ, shape (K, D, D)."""
        return self.evecs @ torch.diag_embed(self.evals) @ self.evecs.transpose(1, 2)

    def mean(self) -> torch.Tensor:
        """E[x] = Σ_k w_k μ_k."""
        return self.weights @ self.means

    def cov(self) -> torch.Tensor:
        """Cov[x] = Σ_k w_k (Σ_k + μ_k μ_kᵀ) − E[x] E[x]ᵀ."""
        m = self.mean()
        second = (self.weights[:, None, None] * (self.covs + self.means[:, :, None] * self.means[:, None, :])).sum(0)
        return second - torch.outer(m, m)

    def __repr__(self):
        return f"GaussianMixture(K={self.K}, D={self.D})"

    def sample(self, n: int, generator: torch.Generator | None = None, *, dtype=torch.float64,
               return_labels: bool = False):
        """``n`` draws x ~ q, shape (n, D) (and the component of each draw if ``return_labels``)."""
        if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
            raise ValueError(f"n must be a positive int, got {n!r}")
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.D, generator=generator, dtype=_F64)
        x = self.means[k] + torch.einsum("nij,nj->ni", self.evecs[k], self.evals[k].sqrt() * z)
        x = x.to(dtype)
        return (x, k) if return_labels else x

    # ------------------------------------------------------------------ densities
    def _flat(self, x):
        x = torch.as_tensor(x)
        if x.dim() == 1 and self.D == 1:
            x = x[:, None]
        if x.dim() < 2 or x[0].numel() != self.D:
            raise ValueError(f"x must have shape (B, {self.D}) (or (B, ...) with {self.D} numbers per item), "
                             f"got {tuple(x.shape)}")
        return x.reshape(x.shape[0], self.D).to(_F64)

    def _components(self, x, alpha_bar):
        """For x (B, D) float64 and ᾱ (B,) float64, the diffused mixture's per-component terms:
        log w_k + log N_k(x) (B, K) and ∇ log N_k(x) (B, K, D)."""
        ab = alpha_bar[:, None, None]
        d = x[:, None, :] - ab.sqrt() * self.means[None]                    # (B, K, D)
        z = torch.einsum("kji,bkj->bki", self.evecs, d)                      # U_kᵀ d
        v = ab * self.evals[None] + (1.0 - ab)                               # eigenvalues of ᾱΣ_k + (1−ᾱ)I
        log_n = -0.5 * ((z ** 2 / v) + v.log() + math.log(2 * math.pi)).sum(-1)
        grad = -torch.einsum("kij,bkj->bki", self.evecs, z / v)             # −C_k⁻¹ d
        return self.weights.log()[None] + log_n, grad

    def flow_velocity(self, x, t) -> torch.Tensor:
        """The optimal flow-matching velocity v*(x, t) = E[ε − x_0 | x_t = x] on the straight path
        x_t = (1 − t) x_0 + t ε, t ∈ [0, 1] a number or shape (B,); shape (B, D), float64 (see the module
        docstring, book eq. 9.9)."""
        x = self._flat(x)
        t = torch.as_tensor(t, dtype=_F64).reshape(-1).expand(x.shape[0])
        if not bool(((t >= 0) & (t <= 1)).all()):
            raise ValueError("flow-matching time t must lie in [0, 1] (0 = data, 1 = noise)")
        a, s = (1.0 - t)[:, None, None], t[:, None, None]
        d = x[:, None, :] - a * self.means[None]                            # (B, K, D)
        z = torch.einsum("kji,bkj->bki", self.evecs, d)                      # U_kᵀ d
        v = a ** 2 * self.evals[None] + s ** 2                               # eigenvalues of C_k
        log_n = -0.5 * ((z ** 2 / v) + v.log()).sum(-1)
        resp = torch.softmax(self.weights.log()[None] + log_n, dim=1)        # r_k(x) under the path at t
        # (t I − (1 − t) Σ_k) C_k⁻¹ d, in the eigenbasis: (t − (1 − t) λ) / ((1 − t)² λ + t²)
        comp = torch.einsum("kij,bkj->bki", self.evecs, (s - a * self.evals[None]) / v * z) - self.means[None]
        return (resp[:, :, None] * comp).sum(1)

    def _log_prob_score(self, x, alpha_bar):
        logw, grad = self._components(x, alpha_bar)
        log_q = torch.logsumexp(logw, dim=1)
        resp = torch.softmax(logw, dim=1)                                    # responsibilities r_k(x)
        return log_q, (resp[:, :, None] * grad).sum(1)

    def log_prob(self, x) -> torch.Tensor:
        """log q(x) per item, shape (B,), float64 (nats)."""
        x = self._flat(x)
        return self._log_prob_score(x, torch.ones(x.shape[0], dtype=_F64))[0]

    def score(self, x) -> torch.Tensor:
        """∇_x log q(x), shape (B, D), float64."""
        x = self._flat(x)
        return self._log_prob_score(x, torch.ones(x.shape[0], dtype=_F64))[1]

    def responsibilities(self, x) -> torch.Tensor:
        """P(component k | x), shape (B, K)."""
        x = self._flat(x)
        return torch.softmax(self._components(x, torch.ones(x.shape[0], dtype=_F64))[0], dim=1)

    def diffuse(self, alpha_bar: float) -> "GaussianMixture":
        """The law of √ᾱ x + √(1−ᾱ) ε for x ~ q, ε ~ N(0, I): eq. (4.10)."""
        ab = float(alpha_bar)
        if not 0.0 < ab <= 1.0:
            raise ValueError(f"alpha_bar must lie in (0, 1], got {alpha_bar}")
        out = GaussianMixture.__new__(GaussianMixture)
        out.weights = self.weights
        out.means = math.sqrt(ab) * self.means
        out.evals = ab * self.evals + (1.0 - ab)
        out.evecs = self.evecs
        return out


class OptimalDenoiser:
    """The exact minimiser of L_simple (4.9) for data drawn from ``mixture``: ε*(x_t, t) = E[ε | x_t], eq. (4.11).

    Call it like any denoiser, ``model(x_t, t, y=None) -> ε``; x_t has shape (B, D) or (B, ...) with D numbers per
    item, t is a code index (an int or a LongTensor of shape (B,), possibly different per item). Computation is in
    float64; the result has x_t's dtype and device.

    With ``conditional=False`` (the default) ``y`` is ignored. With ``conditional=True`` each component is a class
    (``num_classes`` = K): ``y`` in [0, K) gives that component's ε, the null label K (or ``y=None``) the mixture's,
    exactly like a CFG model trained with label dropout; :meth:`classifier` is the exact noise-aware classifier.

    With ``labels`` (one class per component, shape (K,), values 0 … C−1, every class owning at least one
    component) a class may own a *group* of components: the data of class y is the sub-mixture of its components,
    q(x_0 | y) = Σ_{k: label_k = y} w_k N(μ_k, Σ_k) / p(y) with p(y) = Σ_{k: label_k = y} w_k (:meth:`sub_mixture`,
    :attr:`label_prior`), and ``num_classes`` = C. This is the exact conditional denoiser of book chapter 8:

    * ``model(x_t, t, y)`` for y in [0, C) is ε*(x_t, t, y) = E[ε | x_t, y] = −√(1−ᾱ_t) ∇ log q_t(x_t | y)
      (Tweedie, eq. 4.11, applied to the sub-mixture): the responsibility-weighted score of y's own components;
    * the null label C (or ``y=None``) gives ε*(x_t, t, ∅) = E[ε | x_t], the whole mixture's, which is the
      posterior average Σ_y p_t(y | x_t) ε*(x_t, t, y) of eq. (8.5) — what label dropout (8.4) trains ∅ towards;
    * :meth:`classifier` gives log p_t(y | x_t) = log Σ_{k: label_k = y} w_k N_k(x_t) − log q_t(x_t) (Bayes on the
      diffused components, eq. 4.10), whose gradient is −(ε*(y) − ε*(∅)) / √(1−ᾱ_t), eq. (8.6): the implicit
      classifier of classifier-free guidance.

    ``conditional=True`` is ``labels=range(K)``.
    """

    def __init__(self, mixture: GaussianMixture, schedule: NoiseSchedule, *, conditional: bool = False,
                 labels=None):
        if not isinstance(mixture, GaussianMixture):
            raise TypeError(f"mixture must be a GaussianMixture, got {type(mixture).__name__}")
        check_schedule(schedule)
        self.mixture = mixture
        self.schedule = schedule
        if labels is not None:
            labels = _component_labels(labels, mixture.K)
        elif conditional:
            labels = torch.arange(mixture.K)
        self.labels = labels                                   # (K,) class of each component, or None
        self.num_classes = None if labels is None else int(labels.max()) + 1

    @property
    def label_prior(self) -> torch.Tensor:
        """p(y) = Σ_{k: label_k = y} w_k, shape (num_classes,), float64 (needs labels)."""
        self._need_labels("label_prior")
        return torch.zeros(self.num_classes, dtype=_F64).index_add_(0, self.labels, self.mixture.weights)

    def sub_mixture(self, y: int) -> GaussianMixture:
        """q(x_0 | y): the mixture of the components of class ``y``, their weights renormalised (needs labels)."""
        self._need_labels("sub_mixture")
        if isinstance(y, bool) or not isinstance(y, int) or not 0 <= y < self.num_classes:
            raise ValueError(f"y must be a class in [0, {self.num_classes}), got {y!r}")
        own = torch.nonzero(self.labels == y)[:, 0]
        m = self.mixture
        return GaussianMixture(m.weights[own], m.means[own], m.covs[own])

    def _need_labels(self, what):
        if self.num_classes is None:
            raise ValueError(f"{what} needs a labelled denoiser: OptimalDenoiser(mixture, schedule, labels=...) "
                             "or conditional=True")

    def _prep(self, x, t):
        xf = self.mixture._flat(x.detach().cpu() if isinstance(x, torch.Tensor) else x)
        t = check_timesteps(t, self.schedule.T, batch=xf.shape[0])
        return xf, self.schedule.alpha_bars[t.cpu()]

    def log_prob(self, x, t) -> torch.Tensor:
        """log q_t(x) of the diffused mixture at code index t, eq. (4.10); shape (B,), float64."""
        xf, ab = self._prep(x, t)
        return self.mixture._log_prob_score(xf, ab)[0]

    def score(self, x, t) -> torch.Tensor:
        """∇_x log q_t(x) at code index t, shape (B, D), float64."""
        xf, ab = self._prep(x, t)
        return self.mixture._log_prob_score(xf, ab)[1]

    def x0_mean(self, x, t) -> torch.Tensor:
        """E[x_0 | x_t] = (x_t + (1 − ᾱ_t) ∇ log q_t(x_t)) / √ᾱ_t (Tweedie), shape (B, D), float64."""
        xf, ab = self._prep(x, t)
        s = self.mixture._log_prob_score(xf, ab)[1]
        return (xf + (1 - ab)[:, None] * s) / ab.sqrt()[:, None]

    def reverse_log_prob(self, x_prev, x_t, t) -> torch.Tensor:
        """log q(x_{t−1} | x_t) of the *true* reverse step (no x_0 given), by Bayes (3.3) on the marginals:
        log q_{t−1}(x_{t−1}) + log q(x_t | x_{t−1}) − log q_t(x_t). Code index t; at t = 0, x_prev is x_0 and
        q_{t−1} is the data mixture. Shape (B,), float64. Exact — unlike q(x_{t−1} | x_t, x_0) it is no Gaussian."""
        xp, ab = self._prep(x_prev, t)
        xt, _ = self._prep(x_t, t)
        t = check_timesteps(t, self.schedule.T, batch=xp.shape[0]).cpu()
        ab_prev = self.schedule.alpha_bars_prev[t]
        beta = self.schedule.betas[t][:, None]
        log_prev = self.mixture._log_prob_score(xp, ab_prev)[0]
        log_step = -0.5 * (((xt - (1 - beta).sqrt() * xp) ** 2) / beta + beta.log() + math.log(2 * math.pi)).sum(1)
        return log_prev + log_step - self.mixture._log_prob_score(xt, ab)[0]

    def diffused(self, t: int) -> GaussianMixture:
        """q_t, the law of x_t at code index ``t`` (paper step t+1), eq. (4.10)."""
        t = int(check_timesteps(int(t), self.schedule.T)[0])
        return self.mixture.diffuse(float(self.schedule.alpha_bars[t]))

    def classifier(self, x_t, t) -> torch.Tensor:
        """The exact noise-aware classifier: logits log p_t(y | x_t) of shape (B, num_classes) (B, K without
        labels: the components' posteriors), normalised, in x_t's dtype and device, differentiable in x_t (so
        classifier guidance can take its gradient)."""
        B = x_t.shape[0]
        xf = x_t.reshape(B, -1).to(_F64)
        if xf.shape[1] != self.mixture.D:
            self.mixture._flat(x_t.detach())                                   # raises the shape error
        t = checks.timesteps(t, self.schedule.T, B, device=torch.device("cpu"))
        logw, _ = self.mixture._components(xf.cpu(), self.schedule.alpha_bars[t])
        log_post = torch.log_softmax(logw, dim=1)                              # log p_t(component k | x_t)
        if self.labels is not None and not torch.equal(self.labels, torch.arange(self.mixture.K)):
            # a class owning several components: log Σ over its components (8.6)
            log_post = torch.stack([torch.logsumexp(log_post[:, self.labels == c], dim=1)
                                    for c in range(self.num_classes)], dim=1)
        return log_post.to(device=x_t.device, dtype=x_t.dtype)

    def __call__(self, x_t, t, y=None) -> torch.Tensor:
        xf, ab = self._prep(x_t, t)
        if self.num_classes is None or y is None:
            s = self.mixture._log_prob_score(xf, ab)[1]
        else:
            # with labels: the score of class y's own components (4.11), the whole mixture's for the null label
            y = checks.labels(y, xf.shape[0], self.num_classes, allow_null=True, device=torch.device("cpu"))
            logw, grad = self.mixture._components(xf, ab)
            own = (self.labels[None, :] == y[:, None]) | (y == self.num_classes)[:, None]     # (B, K)
            resp = torch.softmax(logw.masked_fill(~own, -math.inf), dim=1)   # responsibilities within the class
            s = (resp[:, :, None] * grad).sum(1)
        eps = -(1.0 - ab).sqrt()[:, None] * s                                 # eq. (4.11)
        return eps.reshape(x_t.shape).to(device=x_t.device, dtype=x_t.dtype)

    def __repr__(self):
        labels = "" if self.num_classes is None else f", labels={self.labels.tolist()}"
        return f"OptimalDenoiser({self.mixture!r}, {self.schedule!r}{labels})"


def _component_labels(labels, K: int) -> torch.Tensor:
    """``labels`` as a LongTensor (K,) of classes 0 … C−1 with every class owning a component, or a ValueError."""
    try:
        lab = torch.as_tensor(labels)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"labels must be a sequence of K = {K} class indices, got {labels!r}") from err
    if lab.dim() != 1 or lab.shape[0] != K or lab.dtype.is_floating_point or lab.dtype == torch.bool:
        raise ValueError(f"labels must give one integer class per component, shape ({K},), got {labels!r}")
    lab = lab.long().cpu()
    if (lab < 0).any():
        raise ValueError(f"labels must be >= 0, got {lab.tolist()}")
    missing = sorted(set(range(int(lab.max()) + 1)) - set(lab.tolist()))
    if missing:
        raise ValueError(f"classes {missing} own no component: labels must use every class 0 ... C-1, "
                         f"got {lab.tolist()}")
    return lab


def optimal_eps_model(mixture: GaussianMixture, schedule: NoiseSchedule) -> OptimalDenoiser:
    """The analytic ε-model E[ε | x_t] = −√(1−ᾱ_t) ∇ log q_t(x_t) of eq. (4.11), a callable ``model(x_t, t, y=None)``
    with ``.score(x, t)``, ``.log_prob(x, t)``, ``.x0_mean(x, t)`` and ``.diffused(t)``."""
    return OptimalDenoiser(mixture, schedule)


def example_mixture_2d() -> GaussianMixture:
    """The 2-D mixture of chapter 4: three components, one round and two elongated, inside [-1, 1]²."""
    def rot(deg, s1, s2):
        a = math.radians(deg)
        R = torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]], dtype=_F64)
        return R @ torch.diag(torch.tensor([s1 ** 2, s2 ** 2], dtype=_F64)) @ R.T
    covs = torch.stack([rot(0, 0.12, 0.12), rot(35, 0.30, 0.07), rot(-50, 0.22, 0.05)])
    means = [[-0.45, 0.45], [0.35, 0.40], [0.05, -0.50]]
    return GaussianMixture([0.3, 0.4, 0.3], means, covs)


def GaussianOracle(schedule: NoiseSchedule, mean=0.0, std: float = 1.0, *, dim: int | None = None) -> "OptimalDenoiser":
    """The exact ε-model for data x_0 ~ N(m, s² I) with m = ``mean`` and s = ``std``, the one-component case of
    :class:`OptimalDenoiser`: E[ε | x_t] = √(1−ᾱ_t) / (ᾱ_t s² + 1 − ᾱ_t) · (x_t − √ᾱ_t m), linear in x_t.

    ``mean`` is a number (the same for every coordinate) or a tensor of one item's shape; for a number, the item
    size is taken from the first x_t the model sees (or ``dim``).
    """
    if not float(std) > 0:
        raise ValueError(f"std must be > 0, got {std}")
    mean = torch.as_tensor(mean, dtype=_F64)
    if mean.dim() == 0 and dim is None:
        return _IsotropicGaussianOracle(schedule, float(mean), float(std))
    m = mean.reshape(1, -1) if mean.dim() else mean.expand(1, dim)
    return OptimalDenoiser(GaussianMixture([1.0], m, stds=float(std)), schedule)


class _IsotropicGaussianOracle(OptimalDenoiser):
    """:func:`GaussianOracle` with a scalar mean: the one-component mixture is built for the item size seen."""

    def __init__(self, schedule, mean: float, std: float):
        check_schedule(schedule)
        self.schedule, self.num_classes, self._mean, self._std, self._by_dim = schedule, None, mean, std, {}
        self.labels = None

    @property
    def mixture(self) -> GaussianMixture:
        if len(self._by_dim) != 1:
            raise ValueError("GaussianOracle with a scalar mean learns the data's dimension from the first x_t it "
                             "sees; call it once first, or pass dim=D")
        return next(iter(self._by_dim.values()))

    def _prep(self, x, t):
        D = x[0].numel() if isinstance(x, torch.Tensor) and x.dim() > 1 else 1
        if D not in self._by_dim:
            self._by_dim.clear()
            self._by_dim[D] = GaussianMixture([1.0], torch.full((1, D), self._mean, dtype=_F64), stds=self._std)
        return super()._prep(x, t)


def GaussianMixtureOracle(schedule: NoiseSchedule, means, std: float = 1.0) -> OptimalDenoiser:
    """The exact class-conditional ε-model for K equally likely classes x_0 | y ~ N(means[y], std² I):
    an :class:`OptimalDenoiser` with labels. ``model(x_t, t, y)`` gives the class-conditional ε for labels in
    [0, K) and the unconditional (mixture) ε for the null label K or ``y=None``; ``.classifier(x_t, t)`` gives the
    exact logits log p(y | x_t). ``means`` has shape (K, *item_shape)."""
    means = torch.as_tensor(means, dtype=_F64)
    if means.dim() < 2:
        raise ValueError(f"means must have shape (K, *item_shape), got {tuple(means.shape)}")
    if not float(std) > 0:
        raise ValueError(f"std must be > 0, got {std}")
    K = means.shape[0]
    return OptimalDenoiser(GaussianMixture(torch.ones(K, dtype=_F64), means.reshape(K, -1), stds=float(std)),
                           schedule, conditional=True)
