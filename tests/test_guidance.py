"""Guidance rules against exact answers: CFG's limits (w = 0, w = −1), its one batched call, and classifier
guidance's mean shift against a classifier whose gradient is known in closed form (two Gaussian classes)."""
import pytest
import torch

from diffusion_lab import diffusion
from diffusion_lab.guidance import ClassifierFreeGuidance, ClassifierGuidance, Guidance, check_labels
from diffusion_lab.gaussian_mixture import GaussianMixtureOracle
from diffusion_lab.sampling import ddim_sample, ddpm_sample, p_sample
from diffusion_lab.schedules import linear_schedule

MEANS = torch.tensor([[1.5, 0.0], [-1.5, 0.5]], dtype=torch.float64)
STD = 0.4




@pytest.fixture(scope="module")
def sch():
    return linear_schedule(200, 1e-4 * 5, 0.02 * 5)


@pytest.fixture(scope="module")
def mix(sch):
    return GaussianMixtureOracle(sch, MEANS, STD)


class CountingModel:
    """Wraps a model and records each call's batch size and labels."""

    def __init__(self, model):
        self.model, self.calls = model, []
        self.num_classes = getattr(model, "num_classes", None)

    def __call__(self, x, t, y=None):
        self.calls.append((x.shape[0], None if y is None else y.clone()))
        return self.model(x, t, y)


def analytic_grad_log_p(sch, x, t, y):
    """∇_x log p(y | x_t) for two equally likely Gaussian classes, by hand: x_t | k ~ N(√ᾱ m_k, v I), so
    ∇ log p(y|x) = √ᾱ (m_y − Σ_k p(k|x) m_k) / v."""
    ab = sch.alpha_bars[t].reshape(-1, 1)
    v = ab * STD ** 2 + 1 - ab
    d2 = torch.stack([((x - ab.sqrt() * m) ** 2).sum(1) for m in MEANS], 1)
    post = torch.softmax(-d2 / (2 * v), 1)
    return ab.sqrt() * (MEANS[y] - post @ MEANS) / v


