"""A RealNVP-style normalizing flow (book chapter 1, eqs. 1.7–1.8; Dinh, Sohl-Dickstein & Bengio 2017).

An invertible f: x ↦ z maps data to a standard Gaussian latent of the SAME dimension, and the change of variables
gives the exact log-likelihood:

  (1.7)  log p_X(x) = log p_Z(f(x)) + log |det ∂f/∂x (x)|,   p_Z = N(0, I)
  (1.8)  affine coupling with a binary mask m:  y = m ⊙ x + (1 − m) ⊙ (x ⊙ exp(s(m ⊙ x)) + t(m ⊙ x)),
         whose Jacobian is triangular, so log |det ∂y/∂x| = Σ_j (1 − m_j) s_j(m ⊙ x)

f is a stack of couplings with alternating masks; sampling runs the inverse, x = f⁻¹(z), z ~ N(0, I):
one pass through the stack.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from ._common import BaselineResult, Timer, batches, check_positive_int, check_train_args, mlp, model_for

__all__ = ["AffineCoupling", "RealNVP", "train_flow"]


class AffineCoupling(nn.Module):
    """One coupling layer (1.8). ``mask`` (D,) of 0/1: the coordinates with m = 1 pass unchanged and condition
    the scale s and shift t of the others. s is bounded, ``scale_bound``·tanh(·), for stable training."""

    def __init__(self, mask: torch.Tensor, hidden: int = 64, layers: int = 2, scale_bound: float = 2.0):
        super().__init__()
        mask = torch.as_tensor(mask, dtype=torch.float32)
        if mask.dim() != 1 or not ((mask == 0) | (mask == 1)).all() or mask.sum() in (0, mask.numel()):
            raise ValueError("mask must be a 1-D tensor of 0s and 1s with at least one of each")
        self.register_buffer("mask", mask)
        D = mask.numel()
        self.net = mlp(D, 2 * D, hidden, layers)
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)          # starts as the identity
        self.scale_bound = float(scale_bound)

    def _st(self, x_masked):
        s, t = self.net(x_masked).chunk(2, dim=-1)
        s = self.scale_bound * torch.tanh(s / self.scale_bound)
        return s * (1 - self.mask), t * (1 - self.mask)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """y and log |det ∂y/∂x| (B,)."""
        s, t = self._st(x * self.mask)
        return x * self.mask + (1 - self.mask) * (x * torch.exp(s) + t), s.sum(-1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        s, t = self._st(y * self.mask)                # m ⊙ y = m ⊙ x, so s and t are the same
        return y * self.mask + (1 - self.mask) * (y - t) * torch.exp(-s)


class RealNVP(nn.Module):
    """f = coupling_K ∘ … ∘ coupling_1 (data → latent), masks alternating between two complementary halves."""

    def __init__(self, data_dim: int = 2, n_couplings: int = 8, hidden: int = 64, layers: int = 2):
        super().__init__()
        self.data_dim = check_positive_int(data_dim, "data_dim")
        check_positive_int(n_couplings, "n_couplings")
        if data_dim < 2:
            raise ValueError("a coupling flow needs data_dim >= 2 (one half conditions the other)")
        base = (torch.arange(data_dim) % 2).float()
        self.couplings = nn.ModuleList(AffineCoupling(base if k % 2 == 0 else 1 - base, hidden, layers)
                                       for k in range(n_couplings))

    @property
    def latent_dim(self) -> int:
        return self.data_dim                          # a bijection cannot change the dimension

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z = f(x) and log |det ∂f/∂x| (B,)."""
        logdet = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for c in self.couplings:
            x, ld = c(x)
            logdet = logdet + ld
        return x, logdet

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        """x = f⁻¹(z)."""
        for c in reversed(self.couplings):
            z = c.inverse(z)
        return z

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """The exact log-density (1.7) in nats, (B,)."""
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[1] != self.data_dim:
            raise ValueError(f"RealNVP.log_prob expects x of shape (B, {self.data_dim}), "
                             f"got {tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        z, logdet = self(x)
        return -0.5 * (z ** 2).sum(-1) - 0.5 * self.data_dim * math.log(2 * math.pi) + logdet

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n samples x = f⁻¹(z), z ~ N(0, I): one inverse pass (``n_couplings`` small networks) per sample."""
        check_positive_int(n, "n")
        return self.inverse(torch.randn(n, self.data_dim, generator=generator))

    nfe_per_sample = 1


def train_flow(x: torch.Tensor, *, steps: int = 3000, seed: int = 0, batch_size: int = 256, lr: float = 2e-3,
               n_couplings: int = 8, hidden: int = 64, layers: int = 2, model: RealNVP | None = None,
               callback=None, callback_every: int = 100) -> BaselineResult:
    """Train a RealNVP on ``x`` (N, D) by maximum likelihood: minimise −E log p(x), eq. (1.7), with Adam.

    ``callback(step, model)`` (model in eval mode) runs every ``callback_every`` steps and after the last.
    Returns a :class:`BaselineResult` with losses ``{"nll": [...]}`` (nats per point, per step).
    """
    x = check_train_args(x, steps=steps, batch_size=batch_size, seed=seed, lr=lr, callback_every=callback_every)
    torch.manual_seed(seed)
    flow = model_for(x, model, lambda: RealNVP(x.shape[1], n_couplings, hidden, layers))
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(flow.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    hist = []
    flow.train()
    with Timer() as tm:
        for step, idx in enumerate(batches(x.shape[0], batch_size, steps, gen), 1):
            loss = -flow.log_prob(x[idx]).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            hist.append(loss.item())
            if callback is not None and (step % callback_every == 0 or step == steps):
                flow.eval()
                callback(step, flow)
                flow.train()
    flow.eval()
    return BaselineResult(model=flow, losses={"nll": hist}, steps=steps, wall_time=tm.seconds)
