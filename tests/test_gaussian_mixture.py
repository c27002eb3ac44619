"""Gaussian mixtures and their analytic optimal denoiser (eqs. 4.10–4.11), against Monte Carlo and autograd."""
import math

import pytest
import torch

from diffusion_lab import diffusion
from diffusion_lab.gaussian_mixture import GaussianMixture, OptimalDenoiser, example_mixture_2d, optimal_eps_model
from diffusion_lab.schedules import linear_schedule

F64 = torch.float64




@pytest.fixture(scope="module")
def schedule():
    return linear_schedule(1000)


@pytest.fixture(scope="module")
def mixture():
    return example_mixture_2d()


def test_log_prob_is_normalised_and_matches_single_gaussian(mixture):
    xs = torch.linspace(-3, 3, 401, dtype=F64)
    X, Y = torch.meshgrid(xs, xs, indexing="ij")
    pts = torch.stack([X.flatten(), Y.flatten()], 1)
    mass = mixture.log_prob(pts).exp().sum() * (xs[1] - xs[0]) ** 2
    assert abs(mass.item() - 1) < 1e-4
    # one component == torch's MultivariateNormal
    cov = torch.tensor([[0.3, 0.1], [0.1, 0.2]], dtype=F64)
    one = GaussianMixture([1.0], [[0.2, -0.1]], cov[None])
    ref = torch.distributions.MultivariateNormal(torch.tensor([0.2, -0.1], dtype=F64), cov)
    x = torch.randn(50, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(one.log_prob(x), ref.log_prob(x), atol=1e-10)


def test_isotropic_stds_equal_explicit_covs():
    a = GaussianMixture([1, 3], [[0, 0], [1, 1]], stds=[0.5, 0.2])
    b = GaussianMixture([0.25, 0.75], [[0, 0], [1, 1]], torch.stack([0.25 * torch.eye(2), 0.04 * torch.eye(2)]))
    x = torch.randn(20, 2, dtype=F64, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(a.log_prob(x), b.log_prob(x), atol=1e-12)
    assert torch.allclose(a.covs, b.covs)
    c = GaussianMixture([1, 1], [[0, 0], [1, 1]], stds=0.3)     # one number for all components
    assert torch.allclose(c.covs, 0.09 * torch.eye(2, dtype=F64).expand(2, 2, 2))


def test_sample_moments(mixture):
    x = mixture.sample(200_000, torch.Generator().manual_seed(2))
    assert x.dtype == F64 and x.shape == (200_000, 2)
    assert torch.allclose(x.mean(0), mixture.mean(), atol=0.005)
    assert torch.allclose(torch.cov(x.T), mixture.cov(), atol=0.005)
    x32, k = mixture.sample(10, torch.Generator().manual_seed(2), dtype=torch.float32, return_labels=True)
    assert x32.dtype == torch.float32 and k.shape == (10,)


def test_score_matches_autograd(mixture, schedule):
    model = optimal_eps_model(mixture, schedule)
    x = torch.randn(6, 2, dtype=F64, generator=torch.Generator().manual_seed(3)).requires_grad_(True)
    for t in [0, 37, 500, 999]:
        qt = model.diffused(t)
        (grad,) = torch.autograd.grad(qt.log_prob(x).sum(), x)
        assert torch.allclose(model.score(x.detach(), t), grad, atol=1e-10)
        assert torch.allclose(model.log_prob(x.detach(), t), qt.log_prob(x.detach()), atol=1e-12)
    (grad,) = torch.autograd.grad(mixture.log_prob(x).sum(), x)
    assert torch.allclose(mixture.score(x.detach()), grad, atol=1e-10)


def test_diffused_matches_q_sample_moments(mixture, schedule):
    g = torch.Generator().manual_seed(4)
    t = 199
    x0 = mixture.sample(200_000, g)
    xt = diffusion.q_sample(schedule, x0, torch.full((200_000,), t), generator=g)
    qt = optimal_eps_model(mixture, schedule).diffused(t)
    assert torch.allclose(xt.mean(0), qt.mean(), atol=0.01)
    assert torch.allclose(torch.cov(xt.T), qt.cov(), atol=0.01)


def test_optimal_eps_matches_monte_carlo_binning():
    """E[ε | x_t] by binning x_t on a 1-D two-component mixture, at several steps."""
    mix = GaussianMixture([0.3, 0.7], [[-0.6], [0.5]], stds=[0.1, 0.2])
    sch = linear_schedule(1000)
    model = optimal_eps_model(mix, sch)
    g = torch.Generator().manual_seed(5)
    n = 400_000
    for t in [20, 150, 600]:
        x0 = mix.sample(n, g)
        eps = torch.randn(n, 1, generator=g, dtype=F64)
        xt = diffusion.q_sample(sch, x0, torch.full((n,), t), noise=eps)
        for c in [-0.5, 0.0, 0.4]:
            near = (xt[:, 0] - c).abs() < 0.01
            assert near.sum() > 500
            mc, se = eps[near, 0].mean(), eps[near, 0].std() / math.sqrt(int(near.sum()))
            star = model(torch.tensor([[c]], dtype=F64), torch.tensor([t]))[0, 0]
            assert abs(mc - star) < 4 * se + 0.02, (t, c, mc.item(), star.item(), se.item())


def test_optimal_eps_is_the_regression_of_eps_on_x_t(mixture, schedule):
    """E[(ε − ε*(x_t)) g(x_t)] = 0 for test functions g, and ε* beats perturbed predictors in MSE (2-D, mixed t)."""
    model = optimal_eps_model(mixture, schedule)
    g = torch.Generator().manual_seed(6)
    n = 200_000
    x0 = mixture.sample(n, g)
    t = torch.randint(0, schedule.T, (n,), generator=g)
    eps = torch.randn(n, 2, generator=g, dtype=F64)
    xt = diffusion.q_sample(schedule, x0, t, noise=eps)
    star = model(xt, t)
    resid = eps - star
    for feat in [xt, xt ** 2, torch.sin(3 * xt), torch.ones_like(xt)]:
        corr = (resid * feat).mean(0)
        se = (resid * feat).std(0) / math.sqrt(n)
        assert (corr.abs() < 4 * se).all(), (corr, se)
    mse = resid.pow(2).mean()
    for pert in [1.05 * star, 0.95 * star, star + 0.05]:
        assert (eps - pert).pow(2).mean() > mse


def test_gaussian_data_gives_linear_eps():
    """For one Gaussian N(m, s²) the optimal ε is linear: E[ε|x_t] = √(1−ᾱ)(x_t − √ᾱ m)/(ᾱ s² + 1 − ᾱ)."""
    m, s = 0.3, 0.4
    mix = GaussianMixture([1.0], [[m]], stds=[s])
    sch = linear_schedule(100)
    model = optimal_eps_model(mix, sch)
    x = torch.linspace(-2, 2, 9, dtype=F64)[:, None]
    for t in [0, 50, 99]:
        ab = sch.alpha_bars[t]
        expect = (1 - ab).sqrt() * (x - ab.sqrt() * m) / (ab * s ** 2 + 1 - ab)
        assert torch.allclose(model(x, t), expect, atol=1e-12)
        # and its mean (3.7) is the exact reverse mean E[x_{t-1} | x_t] of the joint Gaussian
        ab_prev, a, b = sch.alpha_bars_prev[t], sch.alphas[t], sch.betas[t]
        m_prev, v_prev = ab_prev.sqrt() * m, ab_prev * s ** 2 + 1 - ab_prev
        rev = m_prev + a.sqrt() * v_prev / (a * v_prev + b) * (x - a.sqrt() * m_prev)
        assert torch.allclose(diffusion.mean_from_eps(sch, x, torch.full((9,), t), model(x, t)), rev, atol=1e-12)


def test_reverse_log_prob_is_a_normalised_density(mixture, schedule):
    model = optimal_eps_model(mixture, schedule)
    xs = torch.linspace(-1.5, 1.5, 301, dtype=F64)
    X, Y = torch.meshgrid(xs, xs, indexing="ij")
    pts = torch.stack([X.flatten(), Y.flatten()], 1)
    for t, xt in [(30, [0.2, 0.1]), (400, [-0.5, 0.7])]:
        lp = model.reverse_log_prob(pts, torch.tensor([xt], dtype=F64).expand_as(pts), t)
        assert abs((lp.exp().sum() * (xs[1] - xs[0]) ** 2).item() - 1) < 1e-3


def test_large_t_eps_is_x_t(mixture, schedule):
    model = optimal_eps_model(mixture, schedule)
    x = torch.randn(10, 2, dtype=F64, generator=torch.Generator().manual_seed(7))
    assert torch.allclose(model(x, 999), x, atol=0.02)


def test_model_interface(mixture, schedule):
    model = optimal_eps_model(mixture, schedule)
    assert isinstance(model, OptimalDenoiser)
    x = torch.randn(4, 2)
    out = model(x, torch.tensor([0, 10, 100, 999]), y=torch.tensor([1, 2, 3, 4]))   # y is ignored
    assert out.shape == x.shape and out.dtype == torch.float32
    # per-item t equals one call per t
    for i, t in enumerate([0, 10, 100, 999]):
        assert torch.allclose(out[i], model(x[i:i + 1], t)[0])
    # (B, 1, 1, 2) inputs with D numbers per item are flattened and restored
    assert model(x.reshape(4, 1, 1, 2), 5).shape == (4, 1, 1, 2)
    with pytest.raises(ValueError):
        model(x, 1000)
    with pytest.raises(ValueError):
        model(torch.randn(4, 3), 0)


@pytest.mark.parametrize("kwargs", [
    dict(weights=[1.0, 1.0], means=[[0.0, 0.0]], stds=[0.1]),                   # weights vs means
    dict(weights=[1.0], means=[[0.0, 0.0]]),                                    # neither covs nor stds
    dict(weights=[1.0], means=[[0.0, 0.0]], covs=torch.eye(2)[None], stds=1.0),  # both
    dict(weights=[-1.0], means=[[0.0, 0.0]], stds=[0.1]),                       # negative weight
    dict(weights=[1.0], means=[[0.0, 0.0]], covs=-torch.eye(2)[None]),          # not positive definite
    dict(weights=[1.0], means=[0.0, 0.0], stds=[0.1]),                          # means not (K, D)
])
def test_bad_input(kwargs):
    with pytest.raises(ValueError):
        GaussianMixture(**kwargs)
