"""The exact conditional denoiser of a labelled Gaussian mixture (``OptimalDenoiser(mixture, schedule, labels=...)``,
book chapter 8): a class owns a group of components. Checked against Monte Carlo (importance sampling of
E[ε | x_t, y] and p_t(y | x_t) from draws of x_0 ~ q(x_0 | y)), against the known cases (one component per class,
one class for all), against Bayes' rule through ``log_prob``, the identity (8.5) and the gradient identity (8.6)."""
import math

import pytest
import torch

from diffusion_lab.gaussian_mixture import GaussianMixture, OptimalDenoiser, optimal_eps_model
from diffusion_lab.schedules import linear_schedule

MEANS = [[-0.5, 0.0], [0.5, 0.0], [1.3, 0.6], [0.0, -1.0]]
STDS = [0.35, 0.35, 0.2, 0.3]
WEIGHTS = [0.35, 0.25, 0.1, 0.3]
LABELS = [0, 1, 1, 2]                  # class 1 owns two components, one of them overlapping class 0


@pytest.fixture(scope="module")
def sch():
    return linear_schedule(1000)


@pytest.fixture(scope="module")
def mix():
    return GaussianMixture(WEIGHTS, MEANS, stds=STDS)


@pytest.fixture(scope="module")
def den(mix, sch):
    return OptimalDenoiser(mix, sch, labels=LABELS)


def _points(n, seed):
    g = torch.Generator().manual_seed(seed)
    return 1.3 * torch.randn(n, 2, generator=g, dtype=torch.float64)


def test_structure(den, mix):
    assert den.num_classes == 3
    torch.testing.assert_close(den.label_prior, torch.tensor([0.35, 0.35, 0.3], dtype=torch.float64))
    sub = den.sub_mixture(1)
    assert sub.K == 2
    torch.testing.assert_close(sub.weights, torch.tensor([0.25, 0.1], dtype=torch.float64) / 0.35)
    torch.testing.assert_close(sub.means, mix.means[1:3])
    assert "labels=[0, 1, 1, 2]" in repr(den)


@pytest.mark.parametrize("t", [150, 400])
def test_against_monte_carlo(den, sch, t):
    """E[ε | x_t, y] and p_t(y | x_t) by self-normalised importance sampling: draw x_0 ~ q(x_0 | y), weight each
    by q(x_t | x_0) = N(√ᾱ x_0, (1−ᾱ) I); ε = (x_t − √ᾱ x_0)/√(1−ᾱ). The exact values must lie within 5 standard
    errors of the estimates."""
    ab = float(sch.alpha_bars[t])
    x_t = _points(6, seed=t)
    g = torch.Generator().manual_seed(100 + t)
    n = 100_000
    log_lik_by_class = []
    for y in range(3):
        x0 = den.sub_mixture(y).sample(n, g)                                           # (n, 2)
        d = x_t[:, None, :] - math.sqrt(ab) * x0[None]                                 # (6, n, 2)
        log_w = -0.5 * d.pow(2).sum(-1) / (1 - ab) - math.log(2 * math.pi * (1 - ab))  # log q(x_t | x_0), D = 2
        w = torch.softmax(log_w, dim=1)                                                # (6, n)
        eps = d / math.sqrt(1 - ab)
        mc = (w[:, :, None] * eps).sum(1)
        # standard error of a self-normalised estimate: sqrt(Σ w² (ε − mean)²)
        se = (w[:, :, None] ** 2 * (eps - mc[:, None]) ** 2).sum(1).sqrt()
        exact = den(x_t, torch.full((6,), t), torch.full((6,), y))
        assert ((exact - mc).abs() <= 5 * se + 1e-9).all(), (y, exact, mc, se)
        log_lik_by_class.append(torch.logsumexp(log_w, dim=1) - math.log(n))           # log q_t(x_t | y), MC
    log_joint = torch.stack(log_lik_by_class, 1) + den.label_prior.log()
    post_mc = torch.softmax(log_joint, dim=1)
    post = den.classifier(x_t, torch.full((6,), t)).exp()
    torch.testing.assert_close(post, post_mc, rtol=0, atol=0.02)


def test_known_cases(mix, sch):
    """One component per class is ``conditional=True``; one class owning everything is the unconditional model."""
    x, t = _points(50, 1), torch.randint(0, 1000, (50,), generator=torch.Generator().manual_seed(2))
    per_comp = OptimalDenoiser(mix, sch, labels=range(4))
    cond = OptimalDenoiser(mix, sch, conditional=True)
    for y in range(4):
        yy = torch.full((50,), y)
        torch.testing.assert_close(per_comp(x, t, yy), cond(x, t, yy), rtol=0, atol=0)
    torch.testing.assert_close(per_comp.classifier(x, t), cond.classifier(x, t), rtol=0, atol=0)
    one = OptimalDenoiser(mix, sch, labels=[0, 0, 0, 0])
    uncond = optimal_eps_model(mix, sch)
    torch.testing.assert_close(one(x, t, torch.zeros(50, dtype=torch.long)), uncond(x, t), rtol=0, atol=1e-14)
    assert one.classifier(x, t).abs().max() < 1e-12                                     # log p(y=0 | x_t) = 0


def test_bayes_identity_and_eq_8_5(den, sch):
    x, t = _points(200, 3), torch.randint(0, 1000, (200,), generator=torch.Generator().manual_seed(4))
    log_post = den.classifier(x, t)
    bayes = (torch.stack([optimal_eps_model(den.sub_mixture(y), sch).log_prob(x, t) for y in range(3)], 1)
             + den.label_prior.log() - optimal_eps_model(den.mixture, sch).log_prob(x, t)[:, None])
    torch.testing.assert_close(log_post, bayes, rtol=0, atol=1e-10)
    eps_y = torch.stack([den(x, t, torch.full((200,), y)) for y in range(3)], 1)         # (B, 3, 2)
    avg = (log_post.exp()[:, :, None] * eps_y).sum(1)                                   # (8.5)
    torch.testing.assert_close(den(x, t), avg, rtol=0, atol=1e-12)
    torch.testing.assert_close(den(x, t, torch.full((200,), 3)), den(x, t), rtol=0, atol=0)   # null label = y=None


def test_gradient_is_the_implicit_classifier_eq_8_6(den, sch):
    x, t = _points(100, 5), torch.randint(0, 1000, (100,), generator=torch.Generator().manual_seed(6))
    y = torch.arange(100) % 3
    xr = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(den.classifier(xr, t).gather(1, y[:, None]).sum(), xr)
    implicit = -(den(x, t, y) - den(x, t)) / (1 - sch.alpha_bars[t]).sqrt()[:, None]
    torch.testing.assert_close(grad, implicit, rtol=0, atol=1e-9)


@pytest.mark.parametrize("labels, match", [([0, 1, 1], "shape"), ([0, 1, 3, 3], "own no component"),
                                           ([0, -1, 1, 1], ">= 0"), ([0.0, 1.0, 1.0, 2.0], "integer"),
                                           ("abcd", "class")])
def test_bad_labels(mix, sch, labels, match):
    with pytest.raises(ValueError, match=match):
        OptimalDenoiser(mix, sch, labels=labels)


def test_unlabelled_denoiser_has_no_classes(mix, sch):
    with pytest.raises(ValueError, match="labelled"):
        _ = optimal_eps_model(mix, sch).label_prior
    with pytest.raises(ValueError, match="class in"):
        OptimalDenoiser(mix, sch, labels=LABELS).sub_mixture(3)
