"""Classifier guidance against exact answers on an anisotropic 2-D Gaussian mixture (book chapter 7).

The mixture's components are the classes, so the exact noisy classifier p(y | x_t) is Bayes' rule on the diffused
components (`GaussianMixture.diffuse`), and the exact conditional models are the optimal denoisers of the single
components. tests/test_guidance.py covers the isotropic two-class case, the mean shift of eq. (7.1) and DDPM at
scale 0; these tests add the anisotropic mixture of chapter 4, the score identity (7.9), the ancestral shift against
the exact conditional mean, finite differences (also through a real network), and DDIM at scale 0.
"""
import pytest
import torch

from diffusion_lab import diffusion
from diffusion_lab.gaussian_mixture import GaussianMixture, example_mixture_2d, optimal_eps_model
from diffusion_lab.guidance import ClassifierGuidance
from diffusion_lab.models import NoisyClassifier
from diffusion_lab.sampling import ddim_sample, p_sample
from diffusion_lab.schedules import linear_schedule

F64 = torch.float64


@pytest.fixture(scope="module")
def lab():
    sch = linear_schedule(1000)
    mix = example_mixture_2d()
    comps = [GaussianMixture([1.0], mix.means[k:k + 1], mix.covs[k:k + 1]) for k in range(mix.K)]

    def exact_logits(x, t):
        """log w_y + log q_t(x | y): logits of the exact p(y | x_t), differentiable in x."""
        t = torch.as_tensor(t).reshape(-1).expand(x.shape[0])
        out = torch.zeros(x.shape[0], mix.K, dtype=F64)
        for tv in t.unique().tolist():
            rows = t == tv
            ab = float(sch.alpha_bars[tv])
            out[rows] = torch.stack([mix.weights[k].log() + comps[k].diffuse(ab).log_prob(x[rows])
                                     for k in range(mix.K)], 1)
        return out

    uncond = optimal_eps_model(mix, sch)
    cond = [optimal_eps_model(c, sch) for c in comps]

    def cond_model(x, t, y=None):
        return torch.stack([m(x, t) for m in cond])[y, torch.arange(x.shape[0])]

    return dict(sch=sch, mix=mix, logits=exact_logits, uncond=uncond, cond=cond, cond_model=cond_model)


def _points(n, seed):
    g = torch.Generator().manual_seed(seed)
    x = 1.5 * torch.randn(n, 2, generator=g, dtype=F64)
    t = torch.randint(0, 1000, (n,), generator=g)
    y = torch.randint(0, 3, (n,), generator=g)
    return x, t, y


def test_exact_classifier_gradient_is_the_difference_of_scores(lab):
    """(7.9): ∇ log q_t(x) + ∇ log p(y | x_t) = ∇ log q_t(x | y), with the gradient from ClassifierGuidance."""
    x, t, y = _points(400, 0)
    grad = ClassifierGuidance(lab["logits"], 1.0).grad_log_prob(x, t, y)
    cond_score = torch.stack([m.score(x, t) for m in lab["cond"]])[y, torch.arange(400)]
    torch.testing.assert_close(lab["uncond"].score(x, t) + grad, cond_score, rtol=1e-9, atol=1e-9)


