"""Classifier-free guidance (book chapter 8) against exact answers on a *labelled* Gaussian mixture from
``gaussian_mixture`` (labels own groups of components, anisotropic covariances), and on real networks.

What tests/test_guidance.py already checks (on the two-class ``gaussian_mixture`` oracle) is not repeated here: the limits
w = 0 / w = −1 and the formula at the ε level, that CFG is one call on 2B items with the null label, DDPM sampling at
w = 0, and the interval (8.2). Added here: w = 0 on DDIM and on real networks; the batched 2B forward against two
separate forwards of real networks (GroupNorm, attention, label embedding); and the guided field against the exact
implicit classifier (8.6)–(8.7), the identity (8.5), and a hand-written DDIM loop on the exact field.
"""
import math

import pytest
import torch

from diffusion_lab.gaussian_mixture import GaussianMixture, optimal_eps_model
from diffusion_lab.guidance import ClassifierFreeGuidance, ClassifierGuidance, null_label
from diffusion_lab.models import build_model
from diffusion_lab.sampling import ddim_sample, ddim_timesteps, ddpm_sample
from diffusion_lab.schedules import linear_schedule


def _rot(deg, s1, s2):
    a = math.radians(deg)
    R = torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]], dtype=torch.float64)
    return R @ torch.diag(torch.tensor([s1 ** 2, s2 ** 2], dtype=torch.float64)) @ R.T


# five components, three labels: label 1 owns two components (one overlapping label 0), label 2 owns two
MEANS = [[-0.5, 0.0], [0.5, 0.0], [1.3, 0.6], [0.0, -1.0], [-1.1, -0.9]]
COVS = torch.stack([_rot(0, 0.35, 0.35), _rot(30, 0.35, 0.15), _rot(0, 0.2, 0.2), _rot(-40, 0.3, 0.1),
                    _rot(10, 0.15, 0.25)])
WEIGHTS = [0.3, 0.2, 0.1, 0.25, 0.15]
LABELS = torch.tensor([0, 1, 1, 2, 2])
K = 3


class LabelledMixture:
    """Exact ε*(x_t, t, y) for the labelled mixture: label y uses its sub-mixture, the null label K the whole one."""

    def __init__(self, schedule):
        self.num_classes = K
        self.schedule = schedule
        self.full = GaussianMixture(WEIGHTS, MEANS, COVS)
        idx = [torch.nonzero(LABELS == k)[:, 0] for k in range(K)]
        self.subs = [GaussianMixture([WEIGHTS[i] for i in ix], [MEANS[i] for i in ix], COVS[ix]) for ix in idx]
        self.prior = torch.tensor([sum(WEIGHTS[i] for i in ix) for ix in idx], dtype=torch.float64)
        self.eps = [optimal_eps_model(m, schedule) for m in self.subs] + [optimal_eps_model(self.full, schedule)]

    def __call__(self, x, t, y=None):
        B = x.shape[0]
        y = torch.full((B,), K) if y is None else y
        t = torch.as_tensor(t)
        t = t.expand(B) if t.dim() == 0 else t
        out = torch.empty_like(x)
        for k in y.unique().tolist():
            m = y == k
            out[m] = self.eps[k](x[m], t[m])
        return out

    def log_posterior_at(self, x, t: int):
        """log p_t(y | x_t) (B, K) at one code index t, differentiable in x: Bayes' rule on the diffused mixtures."""
        ab = float(self.schedule.alpha_bars[t])
        logs = torch.stack([m.diffuse(ab).log_prob(x) for m in self.subs], 1) + self.prior.log()
        return logs - self.full.diffuse(ab).log_prob(x)[:, None]

    def classifier(self, x, t):
        """An exact noise-aware classifier ``classifier(x_t, t) -> logits`` (log-posteriors), per-item t."""
        out = torch.empty(x.shape[0], K, dtype=torch.float64)
        for tt in t.unique().tolist():
            m = t == tt
            out[m] = self.log_posterior_at(x[m], tt)
        return out


