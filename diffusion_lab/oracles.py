"""Kept for old imports only: the exact oracles live in :mod:`diffusion_lab.gaussian_mixture`, the package's one
exact denoiser (``GaussianOracle`` is its one-component case, ``GaussianMixtureOracle`` its labelled case with the
exact classifier). Import them from there."""
from .gaussian_mixture import GaussianMixtureOracle, GaussianOracle

__all__ = ["GaussianOracle", "GaussianMixtureOracle"]
