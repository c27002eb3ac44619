"""A small GAN (book chapter 1, eqs. 1.1–1.3): generator G(z) and discriminator D(x) = σ(ℓ(x)), both MLPs.

  (1.1)  min_G max_D V(D, G) = E_{x~p_data}[log D(x)] + E_{z~N(0,I)}[log(1 − D(G(z)))]
  (1.2)  for a fixed G the best discriminator is D*(x) = p_data(x) / (p_data(x) + p_g(x))
  (1.3)  non-saturating generator loss: L_G = −E_z[log D(G(z))]  (Goodfellow et al. 2014, §3)

``train_gan(..., generator_loss="saturating")`` trains the generator on (1.1)'s own term E_z[log(1 − D(G(z)))]
instead, for comparison (chapter 1, exercise 2).

Training is unsupervised: the data carry no labels; the "real"/"fake" targets of the discriminator are made up by
the algorithm itself (1 for a data point, 0 for a generated one).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._common import BaselineResult, Timer, batches, check_positive_int, check_train_args, mlp, model_for

__all__ = ["GAN", "gan_losses", "optimal_discriminator", "train_gan", "GENERATOR_LOSSES"]

GENERATOR_LOSSES = ("non_saturating", "saturating")


class GAN(nn.Module):
    """Generator ``G: R^latent_dim → R^data_dim`` and discriminator logits ``ℓ: R^data_dim → R`` (D = σ(ℓ))."""

    def __init__(self, data_dim: int = 2, latent_dim: int = 2, hidden: int = 64, layers: int = 2):
        super().__init__()
        self.data_dim, self.latent_dim = check_positive_int(data_dim, "data_dim"), check_positive_int(latent_dim, "latent_dim")
        self.generator = mlp(latent_dim, data_dim, hidden, layers, act=nn.ReLU)
        self.discriminator = mlp(data_dim, 1, hidden, layers, act=lambda: nn.LeakyReLU(0.2))

    def discriminate(self, x: torch.Tensor) -> torch.Tensor:
        """D(x) ∈ (0, 1): the discriminator's probability that x is real."""
        return torch.sigmoid(self.discriminator(x)).squeeze(-1)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n samples G(z), z ~ N(0, I): one generator evaluation per sample."""
        check_positive_int(n, "n")
        z = torch.randn(n, self.latent_dim, generator=generator)
        return self.generator(z)

    nfe_per_sample = 1


def gan_losses(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_D, L_G) from the discriminator's logits on a real and a generated batch.

    L_D = −E[log D(x)] − E[log(1 − D(G(z)))]  (minus the inner objective of 1.1),
    L_G = −E[log D(G(z))]                      (the non-saturating loss 1.3),
    computed stably from logits: −log σ(ℓ) = softplus(−ℓ), −log(1 − σ(ℓ)) = softplus(ℓ).
    At D ≡ ½ (all logits 0): L_D = 2 log 2, L_G = log 2.
    """
    d_loss = F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
    g_loss = F.softplus(-fake_logits).mean()
    return d_loss, g_loss


def optimal_discriminator(log_p_data: torch.Tensor, log_p_g: torch.Tensor) -> torch.Tensor:
    """D*(x) = p_data / (p_data + p_g) = σ(log p_data − log p_g), eq. (1.2), from the two log-densities."""
    return torch.sigmoid(log_p_data - log_p_g)


def train_gan(x: torch.Tensor, *, steps: int = 3000, seed: int = 0, batch_size: int = 256, lr: float = 1e-3,
              latent_dim: int = 2, hidden: int = 64, layers: int = 2, betas=(0.5, 0.9),
              model: GAN | None = None, callback=None, callback_every: int = 100,
              generator_loss: str = "non_saturating") -> BaselineResult:
    """Train a GAN on ``x`` (N, D) by alternating one discriminator and one generator Adam step.

    ``generator_loss`` is ``"non_saturating"`` (eq. 1.3, minimise −E log D(G(z)); the default) or ``"saturating"``
    (minimise E log(1 − D(G(z))), the generator's term of eq. 1.1, whose gradient vanishes where D rejects a fake).
    ``callback(step, model)`` (model in eval mode) runs every ``callback_every`` steps and after the last.
    Returns a :class:`BaselineResult` with losses ``{"d": [...], "g": [...]}``: L_D of eq. (1.1) and the generator
    loss that was minimised, per step.
    """
    x = check_train_args(x, steps=steps, batch_size=batch_size, seed=seed, lr=lr, callback_every=callback_every)
    if generator_loss not in GENERATOR_LOSSES:
        raise ValueError(f"generator_loss must be one of {GENERATOR_LOSSES}, got {generator_loss!r}")
    saturating = generator_loss == "saturating"
    torch.manual_seed(seed)
    gan = model_for(x, model, lambda: GAN(x.shape[1], latent_dim, hidden, layers))
    gen = torch.Generator().manual_seed(seed)
    opt_d = torch.optim.Adam(gan.discriminator.parameters(), lr=lr, betas=betas)
    opt_g = torch.optim.Adam(gan.generator.parameters(), lr=lr, betas=betas)
    d_hist, g_hist = [], []
    gan.train()
    with Timer() as tm:
        for step, idx in enumerate(batches(x.shape[0], batch_size, steps, gen), 1):
            real = x[idx]
            z = torch.randn(real.shape[0], gan.latent_dim, generator=gen)
            # discriminator step: real → 1, fake → 0 (labels made by the algorithm, not given with the data)
            fake = gan.generator(z).detach()
            d_loss, _ = gan_losses(gan.discriminator(real), gan.discriminator(fake))
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            # generator step: non-saturating loss (1.3), or (1.1)'s term log(1 - D) = -softplus(logit)
            fake_logits = gan.discriminator(gan.generator(z))
            g_loss = -F.softplus(fake_logits).mean() if saturating else F.softplus(-fake_logits).mean()
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()
            d_hist.append(d_loss.item())
            g_hist.append(g_loss.item())
            if callback is not None and (step % callback_every == 0 or step == steps):
                gan.eval()
                callback(step, gan)
                gan.train()
    gan.eval()
    return BaselineResult(model=gan, losses={"d": d_hist, "g": g_hist}, steps=steps, wall_time=tm.seconds)
