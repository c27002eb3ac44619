"""The variational bound: normal_kl, the discretized decoder, L_T, and the VLB of an oracle ε-model."""
import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from diffusion_lab import diffusion as D
from diffusion_lab import likelihood as L
from diffusion_lab.schedules import cosine_schedule, linear_schedule

F64 = torch.float64




@pytest.fixture(scope="module")
def lin():
    return linear_schedule(1000)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _grid(K):
    return torch.linspace(-1, 1, K, dtype=F64)


# ----------------------------------------------------------------------------- normal_kl
def test_normal_kl_matches_torch_distributions():
    g = _gen(0)
    m1, m2 = torch.randn(500, generator=g, dtype=F64) * 3, torch.randn(500, generator=g, dtype=F64) * 3
    lv1, lv2 = torch.randn(500, generator=g, dtype=F64) * 2, torch.randn(500, generator=g, dtype=F64) * 2
    ref = kl_divergence(Normal(m1, (0.5 * lv1).exp()), Normal(m2, (0.5 * lv2).exp()))
    got = L.normal_kl(m1, lv1, m2, lv2)
    assert got.shape == (500,)
    assert torch.allclose(got, ref, rtol=1e-10, atol=1e-12)
    assert (got >= 0).all() and (got > 1e-3).sum() > 450   # not trivially zero


def test_normal_kl_against_monte_carlo():
    """KL = E_{x~N1}[log N1(x) − log N2(x)], estimated from 200 000 draws, within 5 standard errors."""
    p, q = Normal(torch.tensor(0.3, dtype=F64), torch.tensor(0.8, dtype=F64)), \
        Normal(torch.tensor(-0.5, dtype=F64), torch.tensor(1.7, dtype=F64))
    torch.manual_seed(1)
    x = p.sample((200_000,))
    d = p.log_prob(x) - q.log_prob(x)
    est, se = d.mean(), d.std() / math.sqrt(d.numel())
    exact = L.normal_kl(p.mean, 2 * p.stddev.log(), q.mean, 2 * q.stddev.log())
    assert abs(est - exact) <= 5 * se
    assert exact.item() == pytest.approx(math.log(1.7 / 0.8) + (0.64 + 0.64) / (2 * 2.89) - 0.5, rel=1e-12)


def test_normal_kl_zero_for_identical_and_broadcasts():
    m = torch.randn(4, 3, generator=_gen(2), dtype=F64)
    lv = torch.randn(4, 3, generator=_gen(3), dtype=F64)
    assert torch.allclose(L.normal_kl(m, lv, m, lv), torch.zeros(4, 3, dtype=F64), atol=1e-15)
    # scalars broadcast against tensors; KL(N(0,1) ‖ N(0,1)) = 0, KL(N(1,1) ‖ N(0,1)) = ½
    assert torch.allclose(L.normal_kl(torch.zeros(2), 0.0, torch.zeros(2), 0.0), torch.zeros(2))
    assert torch.allclose(L.normal_kl(torch.ones(2), 0.0, 0.0, 0.0), torch.full((2,), 0.5))
    # the denominator is 2σ₂² (the seed's 2‖σ²I‖² would give (μ₁−μ₂)²/(2σ₂⁴))
    kl = L.normal_kl(torch.tensor(1.0, dtype=F64), math.log(4.0), torch.tensor(0.0, dtype=F64), math.log(4.0))
    assert kl.item() == pytest.approx(1 / 8, rel=1e-12)


def test_normal_kl_needs_a_tensor():
    with pytest.raises(TypeError, match="at least one torch.Tensor"):
        L.normal_kl(0.0, 0.0, 1.0, 0.0)


# ----------------------------------------------------------------------------- discretized decoder
MEANS = [-1e3, -40.0, -3.0, -1.2, -1.0, -0.5, 0.0, 0.3, 1.0, 1.5, 40.0, 1e3]
LOG_SCALES = [math.log(1e-4), math.log(1e-2), math.log(0.3), 0.0, math.log(5.0), math.log(1e3)]


@pytest.mark.parametrize("K", [256, 17])
def test_discretized_likelihood_sums_to_one(K):
    x = _grid(K)
    worst = 0.0
    for m in MEANS:
        for ls in LOG_SCALES:
            # also means that vary across bins, so the grid point and its mean move together
            lp = L.discretized_gaussian_log_likelihood(x, torch.full_like(x, m), torch.full_like(x, ls), num_bins=K)
            assert lp.shape == (K,) and not torch.isnan(lp).any() and (lp <= 1e-12).all(), (m, ls)
            worst = max(worst, abs(lp.exp().sum().item() - 1))
    assert worst < 1e-9