@pytest.fixture(scope="module")
def sch():
    return linear_schedule(200, 1e-4 * 5, 0.02 * 5)


@pytest.fixture(scope="module")
def lm(sch):
    return LabelledMixture(sch)


def _points(n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return 1.4 * torch.randn(n, 2, generator=g, dtype=torch.float64), torch.arange(n) % K


# ----------------------------------------------------------------------------- the exact field
@pytest.mark.parametrize("t", [0, 20, 100, 199])
def test_null_denoiser_is_the_posterior_average_of_the_conditional_ones(lm, t):
    """(8.5): ε*(x_t, t, ∅) = Σ_y p_t(y | x_t) ε*(x_t, t, y) — what label dropout trains the null label towards."""
    x, _ = _points(40, seed=t)
    tt = torch.full((40,), t)
    post = lm.log_posterior_at(x, t).exp()
    assert (post.sum(1) - 1).abs().max() < 1e-12
    avg = sum(post[:, k:k + 1] * lm(x, tt, torch.full((40,), k)) for k in range(K))
    torch.testing.assert_close(lm(x, tt), avg, rtol=0, atol=1e-12)


@pytest.mark.parametrize("w", [0.5, 2.0, 7.0])
def test_package_cfg_is_the_exact_implicit_classifier_field(lm, sch, w):
    """The package's CFG ε̃ on the exact denoisers equals −√(1−ᾱ)[∇log p_t(x) + (1+w)∇log p_t(y|x)] with the
    implicit-classifier gradient taken by autograd through Bayes' rule (8.6), and equals classifier guidance driven
    by the exact classifier at scale s = 1 + w (8.7) — not at scale w."""
    for t in (0, 30, 120, 199):
        x, y = _points(12, seed=t + 1)
        tt = torch.full((12,), t)
        ab = float(sch.alpha_bars[t])
        xr = x.clone().requires_grad_(True)
        (g_cls,) = torch.autograd.grad(lm.log_posterior_at(xr, t).gather(1, y[:, None]).sum(), xr)
        score = lm.full.diffuse(ab).score(x)
        exact = -math.sqrt(1 - ab) * (score + (1 + w) * g_cls)
        cfg = ClassifierFreeGuidance(w).eps(lm, x, tt, y)
        torch.testing.assert_close(cfg, exact, rtol=0, atol=1e-10)
        eps_null = lm(x, tt)
        cg = ClassifierGuidance(lm.classifier, 1 + w).adjust_eps(eps_null, sch, x, tt, y)
        torch.testing.assert_close(cfg, cg, rtol=0, atol=1e-10)
        wrong = ClassifierGuidance(lm.classifier, w).adjust_eps(eps_null, sch, x, tt, y)
        assert (cfg - wrong).abs().max() > 1e-3                      # scale w is a different field


def test_package_cfg_ddim_equals_a_hand_written_loop_on_the_exact_field(lm, sch):
    """Sampling, not just one step: the package's DDIM with CFG (8.1) equals DDIM written out by hand on the exact
    field (1+w)·ε*(y) − w·ε*(∅), computed from the separate denoisers."""
    w, steps = 1.5, 15
    xT, y = _points(9, seed=5)
    got = ddim_sample(lm, sch, None, x_T=xT, steps=steps, y=y, guidance=ClassifierFreeGuidance(w), progress=False)
    ts = ddim_timesteps(sch.T, steps).tolist()
    x = xT.clone()
    for i in range(len(ts) - 1, -1, -1):
        t, t_prev = ts[i], (ts[i - 1] if i > 0 else -1)
        tt = torch.full((9,), t)
        eps = (1 + w) * torch.stack([lm.eps[int(k)](x[j:j + 1], tt[j:j + 1])[0] for j, k in enumerate(y)]) \
            - w * lm.eps[K](x, tt)
        ab = sch.alpha_bars[t]
        ab_prev = sch.alpha_bars[t_prev] if t_prev >= 0 else torch.tensor(1.0, dtype=torch.float64)
        x0 = (x - (1 - ab).sqrt() * eps) / ab.sqrt()
        x = ab_prev.sqrt() * x0 + (1 - ab_prev).sqrt() * eps
    torch.testing.assert_close(got, x, rtol=0, atol=1e-9)


def test_cfg_w0_ddim_equals_conditional_ddim_on_the_mixture(lm, sch):
    xT, y = _points(8, seed=7)
    a = ddim_sample(lm, sch, None, x_T=xT, steps=25, y=y, guidance=ClassifierFreeGuidance(0.0), progress=False)
    b = ddim_sample(lm, sch, None, x_T=xT, steps=25, y=y, progress=False)
    assert torch.equal(a, b)
    # and w > 0 does move the samples (the comparison above could not pass by accident)
    c = ddim_sample(lm, sch, None, x_T=xT, steps=25, y=y, guidance=ClassifierFreeGuidance(2.0), progress=False)
    assert (c - b).abs().max() > 1e-2


# ----------------------------------------------------------------------------- real networks
def _nets():
    torch.manual_seed(0)
    unet = build_model("unet", in_channels=1, image_size=8, base_channels=32, channel_mults=(1, 2), num_res_blocks=1,
                       attention_resolutions=(4,), dropout=0.1, num_classes=10).eval()
    mlp = build_model("mlp", data_dim=2, hidden_dim=64, num_classes=3, dropout=0.1).eval()
    with torch.no_grad():                        # zero-initialised layers (the output conv) get random weights,
        for m in (unet, mlp):                    # and the label embedding too, so labels really change the output
            for p in m.parameters():
                if p.abs().max() == 0:
                    p.normal_(0.0, 0.05)
            m.label_embed.weight.normal_()
    return [(unet, (1, 8, 8), 10), (mlp, (2,), 3)]


@pytest.mark.parametrize("idx", [0, 1], ids=["unet", "mlp"])
def test_batched_2b_forward_equals_two_separate_forwards(idx):
    """CFG evaluates the conditional and the null pass as one batch of 2B; in eval mode (GroupNorm and attention
    act per item, dropout is off) that must equal two separate calls."""
    net, shape, n_cls = _nets()[idx]
    g = torch.Generator().manual_seed(idx)
    B = 6
    x = torch.randn(B, *shape, generator=g)
    t = torch.randint(0, 1000, (B,), generator=g)
    y = torch.randint(0, n_cls, (B,), generator=g)
    with torch.no_grad():
        cond = net(x, t, y=y)
        null = net(x, t, y=null_label(n_cls, B))
        assert (cond - null).abs().max() > 1e-3                      # the label matters to this network
        for w in (0.5, 3.0):
            batched = ClassifierFreeGuidance(w).eps(net, x, t, y)
            torch.testing.assert_close(batched, (1 + w) * cond - w * null, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("idx", [0, 1], ids=["unet", "mlp"])
def test_cfg_w0_sampling_equals_conditional_sampling_on_networks(idx):
    net, shape, n_cls = _nets()[idx]
    B = 4
    y = torch.arange(B) % n_cls
    short = linear_schedule(100)
    with torch.no_grad():
        for sampler, kw in ((ddim_sample, {"steps": 8}), (ddpm_sample, {})):
            if sampler is ddpm_sample and idx == 0:
                continue                                             # DDIM covers the UNet
            a = sampler(net, short, (B, *shape), y=y, guidance=ClassifierFreeGuidance(0.0),
                        generator=torch.Generator().manual_seed(3), progress=False, **kw)
            b = sampler(net, short, (B, *shape), y=y,
                        generator=torch.Generator().manual_seed(3), progress=False, **kw)
            assert torch.equal(a, b)