def _x(n=6, seed=0):
    return torch.randn(n, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- CFG
def test_cfg_limits_and_formula(sch, mix):
    x, t, y = _x(), torch.tensor([0, 3, 50, 100, 150, 199]), torch.tensor([0, 1, 1, 0, 1, 0])
    cond, uncond = mix(x, t, y), mix(x, t, torch.full((6,), 2))
    torch.testing.assert_close(ClassifierFreeGuidance(0.0).eps(mix, x, t, y), cond)        # w = 0: conditional
    torch.testing.assert_close(ClassifierFreeGuidance(-1.0).eps(mix, x, t, y), uncond)     # w = −1: unconditional
    for w in (0.5, 3.0):
        torch.testing.assert_close(ClassifierFreeGuidance(w).eps(mix, x, t, y), (1 + w) * cond - w * uncond)


def test_cfg_is_one_batched_call_with_the_null_label(sch, mix):
    model = CountingModel(mix)
    x, t, y = _x(4), torch.full((4,), 20), torch.tensor([0, 1, 1, 0])
    ClassifierFreeGuidance(2.0).eps(model, x, t, y)
    assert len(model.calls) == 1
    b, labels = model.calls[0]
    assert b == 8 and labels.tolist() == [0, 1, 1, 0, 2, 2, 2, 2]          # null label = num_classes
    model.calls.clear()
    ddim_sample(model, sch, (4, 2), steps=10, y=y, guidance=ClassifierFreeGuidance(2.0), progress=False)
    assert len(model.calls) == 10 and all(b == 8 for b, _ in model.calls)


def test_cfg_w0_sampling_equals_conditional_sampling(sch, mix):
    y = torch.tensor([0, 1, 0, 1])
    a = ddpm_sample(mix, sch, (4, 2), y=y, guidance=ClassifierFreeGuidance(0.0),
                    generator=torch.Generator().manual_seed(1), progress=False)
    b = ddpm_sample(mix, sch, (4, 2), y=y, generator=torch.Generator().manual_seed(1), progress=False)
    torch.testing.assert_close(a, b)


def test_cfg_num_classes_and_labels_are_validated(mix):
    x, t = _x(2), torch.tensor([3, 4])
    with pytest.raises(ValueError, match="num_classes"):
        ClassifierFreeGuidance(1.0).eps(lambda x, t, y=None: x, x, t, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 1\]"):       # the null label is not a target
        ClassifierFreeGuidance(1.0).eps(mix, x, t, torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="positive int"):
        ClassifierFreeGuidance(1.0, num_classes=0)
    with pytest.raises(TypeError, match="guidance_scale"):
        ClassifierFreeGuidance("7.5")
    with pytest.raises(ValueError, match="needs target labels"):
        ClassifierFreeGuidance(1.0).eps(mix, x, t, None)
    with pytest.raises(TypeError, match="integer"):
        check_labels(torch.tensor([0.0, 1.0]), 2)
    # num_classes is also read from model.config (how diffusion_lab.models keep it)
    class Cfg:
        num_classes = 2

    def cfg_model(x, t, y=None):
        return mix(x, t, y)

    cfg_model.config = Cfg()
    torch.testing.assert_close(ClassifierFreeGuidance(-1.0).eps(cfg_model, x, t, torch.tensor([0, 1])), mix(x, t))
    # an explicit num_classes wins over the model's attribute
    assert ClassifierFreeGuidance(1.0, num_classes=2).eps(lambda x, t, y=None: x * (y[:, None] < 2), x, t,
                                                           torch.tensor([0, 1])).shape == x.shape


def test_cfg_interval_switches_guidance_per_item(sch, mix):
    """(8.2): inside the interval ε̃ is (8.1), outside it the conditional ε — item by item."""
    x, t, y = _x(), torch.tensor([0, 3, 50, 100, 150, 199]), torch.tensor([0, 1, 1, 0, 1, 0])
    cond, uncond = mix(x, t, y), mix(x, t, torch.full((6,), 2))
    out = ClassifierFreeGuidance(2.0, interval=(3, 100)).eps(mix, x, t, y)
    inside = torch.tensor([False, True, True, True, False, False])
    torch.testing.assert_close(out[inside], (3 * cond - 2 * uncond)[inside])
    torch.testing.assert_close(out[~inside], cond[~inside])
    # an interval that covers every step is plain CFG; a scalar t is broadcast over the batch
    torch.testing.assert_close(ClassifierFreeGuidance(2.0, interval=(0, 199)).eps(mix, x, t, y),
                               ClassifierFreeGuidance(2.0).eps(mix, x, t, y))
    torch.testing.assert_close(ClassifierFreeGuidance(2.0, interval=(3, 100)).eps(mix, x, torch.tensor(50), y),
                               ClassifierFreeGuidance(2.0).eps(mix, x, torch.full((6,), 50), y))
    assert ClassifierFreeGuidance(2.0, interval=(0, 5)).weight(torch.tensor([5, 6])).tolist() == [2.0, 0.0]


def test_cfg_interval_skips_the_null_pass_outside_and_samples_match(sch, mix):
    model = CountingModel(mix)
    y = torch.tensor([0, 1, 1, 0])
    ddim_sample(model, sch, (4, 2), steps=10, y=y, guidance=ClassifierFreeGuidance(2.0, interval=(0, 60)),
                progress=False)
    sizes = [b for b, _ in model.calls]
    assert len(sizes) == 10 and sizes.count(8) == 3 and sizes.count(4) == 7   # DDIM steps 0, 22, 44 are inside
    # sampling with guidance only outside every visited step equals conditional sampling
    a = ddpm_sample(mix, sch, (4, 2), y=y, guidance=ClassifierFreeGuidance(5.0, interval=(500, 600)),
                    generator=torch.Generator().manual_seed(1), progress=False)
    b = ddpm_sample(mix, sch, (4, 2), y=y, generator=torch.Generator().manual_seed(1), progress=False)
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("bad, err", [((5, 2), ValueError), ((-1, 3), ValueError), ((0.0, 3), TypeError),
                                      ((0, 1, 2), TypeError), (300, TypeError), ((True, 3), TypeError)])
def test_cfg_interval_is_validated(bad, err):
    with pytest.raises(err, match=r"interval must be \(t_lo, t_hi\)"):
        ClassifierFreeGuidance(2.0, interval=bad)


def test_cfg_sharpens_toward_the_class(sch, mix):
    """More guidance → samples read more often as their class by the exact classifier at t = 0."""
    y = torch.arange(400) % 2
    accs = []
    for w in (-1.0, 0.0, 4.0):
        x = ddim_sample(mix, sch, (400, 2), steps=25, y=y, guidance=ClassifierFreeGuidance(w),
                        generator=torch.Generator().manual_seed(0), progress=False).double()
        pred = mix.classifier(x, torch.zeros(400, dtype=torch.long)).argmax(1)
        accs.append((pred == y).double().mean().item())
    assert accs[0] < 0.7 and accs[1] > 0.95 and accs[2] >= accs[1]


# ----------------------------------------------------------------------------- classifier guidance
@pytest.mark.parametrize("variance", ["beta", "beta_tilde"])
def test_classifier_guidance_shifts_the_mean_by_scale_sigma2_grad(sch, mix, variance):
    x, t, y = _x(), torch.tensor([1, 3, 50, 100, 150, 199]), torch.tensor([0, 1, 1, 0, 1, 0])
    z = torch.randn_like(x)
    uncond = lambda x, t, y=None: mix(x, t)  # noqa: E731  an unconditional model
    scale = 2.5
    plain = p_sample(uncond, sch, x, t, noise=z, variance=variance)
    guided = p_sample(uncond, sch, x, t, y=y, noise=z, variance=variance,
                      guidance=ClassifierGuidance(mix.classifier, scale))
    sigma2 = diffusion.p_mean_variance(uncond, sch, x, t, variance=variance)["variance"]
    torch.testing.assert_close(guided - plain, scale * sigma2 * analytic_grad_log_p(sch, x, t, y))
    # scale 0 is unguided
    torch.testing.assert_close(p_sample(uncond, sch, x, t, y=y, noise=z, variance=variance,
                                        guidance=ClassifierGuidance(mix.classifier, 0.0)), plain)


def test_classifier_guidance_scale0_sampling_equals_unguided(sch, mix):
    uncond = lambda x, t, y=None: mix(x, t)  # noqa: E731
    a = ddpm_sample(uncond, sch, (5, 2), y=torch.ones(5, dtype=torch.long), guidance=ClassifierGuidance(mix.classifier, 0),
                    generator=torch.Generator().manual_seed(4), progress=False)
    b = ddpm_sample(uncond, sch, (5, 2), generator=torch.Generator().manual_seed(4), progress=False)
    torch.testing.assert_close(a, b)


def test_classifier_guidance_on_eps_is_bayes_rule_exactly(sch, mix):
    """With the exact classifier and scale 1, DDIM's guided ε (eq. 7.2) is the conditional model's ε, so guided
    unconditional DDIM equals conditional DDIM."""
    y = torch.arange(6) % 2
    uncond = lambda x, t, y=None: mix(x, t)  # noqa: E731
    xT = _x(6, seed=9)
    a = ddim_sample(uncond, sch, None, x_T=xT, steps=20, y=y, guidance=ClassifierGuidance(mix.classifier, 1.0),
                    progress=False)
    b = ddim_sample(mix, sch, None, x_T=xT, steps=20, y=y, progress=False)
    torch.testing.assert_close(a, b)


class _NetClassifier(torch.nn.Module):
    """A classifier with parameters that checks what it is fed."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(2, 3)
        self.seen = []

    def forward(self, x, t):
        assert torch.is_grad_enabled() and x.requires_grad and x.is_leaf
        self.seen.append(x)
        return self.lin(x) * (1 + t[:, None].to(x.dtype) / 100)


def test_classifier_guidance_gradient_is_on_x_t_only_and_nothing_leaks(sch):
    clf = _NetClassifier()
    labels_seen = []

    def model(x, t, y=None):
        labels_seen.append(y)
        return torch.zeros_like(x)

    g = ClassifierGuidance(clf, 1.0)
    x = torch.randn(4, 2)
    t = torch.full((4,), 10)
    y = torch.tensor([0, 2, 1, 0])
    grad = g.grad_log_prob(x, t, y)
    # the gradient is the one of log softmax wrt the very tensor fed in (here checked with autograd from scratch)
    xr = x.clone().requires_grad_(True)
    ref = torch.autograd.grad(torch.log_softmax(clf.lin(xr) * 1.1, 1)[torch.arange(4), y].sum(), xr)[0]
    torch.testing.assert_close(grad, ref)
    assert not grad.requires_grad and not x.requires_grad
    assert all(p.grad is None for p in clf.parameters())
    out = ddpm_sample(model, sch, (4, 2), y=y, guidance=g, progress=False)
    assert not out.requires_grad and out.grad_fn is None and torch.is_grad_enabled()
    assert all(p.grad is None for p in clf.parameters())
    assert all(lbl is None for lbl in labels_seen)                  # the diffusion model gets no label
    assert all(s.grad is None for s in clf.seen)                    # .grad is never accumulated on inputs


def test_classifier_guidance_validates(mix):
    with pytest.raises(TypeError, match="callable"):
        ClassifierGuidance("not a classifier", 1.0)
    g = ClassifierGuidance(lambda x, t: x.sum(1), 1.0)              # wrong logits shape
    with pytest.raises(ValueError, match="logits of shape"):
        g.grad_log_prob(torch.randn(3, 2), torch.zeros(3, dtype=torch.long), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 1\]"):
        ClassifierGuidance(mix.classifier, 1.0).grad_log_prob(torch.randn(2, 2, dtype=torch.float64),
                                                              torch.zeros(2, dtype=torch.long), torch.tensor([0, 5]))


def test_base_guidance_is_plain_sampling(sch, mix):
    y = torch.tensor([1, 0, 1])
    a = ddpm_sample(mix, sch, (3, 2), y=y, guidance=Guidance(), generator=torch.Generator().manual_seed(2),
                    progress=False)
    b = ddpm_sample(mix, sch, (3, 2), y=y, generator=torch.Generator().manual_seed(2), progress=False)
    torch.testing.assert_close(a, b)


def test_overriding_grad_log_prob_changes_the_guidance():
    """The sampling hooks (7.1)/(7.2) go through the public ``grad_log_prob``, so a subclass that overrides it takes
    effect (chapter 7 runs the seed's '+∇ cross-entropy' this way); an override that returns −∇ must flip the shift."""
    from diffusion_lab.guidance import ClassifierGuidance
    from diffusion_lab.sampling import ddim_sample, ddpm_sample
    from diffusion_lab.schedules import linear_schedule

    torch.manual_seed(0)
    W = torch.randn(3, 2)

    def classifier(x, t):
        return x.reshape(x.shape[0], -1) @ W.T

    class Flipped(ClassifierGuidance):
        def grad_log_prob(self, x_t, t, y):
            return -super().grad_log_prob(x_t, t, y)

    sched = linear_schedule(50)
    model = lambda x, t, y=None: torch.zeros_like(x)  # noqa: E731
    y = torch.tensor([0, 1, 2, 0])
    for sample, kw in ((ddim_sample, dict(steps=10)), (ddpm_sample, {})):
        base = sample(model, sched, (4, 2), y=y, guidance=None, generator=torch.Generator().manual_seed(1),
                      progress=False, **kw)
        plus = sample(model, sched, (4, 2), y=y, guidance=ClassifierGuidance(classifier, 0.5),
                      generator=torch.Generator().manual_seed(1), progress=False, **kw)
        minus = sample(model, sched, (4, 2), y=y, guidance=Flipped(classifier, 0.5),
                       generator=torch.Generator().manual_seed(1), progress=False, **kw)
        assert (plus - base).abs().max() > 1e-3
        assert (minus - plus).abs().max() > 1e-3, "the override of grad_log_prob was bypassed"
