"""Chapter 1's baselines: each trains and beats a single fitted Gaussian; exact log-density of the flow; closed forms
of the GAN and VAE losses; the evaluation measures; clear errors on bad input."""
from __future__ import annotations

import math

import pytest
import torch

from diffusion_lab import data
from diffusion_lab.baselines import (EIGHT_GAUSSIANS_CENTERS, GAN, VAE, FittedGaussian, RealNVP, energy_distance,
                                     eight_gaussians_mixture, gan_losses, gaussian_elbo, mmd2, mode_coverage,
                                     optimal_discriminator, train_flow, train_gan, train_vae)


@pytest.fixture(scope="module")
def moons():
    return data.make_toy("two_moons", 2000, seed=0), data.make_toy("two_moons", 1000, seed=1)


@pytest.fixture(scope="module")
def eight():
    return data.make_toy("eight_gaussians", 2000, seed=0), data.make_toy("eight_gaussians", 1000, seed=1)


def _gaussian_distance(train, held):
    return energy_distance(FittedGaussian(train).sample(1000, torch.Generator().manual_seed(5)), held)


# ----------------------------------------------------------------------------- each baseline learns
def test_flow_beats_a_fitted_gaussian(moons):
    torch.set_num_threads(1)
    x, held = moons
    r = train_flow(x, steps=300, seed=0, n_couplings=4, hidden=32, batch_size=128)
    d = energy_distance(r.model.sample(1000, torch.Generator().manual_seed(0)), held)
    assert d < 0.5 * _gaussian_distance(x, held)
    assert sum(r.losses["nll"][-50:]) / 50 < sum(r.losses["nll"][:50]) / 50      # the NLL fell
    # and its exact likelihood beats the Gaussian's on held-out data
    with torch.no_grad():
        assert r.model.log_prob(held).mean() > FittedGaussian(x).log_prob(held).mean() + 0.2


def test_vae_beats_a_fitted_gaussian():
    x, held = data.make_toy("checkerboard", 2000, seed=0), data.make_toy("checkerboard", 1000, seed=1)
    vae = VAE(hidden=64, init_dec_logvar=math.log(0.1))
    r = train_vae(x, steps=500, seed=0, batch_size=128, lr=3e-3, model=vae)
    d = energy_distance(r.model.sample(1000, torch.Generator().manual_seed(0)), held)
    assert d < 0.7 * _gaussian_distance(x, held)
    assert len(r.losses["loss"]) == 500 and set(r.losses) == {"loss", "recon", "kl"}


def test_gan_beats_a_fitted_gaussian(eight):
    x, held = eight
    r = train_gan(x, steps=400, seed=0, batch_size=128)
    s = r.model.sample(1000, torch.Generator().manual_seed(0))
    assert energy_distance(s, held) < 0.5 * _gaussian_distance(x, held)
    assert mode_coverage(s)["covered"] > mode_coverage(FittedGaussian(x).sample(1000))["covered"]
    assert len(r.losses["d"]) == len(r.losses["g"]) == 400


def test_training_is_reproducible_with_a_seed(moons):
    x, _ = moons
    a = train_vae(x, steps=20, seed=3, hidden=16)
    b = train_vae(x, steps=20, seed=3, hidden=16)
    assert a.losses == b.losses


# ----------------------------------------------------------------------------- the flow's log-density is exact
def test_flow_log_density_is_a_change_of_variables_with_autograd_jacobian():
    torch.manual_seed(0)
    flow = RealNVP(data_dim=3, n_couplings=4, hidden=16).double()
    for p in flow.parameters():                       # move away from the identity initialisation
        p.data.add_(0.3 * torch.randn_like(p))
    xs = torch.randn(5, 3, dtype=torch.float64)
    with torch.no_grad():
        lp = flow.log_prob(xs)
    for x, l in zip(xs, lp):
        J = torch.autograd.functional.jacobian(lambda v: flow(v[None])[0][0], x)
        z = flow(x[None])[0][0]
        expected = -0.5 * (z @ z) - 1.5 * math.log(2 * math.pi) + torch.linalg.slogdet(J)[1]
        assert abs((l - expected).item()) < 1e-10
    # the inverse inverts
    assert torch.allclose(flow.inverse(flow(xs)[0]), xs, atol=1e-10)


