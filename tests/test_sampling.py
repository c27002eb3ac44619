"""Samplers against exact answers: an oracle ε-model on Gaussian data, the seed's update written out by hand,
DDIM's sub-sequence written out by hand, and DDIM(η=1, every step) = DDPM(β̃)."""
import math

import pytest
import torch

from diffusion_lab import diffusion
from diffusion_lab.guidance import ClassifierFreeGuidance
from diffusion_lab.gaussian_mixture import GaussianOracle
from diffusion_lab.sampling import (Trajectory, ddim_invert, ddim_sample, ddim_step, ddim_timesteps, ddpm_sample,
                                    p_sample)
from diffusion_lab.schedules import linear_schedule

MU, S = 0.7, 0.5




@pytest.fixture(scope="module")
def sch():
    return linear_schedule(1000)


@pytest.fixture(scope="module")
def small():
    return linear_schedule(100, 1e-3, 0.2)


def oracle_eps(sch, x, t):
    """E[ε | x_t] for x_0 ~ N(MU, S² I), derived in the test: Cov(ε, x_t)/Var(x_t) · (x_t − E x_t)."""
    ab = sch.alpha_bars[t].to(x.dtype).reshape(-1, *[1] * (x.dim() - 1))
    return (1 - ab).sqrt() / (ab * S ** 2 + 1 - ab) * (x - ab.sqrt() * MU)


def exact_ddpm_moments(sch, variance):
    """The DDPM chain with the oracle is affine-Gaussian per coordinate: propagate mean and variance exactly
    from x_T ~ N(0, 1) (written from the seed's update, independently of the package)."""
    m, v = 0.0, 1.0
    for i in range(sch.T - 1, -1, -1):
        ab, a, b = sch.alpha_bars[i].item(), sch.alphas[i].item(), sch.betas[i].item()
        c = math.sqrt(1 - ab) / (ab * S ** 2 + 1 - ab)
        A = (1 - b * c / math.sqrt(1 - ab)) / math.sqrt(a)
        B = b * c * math.sqrt(ab) * MU / math.sqrt(1 - ab) / math.sqrt(a)
        sig2 = 0.0 if i == 0 else (b if variance == "beta" else sch.posterior_variance[i].item())
        m, v = A * m + B, A * A * v + sig2
    return m, v


def test_oracle_is_the_derived_formula(sch):
    o = GaussianOracle(sch, MU, S)
    x = torch.randn(7, 3, dtype=torch.float64)
    t = torch.tensor([0, 1, 10, 200, 500, 900, 999])
    torch.testing.assert_close(o(x, t), oracle_eps(sch, x, t))


@pytest.mark.parametrize("variance", ["beta", "beta_tilde"])
def test_ddpm_with_oracle_recovers_gaussian_data(sch, variance):
    n = 16000
    x = ddpm_sample(GaussianOracle(sch, MU, S), sch, (4000, 4), variance=variance,
                    generator=torch.Generator().manual_seed(0), progress=False).double()
    m_exact, v_exact = exact_ddpm_moments(sch, variance)
    # the Monte Carlo sample matches the exact law of the chain …
    assert abs(x.mean().item() - m_exact) < 4 * math.sqrt(v_exact / n)
    assert abs(x.var().item() - v_exact) < 4 * v_exact * math.sqrt(2 / n)
    # … and that law is the data's: N(MU, S²) up to the variance choice's O(β) error
    assert abs(m_exact - MU) < 1e-3
    assert abs(v_exact - S ** 2) / S ** 2 < 0.02


def test_ddim_eta0_with_oracle_recovers_gaussian_data(sch):
    # η = 0 is deterministic and, with this oracle, affine per coordinate: x_0 = a·x_T + b exactly,
    # so two starting points give the output law N(b, a²) with no Monte Carlo error.
    xT = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    errs = []
    for steps in (50, 1000):
        x0 = ddim_sample(GaussianOracle(sch, MU, S), sch, None, x_T=xT, steps=steps, progress=False)
        b, a = x0[0].item(), x0[1].item() - x0[0].item()
        errs.append(abs(a * a - S ** 2) / S ** 2)
        assert abs(b - MU) < 5e-3                      # √ᾱ_T·MU ≈ 0.004 of prior mismatch remains
    assert errs[1] < 0.01                              # full-length DDIM: the data's variance within 1 %
    assert errs[1] < errs[0]                           # and shorter runs are coarser discretisations
    # Monte Carlo with a short run agrees with the affine law
    x = ddim_sample(GaussianOracle(sch, MU, S), sch, (2000, 2), steps=50,
                    generator=torch.Generator().manual_seed(1), progress=False).double()
    xa = ddim_sample(GaussianOracle(sch, MU, S), sch, None, x_T=xT, steps=50, progress=False)
    a50 = (xa[1] - xa[0]).item()
    assert abs(x.var().item() - a50 ** 2) < 4 * a50 ** 2 * math.sqrt(2 / 4000)