@pytest.mark.parametrize("K", [256, 17])
def test_discretized_likelihood_matches_cdf_differences(K):
    x = _grid(K)
    for m, s in [(0.0, 0.1), (0.7, 0.02), (-0.95, 0.5), (0.2, 2.0)]:
        lp = L.discretized_gaussian_log_likelihood(x, torch.full_like(x, m), torch.full_like(x, math.log(s)),
                                                   num_bins=K)
        n = Normal(torch.tensor(m, dtype=F64), torch.tensor(s, dtype=F64))
        half = 1 / (K - 1)
        upper = torch.where(x > 1 - 1e-9, torch.ones_like(x), n.cdf(x + half))
        lower = torch.where(x < -1 + 1e-9, torch.zeros_like(x), n.cdf(x - half))
        p = upper - lower
        ok = p > 1e-12                       # where the direct difference is still accurate
        assert ok.sum() >= 3
        assert torch.allclose(lp[ok].exp(), p[ok], rtol=1e-8, atol=1e-14)


def test_discretized_likelihood_extreme_tails_are_finite_and_accurate():
    """Far in a tail, Φ(upper) − Φ(lower) underflows to 0 in a naive computation; the decoder still returns
    the right log-probability (compared with log φ(z)·width for a tiny bin far from the mean)."""
    x = torch.tensor([1 / 255], dtype=F64)          # grid level 128 of 256
    lp = L.discretized_gaussian_log_likelihood(x, torch.tensor([-0.9], dtype=F64),
                                               torch.tensor([math.log(0.01)], dtype=F64), num_bins=256)
    assert torch.isfinite(lp).all()
    # z from 90 to 90.8: log P ≈ log φ(z_lo) − log z_lo (Mills ratio), accurate to ~1e-4 relative here
    z_lo = (1 / 255 - 1 / 255 + 0.9) / 0.01
    approx = -0.5 * z_lo ** 2 - 0.5 * math.log(2 * math.pi) - math.log(z_lo)
    assert lp.item() == pytest.approx(approx, rel=1e-3)
    assert lp.item() < -4000


def test_discretized_likelihood_float32_sums_to_one():
    x = _grid(256).float()
    for m in (-5.0, 0.0, 0.99, 5.0):
        lp = L.discretized_gaussian_log_likelihood(x, torch.full_like(x, m), torch.full_like(x, math.log(0.05)))
        assert lp.dtype == torch.float32
        assert abs(lp.exp().sum().item() - 1) < 1e-4


def test_discretized_likelihood_rejects_x_off_the_grid():
    m, s = torch.zeros(2, dtype=F64), torch.zeros(2, dtype=F64)
    with pytest.raises(ValueError, match=r"x must lie on the 256-level grid in \[-1, 1\].*pass num_bins"):
        L.discretized_gaussian_log_likelihood(torch.tensor([0.0, 0.001], dtype=F64), m, s)
    with pytest.raises(ValueError, match="x must lie on the 17-level grid"):
        L.discretized_gaussian_log_likelihood(torch.tensor([1.125, 0.0], dtype=F64), m, s, num_bins=17)  # > 1
    # sklearn digits (17 levels) are not on the 256-level grid: the error says which num_bins to pass
    digits_levels = torch.arange(17, dtype=F64) / 8 - 1
    with pytest.raises(ValueError, match="17 for sklearn digits"):
        L.discretized_gaussian_log_likelihood(digits_levels, torch.zeros(17, dtype=F64), torch.zeros(17, dtype=F64))
    L.discretized_gaussian_log_likelihood(digits_levels, torch.zeros(17, dtype=F64), torch.zeros(17, dtype=F64),
                                          num_bins=17)


def test_discretized_likelihood_bad_arguments():
    x = torch.zeros(3, dtype=F64)
    with pytest.raises(ValueError, match=r"num_bins must be an int >= 2, got 1"):
        L.discretized_gaussian_log_likelihood(x, x, x, num_bins=1)
    with pytest.raises(ValueError, match="num_bins must be an int >= 2, got 2.5"):
        L.discretized_gaussian_log_likelihood(x, x, x, num_bins=2.5)
    with pytest.raises(ValueError, match=r"x and means must have the same shape, got \(3,\) and \(4,\)"):
        L.discretized_gaussian_log_likelihood(x, torch.zeros(4, dtype=F64), x)