def test_flow_density_integrates_to_one_on_a_grid(eight):
    x, _ = eight
    flow = train_flow(x, steps=150, seed=0, n_couplings=4, hidden=32).model
    g = torch.linspace(-4, 4, 321, dtype=torch.float64)
    X, Y = torch.meshgrid(g, g, indexing="xy")
    with torch.no_grad():
        p = flow.double().log_prob(torch.stack([X.flatten(), Y.flatten()], 1)).exp()
    assert abs(float(p.sum() * (g[1] - g[0]) ** 2) - 1) < 0.02


# ----------------------------------------------------------------------------- closed forms of the losses
def test_gan_losses_match_hand_computed_values():
    real = torch.tensor([0.0, 2.0])
    fake = torch.tensor([-1.0, 0.0])
    d_loss, g_loss = gan_losses(real, fake)
    sig = lambda v: 1 / (1 + math.exp(-v))
    want_d = -(math.log(sig(0)) + math.log(sig(2))) / 2 - (math.log(1 - sig(-1)) + math.log(1 - sig(0))) / 2
    want_g = -(math.log(sig(-1)) + math.log(sig(0))) / 2
    assert abs(d_loss.item() - want_d) < 1e-6 and abs(g_loss.item() - want_g) < 1e-6
    d0, g0 = gan_losses(torch.zeros(4), torch.zeros(4))          # D = 1/2 everywhere
    assert abs(d0.item() - 2 * math.log(2)) < 1e-6 and abs(g0.item() - math.log(2)) < 1e-6


def test_optimal_discriminator_is_a_density_ratio():
    lp, lq = torch.tensor([0.0, math.log(3.0), -2.0]), torch.tensor([0.0, 0.0, -2.0])
    assert torch.allclose(optimal_discriminator(lp, lq), torch.tensor([0.5, 0.75, 0.5]))