def test_ddim_matches_handwritten_subsequence(sch):
    """DDIM written from scratch in float64 (Song et al. eq. 12), with ᾱ_prev taken from the sub-sequence."""
    steps, eta = 7, 0.6
    taus = [math.floor(i * (sch.T - 1) / (steps - 1) + 0.5) for i in range(steps)]   # evenly spaced, round half up
    assert ddim_timesteps(sch.T, steps).tolist() == taus
    gen = torch.Generator().manual_seed(3)
    xT = torch.randn(5, 3, dtype=torch.float64, generator=gen)
    zs = [torch.randn(5, 3, dtype=torch.float64, generator=gen) for _ in range(steps)]
    ab = sch.alpha_bars
    x = xT.clone()
    for k, i in enumerate(range(steps - 1, -1, -1)):
        t = taus[i]
        a_t = ab[t].item()
        a_p = ab[taus[i - 1]].item() if i > 0 else 1.0
        e = oracle_eps(sch, x, torch.full((5,), t))
        x0 = (x - math.sqrt(1 - a_t) * e) / math.sqrt(a_t)
        sig = eta * math.sqrt((1 - a_p) / (1 - a_t)) * math.sqrt(1 - a_t / a_p)
        x = math.sqrt(a_p) * x0 + math.sqrt(1 - a_p - sig ** 2) * e + sig * zs[k]
    # replay the package's sampler step by step with the same z's
    y = xT.clone()
    prevs = [-1] + taus[:-1]
    for k, i in enumerate(range(steps - 1, -1, -1)):
        y = ddim_step(GaussianOracle(sch, MU, S), sch, y, taus[i], prevs[i], eta=eta, noise=zs[k])
    torch.testing.assert_close(y, x)


def test_ddim_timesteps_edges():
    assert ddim_timesteps(1000, 1).tolist() == [999]
    assert ddim_timesteps(1000, 2).tolist() == [0, 999]
    assert ddim_timesteps(10, 10).tolist() == list(range(10))
    for T, S_ in [(1000, 50), (1000, 999), (37, 36), (4000, 3)]:
        tau = ddim_timesteps(T, S_)
        assert len(tau) == S_ and tau[0] == 0 and tau[-1] == T - 1 and bool((tau.diff() > 0).all())


def test_ddim_eta1_every_step_is_ddpm_beta_tilde(small):
    model = GaussianOracle(small, MU, S)
    a = ddpm_sample(model, small, (6, 3), variance="beta_tilde", generator=torch.Generator().manual_seed(5),
                    progress=False)
    b = ddim_sample(model, small, (6, 3), steps=small.T, eta=1.0, generator=torch.Generator().manual_seed(5),
                    progress=False)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_ddim_inversion_round_trip(sch):
    model = GaussianOracle(sch, MU, S)
    x0 = MU + S * torch.randn(64, 4, generator=torch.Generator().manual_seed(2))
    errs = {}
    for steps in (100, 1000):
        xT = ddim_invert(model, sch, x0, steps=steps)
        back = ddim_sample(model, sch, None, x_T=xT, steps=steps, progress=False)
        errs[steps] = (back - x0).abs().max().item()
    assert errs[1000] < 0.02 and errs[1000] < errs[100]
    assert abs(xT.std().item() - 1.0) < 0.2 and abs(xT.mean().item()) < 0.3   # x_T looks like N(0, I)
    xT2, traj = ddim_invert(model, sch, x0, steps=20, return_trajectory=True)
    assert traj.steps[0] == 0 and traj.steps[-1] == sch.T and torch.equal(traj.x[-1], xT2)