def test_gaussian_log_likelihood_is_the_normal_log_density():
    g = _gen(4)
    x, m = torch.randn(50, generator=g, dtype=F64), torch.randn(50, generator=g, dtype=F64)
    ls = torch.randn(50, generator=g, dtype=F64)
    assert torch.allclose(L.gaussian_log_likelihood(x, m, ls), Normal(m, ls.exp()).log_prob(x), rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- L_T
def test_prior_kl_is_negligible_for_T_1000(lin):
    D_ = 64
    for x0 in (torch.full((1, D_), -1.0), torch.full((1, D_), 1.0), torch.zeros(1, D_),
               torch.rand(3, D_, generator=_gen(5)) * 2 - 1):
        lt = L.prior_kl(lin, x0.double())
        assert lt.shape == (x0.shape[0],)
        assert (lt / D_ < 1e-4).all() and (lt > 0).all()
    # the closed form KL(N(√ᾱ x, 1−ᾱ) ‖ N(0, 1)) = ½(ᾱ x² − ᾱ − log(1−ᾱ)) per dimension
    ab = lin.alpha_bars[-1].item()
    for x in (1.0, 0.0, -0.4):
        per_dim = 0.5 * (ab * x * x - ab - math.log1p(-ab))
        got = L.prior_kl(lin, torch.full((1, D_), x, dtype=F64)).item()
        assert got == pytest.approx(D_ * per_dim, rel=1e-6)


def test_prior_kl_is_large_for_short_chains():
    s = linear_schedule(10)
    lt = L.prior_kl(s, torch.ones(2, 4, dtype=F64))
    assert (lt / 4 > 1).all()      # ᾱ_10 ≈ 0.9: q(x_T|x_0) is far from N(0, I)


# ----------------------------------------------------------------------------- the VLB of an oracle
def _oracle(schedule, x0):
    """An ε-model that knows x0 and returns the exact ε that produced x_t."""
    def model(x_t, t, y=None):
        return D.predict_eps_from_x0(schedule, x_t, t, x0)
    return model


def _x0_on_grid(K, shape, seed):
    return torch.randint(0, K, shape, generator=_gen(seed)).double() * (2 / (K - 1)) - 1


@pytest.fixture(scope="module")
def oracle_vlb(lin):
    x0 = _x0_on_grid(256, (3, 1, 2, 2), 6)
    out = {v: L.vlb_terms(_oracle(lin, x0), lin, x0, variance=v, generator=_gen(7)) for v in ("beta", "beta_tilde")}
    return x0, out


def test_oracle_with_beta_tilde_has_zero_kl_at_every_step(lin, oracle_vlb):
    x0, out = oracle_vlb
    r = out["beta_tilde"]
    assert r["terms"].shape == (3, 1000) and r["terms"].dtype == F64
    assert torch.isfinite(r["terms"]).all()
    assert r["terms"][:, 1:].abs().max() < 1e-8


def test_oracle_with_beta_pays_only_the_variance_mismatch(lin, oracle_vlb):
    """With σ² = β the means still agree exactly (the mean of p_θ is μ̃), so every KL term is the
    variance-only KL ½(β̃/β − 1 − log(β̃/β)) per dimension: non-zero, the same for every item and every x_0."""
    x0, out = oracle_vlb
    terms = out["beta"]["terms"][:, 1:]
    ratio = lin.posterior_variance[1:] / lin.betas[1:]
    expected = 4 * 0.5 * (ratio - 1 - ratio.log())          # D = 4 dimensions per item
    assert torch.allclose(terms, expected.expand(3, -1), rtol=1e-6, atol=1e-10)
    assert (terms > 0).all()
    # largest at the start (β̃_2 ≈ 0.45 β_2), tiny late (β̃ ≈ β)
    assert terms[0, 0] > 0.1 and terms[0, -1] < 1e-8
    # the mean part really is zero: the KL between the two is unchanged if we replace p's mean by q's
    assert torch.allclose(terms[0], terms[1], rtol=1e-9, atol=1e-12)


def test_oracle_decoder_term(lin, oracle_vlb):
    """At code index 0 the oracle's decoder mean is x_0 exactly; L_0 = −log P(bin of x_0) under N(x_0, σ²)."""
    x0, out = oracle_vlb
    half = 1 / 255
    for v, var in (("beta", lin.betas[0]), ("beta_tilde", lin.posterior_variance[1])):
        sd = var.sqrt()
        n = Normal(torch.tensor(0.0, dtype=F64), torch.tensor(1.0, dtype=F64))
        interior = -(2 * n.cdf(half / sd) - 1).log()
        edge = -(n.cdf(half / sd)).log()
        is_edge = (x0.abs() > 1 - 1e-9).reshape(3, -1)
        expected = torch.where(is_edge, edge, interior).sum(1)
        assert torch.allclose(out[v]["terms"][:, 0], expected, rtol=1e-9, atol=1e-12), v


def test_vlb_totals_and_bits_per_dim(lin, oracle_vlb):
    x0, out = oracle_vlb
    for r in out.values():
        assert torch.allclose(r["total"], r["prior"] + r["terms"].sum(1), rtol=1e-12)
        assert torch.allclose(r["bpd"], r["total"] / (4 * math.log(2)), rtol=1e-12)
        assert torch.allclose(r["terms_bpd"], r["terms"] / (4 * math.log(2)), rtol=1e-12)
        assert torch.allclose(r["prior_bpd"], r["prior"] / (4 * math.log(2)), rtol=1e-12)
        assert torch.allclose(r["prior"], L.prior_kl(lin, x0), rtol=1e-12)
    # using σ² = β instead of β̃ costs the oracle bits
    assert (out["beta"]["total"] > out["beta_tilde"]["total"]).all()


def test_imperfect_model_has_positive_kl_terms(lin):
    x0 = _x0_on_grid(17, (2, 1, 2, 2), 8)
    r = L.vlb_terms(lambda x_t, t: torch.zeros_like(x_t), lin, x0, variance="beta_tilde", num_bins=17,
                    timesteps=[1, 10, 500], generator=_gen(9))
    kl = r["terms"][:, [1, 10, 500]]
    assert (kl > 1e-3).all()
    assert torch.isnan(r["terms"][:, 2]).all() and torch.isnan(r["total"]).all()  # unvisited steps stay NaN


def test_bits_per_dim_is_the_batch_mean_of_bpd(lin):
    s = linear_schedule(20, 1e-3, 0.2)
    x0 = _x0_on_grid(17, (2, 3), 10)
    model = _oracle(s, x0)
    bpd = L.bits_per_dim(model, s, x0, num_bins=17, generator=_gen(11))
    r = L.vlb_terms(model, s, x0, num_bins=17, generator=_gen(11))
    assert bpd == pytest.approx(r["bpd"].mean().item(), rel=1e-12)
    assert math.isfinite(bpd) and bpd > 0


def test_continuous_decoder_on_toy_data():
    s = cosine_schedule(50)
    x0 = torch.randn(4, 2, generator=_gen(12), dtype=F64) * 0.7
    r = L.vlb_terms(_oracle(s, x0), s, x0, decoder="continuous", variance="beta_tilde", generator=_gen(13))
    assert torch.isfinite(r["total"]).all()
    sd = s.posterior_variance[1].sqrt()
    # decoder mean = x0, so −log density = ½ log(2π σ²) per dimension
    assert torch.allclose(r["terms"][:, 0], torch.full((4,), 2 * (0.5 * math.log(2 * math.pi) + sd.log().item()),
                                                       dtype=F64), rtol=1e-9)


def test_vlb_bad_arguments(lin):
    x0 = torch.zeros(1, 2, dtype=F64)
    model = _oracle(lin, x0)
    with pytest.raises(ValueError, match=r"decoder must be one of \('discretized', 'continuous'\), got 'logistic'"):
        L.vlb_terms(model, lin, x0, decoder="logistic")
    with pytest.raises(ValueError, match=r"variance must be one of \('beta', 'beta_tilde'\) or a tuple of them, got 'learned'"):
        L.vlb_terms(model, lin, x0, variance="learned", timesteps=[1])
    with pytest.raises(TypeError, match="schedule must be a NoiseSchedule"):
        L.vlb_terms(model, lin.betas, x0)
    with pytest.raises(ValueError, match=r"t must lie in \[0, T-1\] = \[0, 999\]"):
        L.vlb_terms(model, lin, x0, timesteps=[1000])
    with pytest.raises(ValueError, match=r"t must lie in \[0, T-1\]"):
        L.vlb_terms(model, lin, x0, timesteps=[-1])


def test_vlb_terms_with_several_variances_equals_separate_runs_on_the_same_draws():
    sch = linear_schedule(50)
    x0 = torch.linspace(-1, 1, 17, dtype=F64)[torch.randint(0, 17, (6, 4), generator=_gen(0))]
    calls = []

    def model(x, t, y=None):
        calls.append(1)
        return 0.3 * x

    both = L.vlb_terms(model, sch, x0, variance=("beta", "beta_tilde"), num_bins=17, generator=_gen(1))
    n_both = len(calls)
    for v in ("beta", "beta_tilde"):
        alone = L.vlb_terms(model, sch, x0, variance=v, num_bins=17, generator=_gen(1))
        assert torch.allclose(both[v]["terms"], alone["terms"], rtol=0, atol=1e-12)
        assert torch.allclose(both[v]["bpd"], alone["bpd"], rtol=0, atol=1e-12)
    assert n_both == sch.T                               # one model call per step for both variances
    with pytest.raises(ValueError, match="variance"):
        L.vlb_terms(model, sch, x0, variance=("beta", "beta"), num_bins=17)
    with pytest.raises(ValueError, match="variance"):
        L.vlb_terms(model, sch, x0, variance=("beta", "sigma"), num_bins=17)
