"""Chapter 1's comparison models, trained on the same 2-D data as the diffusion MLP (book chapter 1).

  gan       generative adversarial network, non-saturating loss          eqs. (1.1)–(1.3)
  vae       variational auto-encoder, reparameterisation, ELBO           eqs. (1.4)–(1.6)
  flow      RealNVP-style normalizing flow, exact log-likelihood          eqs. (1.7)–(1.8)
  evaluate  two-sample distances (energy distance, MMD), 8-Gaussians mode coverage, a fitted-Gaussian baseline,
            SampleJudge (all of them for one set of samples, each set judged once)

Each ``train_*`` takes a data tensor (N, D), a seed and a step count, and returns a :class:`BaselineResult`
(the trained model plus its loss history). Every model has ``sample(n, generator=None)``.
"""
from ._common import BaselineResult
from .evaluate import (EIGHT_GAUSSIANS_CENTERS, EIGHT_GAUSSIANS_STD, FittedGaussian, SampleJudge, energy_distance,
                       eight_gaussians_mixture, mmd2, mode_coverage)
from .flow import AffineCoupling, RealNVP, train_flow
from .gan import GENERATOR_LOSSES, GAN, gan_losses, optimal_discriminator, train_gan
from .vae import VAE, gaussian_elbo, train_vae

__all__ = ["BaselineResult", "GAN", "gan_losses", "optimal_discriminator", "train_gan", "GENERATOR_LOSSES", "VAE",
           "gaussian_elbo", "train_vae", "RealNVP", "AffineCoupling", "train_flow", "energy_distance", "mmd2",
           "mode_coverage", "SampleJudge", "FittedGaussian", "eight_gaussians_mixture", "EIGHT_GAUSSIANS_CENTERS",
           "EIGHT_GAUSSIANS_STD"]