# ----------------------------------------------------------------------------- p_sample
def test_p_sample_is_the_seeds_update_without_clipping(sch):
    """The seed's update, corrected (1/√α_t, not 1/√ᾱ_t; 0-based arrays), written out from scratch."""
    alpha, alpha_bar, beta = sch.alphas, sch.alpha_bars, sch.betas
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 1, 8, 8, dtype=torch.float64, generator=gen)
    z = torch.randn(x.shape, dtype=torch.float64, generator=gen)
    model = GaussianOracle(sch, MU, S)
    for t in (999, 500, 1):
        e = oracle_eps(sch, x, torch.full((4,), t))
        mu = 1 / torch.sqrt(alpha[t]) * (x - beta[t] / torch.sqrt(1 - alpha_bar[t]) * e)
        torch.testing.assert_close(p_sample(model, sch, x, t, noise=z), mu + torch.sqrt(beta[t]) * z)
        torch.testing.assert_close(p_sample(model, sch, x, t, noise=z, variance="beta_tilde"),
                                   mu + torch.sqrt(sch.posterior_variance[t]) * z)


def test_p_sample_adds_no_noise_at_index_0(sch):
    model = GaussianOracle(sch, MU, S)
    x = torch.randn(3, 5, dtype=torch.float64)
    mean = diffusion.p_mean_variance(model, sch, x, 0)["mean"]
    for variance in ("beta", "beta_tilde"):
        torch.testing.assert_close(p_sample(model, sch, x, 0, noise=torch.randn_like(x) * 10, variance=variance), mean)
        torch.testing.assert_close(p_sample(model, sch, x, 0, variance=variance), mean)
    # mixed batch: only the item at index 0 is noiseless
    t = torch.tensor([0, 5, 0])
    z = torch.ones_like(x)
    out = p_sample(model, sch, x, t, noise=z)
    mean_t = diffusion.p_mean_variance(model, sch, x, t)["mean"]
    torch.testing.assert_close(out[[0, 2]], mean_t[[0, 2]])
    torch.testing.assert_close(out[1], mean_t[1] + sch.betas[5].sqrt() * z[1])


def test_clipping_rederives_eps_consistently(sch):
    # an oracle for data far outside [-1, 1] makes x̂_0 leave the range
    model = GaussianOracle(sch, 3.0, 0.2)
    x = 3.0 * torch.ones(2, 4, dtype=torch.float64) + 0.1 * torch.randn(2, 4, dtype=torch.float64)
    t = 10
    out = diffusion.p_mean_variance(model, sch, x, t, clip_x0=(-1.0, 1.0))
    assert out["pred_x0"].max() <= 1.0
    # the re-derived ε reproduces the clipped x̂_0 and the mean, in both forms of the mean
    torch.testing.assert_close(diffusion.predict_x0_from_eps(sch, x, t, out["eps"]), out["pred_x0"])
    torch.testing.assert_close(diffusion.mean_from_eps(sch, x, t, out["eps"]), out["mean"])
    z = torch.randn_like(x)
    torch.testing.assert_close(p_sample(model, sch, x, t, noise=z, clip_x0=(-1, 1)),
                               out["mean"] + sch.betas[t].sqrt() * z)
    # clipping is opt-in: the default differs here
    assert not torch.allclose(p_sample(model, sch, x, t, noise=z), out["mean"] + sch.betas[t].sqrt() * z)
    # at index 0 the clipped step returns the clipped x̂_0 itself, inside the data range
    last = p_sample(model, sch, x, 0, clip_x0=(-1, 1))
    assert last.min() >= -1 - 1e-12 and last.max() <= 1 + 1e-12


# ----------------------------------------------------------------------------- loops
def test_seeded_runs_reproduce_and_trajectory_shape(small):
    model = GaussianOracle(small, MU, S)
    a, traj = ddpm_sample(model, small, (3, 1, 2, 2), generator=torch.Generator().manual_seed(7),
                          return_trajectory=True, progress=False)
    b = ddpm_sample(model, small, (3, 1, 2, 2), generator=torch.Generator().manual_seed(7), progress=False)
    torch.testing.assert_close(a, b)
    assert isinstance(traj, Trajectory)
    assert traj.steps[0] == small.T and traj.steps[-1] == 0 and traj.steps == sorted(traj.steps, reverse=True)
    assert traj.x.shape == (len(traj), 3, 1, 2, 2) and traj.pred_x0.shape == traj.x.shape
    assert 10 <= len(traj) <= 40 and traj.x.device.type == "cpu"
    assert torch.equal(traj.x[-1], a)
    step, frame = list(traj)[0]
    assert step == small.T
    _, t2 = ddim_sample(model, small, (3, 2), steps=10, return_trajectory=True, trajectory_every=1, progress=False)
    assert t2.steps == [int(t) + 1 for t in ddim_timesteps(small.T, 10).flip(0)] + [0]


