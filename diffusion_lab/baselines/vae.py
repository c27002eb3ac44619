"""A variational auto-encoder (book chapter 1, eqs. 1.4–1.6) with a Gaussian encoder and a Gaussian decoder.

  (1.4)  log p_θ(x) ≥ ELBO(x) = E_{q_φ(z|x)}[log p_θ(x|z)] − KL(q_φ(z|x) ‖ p(z)),   p(z) = N(0, I)
         and log p_θ(x) − ELBO(x) = KL(q_φ(z|x) ‖ p_θ(z|x)) ≥ 0
  (1.5)  reparameterisation: z = μ_φ(x) + σ_φ(x) ⊙ ε,  ε ~ N(0, I)
  (1.6)  KL(N(μ, diag σ²) ‖ N(0, I)) = ½ Σ_j (μ_j² + σ_j² − 1 − log σ_j²)

The first term of (1.4) is minus the reconstruction loss (重构损失), the KL term is the latent loss (潜在损失).
The decoder is p_θ(x|z) = N(μ_θ(z), diag e^{s}) with a learned log-variance vector s, so the ELBO bounds a
continuous log-density in nats. ``beta`` ≠ 1 weighs the KL term (β-VAE) for the trade-off experiment.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn as nn

from ._common import BaselineResult, Timer, batches, check_positive_int, check_train_args, mlp, model_for

__all__ = ["VAE", "gaussian_elbo", "train_vae"]

LOG_2PI = math.log(2 * math.pi)


def _log_normal(x, mean, logvar):
    return -0.5 * (LOG_2PI + logvar + (x - mean) ** 2 * torch.exp(-logvar)).sum(-1)


def gaussian_elbo(x: torch.Tensor, enc_mean: torch.Tensor, enc_logvar: torch.Tensor,
                  decode: Callable[[torch.Tensor], torch.Tensor], dec_logvar: torch.Tensor, *, n_samples: int = 1,
                  generator: torch.Generator | None = None) -> dict:
    """The ELBO (1.4) per data point, in nats, with the KL term in closed form (1.6) and the reconstruction term
    by Monte Carlo over ``n_samples`` reparameterised draws (1.5).

    ``enc_mean``, ``enc_logvar``: (B, L) parameters of q(z|x); ``decode(z)``: the decoder mean μ_θ(z), (…, D);
    ``dec_logvar``: the decoder's log-variance, broadcastable to (B, D).
    Returns ``{"elbo", "recon", "kl"}``, each of shape (B,); ``recon`` = E_q[log p(x|z)].
    """
    check_positive_int(n_samples, "n_samples")
    if enc_mean.shape != enc_logvar.shape or enc_mean.dim() != 2 or enc_mean.shape[0] != x.shape[0]:
        raise ValueError(f"enc_mean and enc_logvar must both have shape (B, L) with B={x.shape[0]}, "
                         f"got {tuple(enc_mean.shape)} and {tuple(enc_logvar.shape)}")
    eps = torch.randn((n_samples,) + tuple(enc_mean.shape), generator=generator, dtype=enc_mean.dtype)
    z = enc_mean + torch.exp(0.5 * enc_logvar) * eps                                   # (1.5)
    recon = _log_normal(x, decode(z), dec_logvar).mean(0)                              # E_q log p(x|z)
    kl = 0.5 * (enc_mean ** 2 + enc_logvar.exp() - 1 - enc_logvar).sum(-1)            # (1.6)
    return {"elbo": recon - kl, "recon": recon, "kl": kl}


class VAE(nn.Module):
    """Encoder x → (μ_φ, log σ²_φ) and decoder z → μ_θ(z), plus the decoder log-variance ``dec_logvar`` (D,)."""

    def __init__(self, data_dim: int = 2, latent_dim: int = 2, hidden: int = 128, layers: int = 2,
                 init_dec_logvar: float = math.log(0.01)):
        super().__init__()
        self.data_dim, self.latent_dim = check_positive_int(data_dim, "data_dim"), check_positive_int(latent_dim, "latent_dim")
        self.encoder = mlp(data_dim, 2 * latent_dim, hidden, layers)
        self.decoder = mlp(latent_dim, data_dim, hidden, layers)
        self.dec_logvar = nn.Parameter(torch.full((data_dim,), float(init_dec_logvar)))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, logvar = self.encoder(x).chunk(2, dim=-1)
        return mean, logvar.clamp(-12, 6)

    def elbo(self, x: torch.Tensor, n_samples: int = 1, generator: torch.Generator | None = None) -> dict:
        """``{"elbo", "recon", "kl"}`` per point (nats) for data ``x`` (B, D); see :func:`gaussian_elbo`."""
        mean, logvar = self.encode(x)
        return gaussian_elbo(x, mean, logvar, self.decoder, self.dec_logvar, n_samples=n_samples, generator=generator)

    @torch.no_grad()
    def iwae_log_prob(self, x: torch.Tensor, k: int = 256, generator: torch.Generator | None = None) -> torch.Tensor:
        """Importance-weighted estimate of log p_θ(x) with k draws from q(z|x) (Burda et al. 2016): a tighter
        bound than the ELBO that approaches log p_θ(x) as k grows."""
        check_positive_int(k, "k")
        mean, logvar = self.encode(x)
        z = mean + torch.exp(0.5 * logvar) * torch.randn((k,) + tuple(mean.shape), generator=generator)
        log_w = (_log_normal(x, self.decoder(z), self.dec_logvar) + _log_normal(z, torch.zeros_like(z), torch.zeros_like(z))
                 - _log_normal(z, mean, logvar))
        return torch.logsumexp(log_w, 0) - math.log(k)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, *, noise: bool = True) -> torch.Tensor:
        """n samples of the model: z ~ N(0, I), x ~ p_θ(x|z) (``noise=False``: the decoder mean μ_θ(z) only,
        the usual "VAE output"). One decoder evaluation per sample."""
        check_positive_int(n, "n")
        z = torch.randn(n, self.latent_dim, generator=generator)
        mean = self.decoder(z)
        if not noise:
            return mean
        return mean + torch.exp(0.5 * self.dec_logvar) * torch.randn(mean.shape, generator=generator)

    nfe_per_sample = 1


def train_vae(x: torch.Tensor, *, steps: int = 3000, seed: int = 0, batch_size: int = 256, lr: float = 2e-3,
              latent_dim: int = 2, hidden: int = 128, layers: int = 2, beta: float = 1.0,
              model: VAE | None = None, callback=None, callback_every: int = 100) -> BaselineResult:
    """Train a VAE on ``x`` (N, D) by maximising the ELBO (1.4) with Adam (loss = −recon + β·KL per point).

    ``callback(step, model)`` (model in eval mode) runs every ``callback_every`` steps and after the last.
    Returns a :class:`BaselineResult` with losses ``{"loss": −ELBO_β, "recon": −E log p(x|z), "kl": KL}`` per step.
    """
    x = check_train_args(x, steps=steps, batch_size=batch_size, seed=seed, lr=lr, callback_every=callback_every)
    if not beta >= 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    torch.manual_seed(seed)
    vae = model_for(x, model, lambda: VAE(x.shape[1], latent_dim, hidden, layers))
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(vae.parameters(), lr=lr)
    hist = {"loss": [], "recon": [], "kl": []}
    vae.train()
    with Timer() as tm:
        for step, idx in enumerate(batches(x.shape[0], batch_size, steps, gen), 1):
            out = vae.elbo(x[idx], generator=gen)
            recon, kl = -out["recon"].mean(), out["kl"].mean()
            loss = recon + beta * kl
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            hist["loss"].append(loss.item())
            hist["recon"].append(recon.item())
            hist["kl"].append(kl.item())
            if callback is not None and (step % callback_every == 0 or step == steps):
                vae.eval()
                callback(step, vae)
                vae.train()
    vae.eval()
    return BaselineResult(model=vae, losses=hist, steps=steps, wall_time=tm.seconds)