def test_vae_elbo_equals_log_evidence_with_the_exact_posterior_and_is_below_it_otherwise():
    # linear-Gaussian model: z ~ N(0,1), x | z ~ N(w z + b, s2)  =>  p(x) = N(b, w^2 + s2) in closed form
    w, b, s2 = 1.7, 0.3, 0.25
    x = torch.tensor([[-1.0], [0.2], [2.5]], dtype=torch.float64)
    log_px = -0.5 * (math.log(2 * math.pi * (w * w + s2)) + (x[:, 0] - b) ** 2 / (w * w + s2))
    post_var = s2 / (w * w + s2)
    post_mean = w * (x - b) / (w * w + s2)
    decode = lambda z: w * z + b
    dec_logvar = torch.tensor([math.log(s2)], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    exact = gaussian_elbo(x, post_mean, torch.full_like(x, math.log(post_var)), decode, dec_logvar, n_samples=200_000,
                          generator=g)
    assert torch.allclose(exact["elbo"], log_px, atol=5e-3)         # zero gap, up to Monte Carlo error
    # a wrong encoder: the gap is KL(q || posterior), in closed form
    qm, qv = post_mean + 0.2, torch.full_like(x, 0.15)
    out = gaussian_elbo(x, qm, qv.log(), decode, dec_logvar, n_samples=200_000, generator=g)
    gap = 0.5 * (torch.log(post_var / qv) + (qv + (qm - post_mean) ** 2) / post_var - 1)[:, 0]
    assert (out["elbo"] < log_px).all()
    assert torch.allclose(log_px - out["elbo"], gap, atol=0.02)
    # the KL term is the closed form (1.6)
    assert torch.allclose(out["kl"], 0.5 * (qm ** 2 + qv - 1 - qv.log())[:, 0])


def test_trained_vae_elbo_is_below_its_importance_sampled_log_likelihood(eight):
    x, held = eight
    vae = train_vae(x, steps=200, seed=0, hidden=32).model
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        elbo = vae.elbo(held[:200], n_samples=64, generator=g)["elbo"].mean()
        iwae = vae.iwae_log_prob(held[:200], k=256, generator=g).mean()
    assert elbo < iwae


# ----------------------------------------------------------------------------- evaluation measures
def test_energy_distance_and_mmd_separate_different_distributions(eight):
    x, held = eight
    same = data.make_toy("eight_gaussians", 1000, seed=7)
    other = FittedGaussian(x).sample(1000, torch.Generator().manual_seed(0))
    assert abs(energy_distance(same, held)) < 0.01 < energy_distance(other, held)
    assert abs(mmd2(same, held)) < 0.02 < mmd2(other, held)
    # energy distance is symmetric; of a sample with itself it is slightly negative (U-statistic), about -E|X-X'|/n
    assert abs(energy_distance(same, held) - energy_distance(held, same)) < 1e-12


def test_mode_coverage_counts_modes(eight):
    _, held = eight
    full = mode_coverage(held)
    assert full["covered"] == 8 and full["in_mode"] > 0.97
    two = held[torch.cdist(held.double(), EIGHT_GAUSSIANS_CENTERS).argmin(1) < 2]
    assert mode_coverage(two)["covered"] == 2
    assert mode_coverage(torch.zeros(100, 2))["covered"] == 0


def test_eight_gaussians_mixture_matches_make_toy(eight):
    _, held = eight
    mix = eight_gaussians_mixture()
    assert abs(float(held.double().mean(0).norm())) < 0.1
    # the data are at least as likely under the true mixture as under any single Gaussian
    assert mix.log_prob(held.double()).mean() > FittedGaussian(held).log_prob(held).mean() + 1.0


# ----------------------------------------------------------------------------- clear errors
@pytest.mark.parametrize("fn", [train_gan, train_vae, train_flow])
def test_bad_inputs_give_clear_errors(fn):
    x = torch.randn(100, 2)
    with pytest.raises(ValueError, match="shape"):
        fn(torch.randn(100), steps=1)
    with pytest.raises(TypeError, match="floating"):
        fn(torch.ones(100, 2, dtype=torch.long), steps=1)
    with pytest.raises(ValueError, match="NaN"):
        fn(torch.full((10, 2), float("nan")), steps=1)
    with pytest.raises(ValueError, match="steps"):
        fn(x, steps=0)
    with pytest.raises(TypeError, match="seed"):
        fn(x, steps=1, seed=1.5)
    with pytest.raises(TypeError, match="Tensor"):
        fn(x.numpy(), steps=1)


def test_model_and_measure_errors():
    with pytest.raises(ValueError, match="data_dim"):
        train_flow(torch.randn(10, 3), steps=1, model=RealNVP(2, 2, 8))
    with pytest.raises(ValueError, match="data_dim >= 2"):
        RealNVP(1)
    with pytest.raises(ValueError, match="same dimension"):
        energy_distance(torch.randn(5, 2), torch.randn(5, 3))
    with pytest.raises(ValueError, match="NaN"):
        mmd2(torch.full((5, 2), float("nan")), torch.randn(5, 2))
    with pytest.raises(ValueError, match="bandwidths"):
        mmd2(torch.randn(5, 2), torch.randn(5, 2), bandwidths=(0.0,))
    with pytest.raises(ValueError, match="samples"):
        mode_coverage(torch.randn(5, 3))
    with pytest.raises(ValueError, match="positive int"):
        GAN().sample(0)
    with pytest.raises(ValueError, match="shape"):
        RealNVP(2).log_prob(torch.randn(4, 3))
    with pytest.raises(ValueError, match=r"\(B, L\)"):
        gaussian_elbo(torch.randn(3, 2), torch.zeros(3, 2), torch.zeros(2, 2), lambda z: z, torch.zeros(2))