class _GradModel(torch.nn.Module):
    """A model with trainable parameters: a leaked graph would show as requires_grad on the output."""

    def __init__(self, d):
        super().__init__()
        self.lin = torch.nn.Linear(d, d)
        self.num_classes = 3
        self.emb = torch.nn.Embedding(4, d)

    def forward(self, x, t, y=None):
        h = self.lin(x)
        return h if y is None else h + self.emb(y)


def test_sampling_keeps_no_graph():
    sch = linear_schedule(30)
    model = _GradModel(4)
    for run in (lambda: ddpm_sample(model, sch, (5, 4), progress=False, return_trajectory=True),
                lambda: ddim_sample(model, sch, (5, 4), steps=10, eta=0.5, progress=False, return_trajectory=True),
                lambda: ddpm_sample(model, sch, (5, 4), y=torch.arange(5) % 3, guidance=ClassifierFreeGuidance(2.0),
                                    progress=False, return_trajectory=True)):
        x, traj = run()
        assert not x.requires_grad and x.grad_fn is None
        assert not traj.x.requires_grad and not traj.pred_x0.requires_grad
        assert torch.is_grad_enabled()
    xT = ddim_invert(model, sch, torch.randn(5, 4), steps=5)
    assert not xT.requires_grad
    assert all(p.grad is None for p in model.parameters())


# ----------------------------------------------------------------------------- bad input
def test_bad_arguments_raise_clear_errors(small):
    model = GaussianOracle(small, MU, S)
    with pytest.raises(ValueError, match="shape"):
        ddpm_sample(model, small, (0, 2), progress=False)
    with pytest.raises(ValueError, match="shape"):
        ddpm_sample(model, small, "16x2", progress=False)
    with pytest.raises(ValueError, match="shape"):
        ddim_sample(model, small, (4,), progress=False)
    with pytest.raises(ValueError, match="x_T"):
        ddpm_sample(model, small, (4, 2), x_T=torch.randn(3, 2), progress=False)
    with pytest.raises(ValueError, match="shape"):
        ddpm_sample(lambda x, t: x[:, :1], small, (4, 2), progress=False)       # model returns the wrong shape
    for steps in (0, small.T + 1, -3):
        with pytest.raises(ValueError, match=r"steps must lie in \[1, T\]"):
            ddim_sample(model, small, (4, 2), steps=steps, progress=False)
    with pytest.raises(TypeError, match="steps"):
        ddim_sample(model, small, (4, 2), steps=2.5, progress=False)
    with pytest.raises(ValueError, match=r"steps must lie in \[1, T\]"):
        ddim_invert(model, small, torch.zeros(2, 2), steps=small.T + 1)
    for eta in (-0.1, 1.5):
        with pytest.raises(ValueError, match="eta"):
            ddim_sample(model, small, (4, 2), eta=eta, steps=5, progress=False)
    with pytest.raises(ValueError, match="variance"):
        ddpm_sample(model, small, (4, 2), variance="learned", progress=False)
    with pytest.raises(ValueError, match="variance"):
        p_sample(model, small, torch.zeros(2, 2), 3, variance="fixed_small")
    with pytest.raises(ValueError, match=r"needs target labels: pass y="):
        ddpm_sample(model, small, (4, 2), guidance=ClassifierFreeGuidance(1.0, num_classes=3), progress=False)
    with pytest.raises(ValueError, match=r"needs target labels"):
        ddim_sample(model, small, (4, 2), guidance=ClassifierFreeGuidance(1.0, num_classes=3), progress=False)
    with pytest.raises(TypeError, match="guidance must be"):
        ddpm_sample(model, small, (4, 2), y=torch.zeros(4, dtype=torch.long), guidance=3.0, progress=False)
    with pytest.raises(ValueError, match=r"\[0, T-1\]"):
        p_sample(model, small, torch.zeros(2, 2), small.T)
    with pytest.raises(ValueError, match="labels"):
        ddpm_sample(model, small, (4, 2), y=torch.zeros(3, dtype=torch.long), progress=False)
    with pytest.raises(ValueError, match="noise"):
        p_sample(model, small, torch.zeros(2, 2), 3, noise=torch.zeros(3, 2))
    with pytest.raises(ValueError, match="t_prev"):
        ddim_step(model, small, torch.zeros(2, 2), 3, 3)
    with pytest.raises(ValueError, match="trajectory_every"):
        ddpm_sample(model, small, (4, 2), return_trajectory=True, trajectory_every=0, progress=False)