def test_guided_eps_at_scale_one_is_the_conditional_eps(lab):
    """(7.2) with s = 1 and the exact classifier is E[ε | x_t, y]; with s = 2 it moves twice as far."""
    x, t, y = _points(400, 1)
    eps_u = lab["uncond"](x, t)
    eps_c = lab["cond_model"](x, t, y)
    g1 = ClassifierGuidance(lab["logits"], 1.0).adjust_eps(eps_u, lab["sch"], x, t, y)
    g2 = ClassifierGuidance(lab["logits"], 2.0).adjust_eps(eps_u, lab["sch"], x, t, y)
    torch.testing.assert_close(g1, eps_c, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(g2 - eps_u, 2 * (eps_c - eps_u), rtol=1e-9, atol=1e-9)


def test_ancestral_shift_is_the_exact_conditional_shift_times_sqrt_alpha(lab):
    """(7.1) with σ² = β_t moves the mean by β_t ∇ log p(y|x_t); the exact conditional mean moves by β_t/√α_t times
    the same gradient. Same direction, ratio √α_t, at every step."""
    sch = lab["sch"]
    x, t, y = _points(300, 2)
    z = torch.zeros_like(x)
    plain = p_sample(lab["uncond"], sch, x, t, noise=z)
    guided = p_sample(lab["uncond"], sch, x, t, y=y, noise=z, guidance=ClassifierGuidance(lab["logits"], 1.0))
    exact_cond = diffusion.p_mean_variance(lab["cond_model"], sch, x, t, y=y)["mean"]
    sqrt_a = sch.alphas[t].sqrt()[:, None]
    torch.testing.assert_close(guided - plain, sqrt_a * (exact_cond - plain), rtol=1e-8, atol=1e-12)


def test_guided_ddim_with_the_exact_classifier_is_conditional_ddim(lab):
    y = torch.arange(60) % 3
    x_T = torch.randn(60, 2, generator=torch.Generator().manual_seed(3), dtype=F64)
    a = ddim_sample(lab["uncond"], lab["sch"], None, x_T=x_T, steps=25, y=y,
                    guidance=ClassifierGuidance(lab["logits"], 1.0), progress=False)
    b = ddim_sample(lab["cond_model"], lab["sch"], None, x_T=x_T, steps=25, y=y, progress=False)
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
    assert (lab["mix"].responsibilities(a).argmax(1) == y).double().mean() > 0.95


def test_exact_classifier_gradient_matches_finite_differences(lab):
    x, t, y = _points(200, 4)
    grad = ClassifierGuidance(lab["logits"], 1.0).grad_log_prob(x, t, y)
    h = 1e-5

    def logp(z):
        return lab["logits"](z, t).log_softmax(1)[torch.arange(200), y]

    fd = torch.stack([(logp(x + h * e) - logp(x - h * e)) / (2 * h) for e in torch.eye(2, dtype=F64)], 1)
    assert ((grad - fd).abs() / (1 + grad.abs())).max() < 1e-6


def test_network_classifier_gradient_matches_finite_differences():
    """The gradient through a real NoisyClassifier (float64, random weights) against directional differences."""
    torch.manual_seed(0)
    clf = NoisyClassifier(base_channels=8, channel_mults=(1, 2), num_res_blocks=1, attention_resolutions=(4,),
                          num_classes=10).double().eval()
    g = torch.Generator().manual_seed(5)
    x = torch.randn(4, 1, 8, 8, generator=g, dtype=F64)
    t = torch.tensor([0, 10, 500, 999])
    y = torch.tensor([3, 0, 9, 5])
    grad = ClassifierGuidance(clf, 1.0).grad_log_prob(x, t, y)
    assert grad.shape == x.shape and grad.abs().max() > 0
    h = 1e-6
    with torch.no_grad():
        def logp(z):
            return clf(z, t).log_softmax(1)[torch.arange(4), y]
        for _ in range(3):
            v = torch.randn(x.shape, generator=g, dtype=F64)
            fd = (logp(x + h * v) - logp(x - h * v)) / (2 * h)
            torch.testing.assert_close((grad * v).sum((1, 2, 3)), fd, rtol=1e-6, atol=1e-8)


def test_scale_zero_ddim_with_noise_equals_unguided_and_never_calls_the_classifier(lab):
    calls = []

    def counting(x, t):
        calls.append(x.shape[0])
        return lab["logits"](x, t)

    y = torch.arange(8) % 3
    a = ddim_sample(lab["uncond"], lab["sch"], (8, 2), steps=20, eta=1.0, y=y,
                    guidance=ClassifierGuidance(counting, 0.0), generator=torch.Generator().manual_seed(6),
                    progress=False)
    b = ddim_sample(lab["uncond"], lab["sch"], (8, 2), steps=20, eta=1.0,
                    generator=torch.Generator().manual_seed(6), progress=False)
    torch.testing.assert_close(a, b)
    assert calls == []
    ddim_sample(lab["uncond"], lab["sch"], (8, 2), steps=20, eta=1.0, y=y, guidance=ClassifierGuidance(counting, 0.5),
                generator=torch.Generator().manual_seed(6), progress=False)
    assert calls == [8] * 20
