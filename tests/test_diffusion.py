"""Forward process and posterior: closed forms against Monte Carlo, the seed's two forms of μ̃,
inverses of q_sample, dtype handling, L_simple and input validation.

Monte Carlo tolerances are 5 standard errors (SE of a mean: sd/√N; SE of a Gaussian variance:
var·√(2/(N−1))). Every generator is seeded, so the tests are deterministic; 5 SE also keeps them
meaningful: a coefficient off by one timestep moves the statistics by far more than that.
"""
import math

import pytest
import torch

from diffusion_lab import diffusion as D
from diffusion_lab.schedules import cosine_schedule, linear_schedule

F64 = torch.float64
N_MC = 20_000
X0_VALUES = torch.tensor([-1.0, -0.3, 0.5, 1.0], dtype=F64)


@pytest.fixture(scope="module")
def lin():
    return linear_schedule(1000)




def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _mean_var_within_5se(samples, mean, var):
    """Row-wise sample mean/variance of ``samples`` (D, N) against ``mean``/``var`` (D,) within 5 SE."""
    n = samples.shape[1]
    m, v = samples.mean(1), samples.var(1)
    se_m = (var / n).sqrt()
    se_v = var * math.sqrt(2 / (n - 1))
    assert ((m - mean).abs() <= 5 * se_m).all(), (m, mean, se_m)
    assert ((v - var).abs() <= 5 * se_v).all(), (v, var, se_v)
    return m, v, se_m, se_v


# ----------------------------------------------------------------------------- forward process
@pytest.mark.parametrize("k", [1, 10, 100, 1000])
def test_iterated_q_step_matches_q_sample_and_q_mean_variance(lin, k):
    """k Markov steps q_step(·, s) for s = 0 … k−1 take x_0 to paper step k, i.e. code index k−1.

    Layout: one batch item per x_0 value (B = 4), N_MC independent chains along the last dimension."""
    g = _gen(k)
    x0 = X0_VALUES[:, None].expand(-1, N_MC).clone()
    x = x0
    for s in range(k):
        x = D.q_step(lin, x, s, generator=g)
    t = torch.full((4,), k - 1, dtype=torch.long)
    mean, var = D.q_mean_variance(lin, x0, t)
    mean, var = mean[:, 0], var[:, 0]
    # closed form, from the schedule directly
    ab = lin.alpha_bars[k - 1]
    assert torch.allclose(mean, ab.sqrt() * X0_VALUES, rtol=1e-12, atol=0)
    assert torch.allclose(var, (1 - ab).expand(4), rtol=1e-12, atol=0)
    m, v, se_m, se_v = _mean_var_within_5se(x, mean, var)
    _mean_var_within_5se(D.q_sample(lin, x0, t, generator=g), mean, var)
    # not vacuous: the sample statistics reject an off-by-one answer (ᾱ of paper step k+1) wherever that
    # answer is more than 10 SE from the truth — which is the case for the early steps
    if k < 1000:
        ab_next = lin.alpha_bars[k]
        wrong_m, wrong_v = ab_next.sqrt() * X0_VALUES, (1 - ab_next).expand(4)
        far_m, far_v = (wrong_m - mean).abs() > 10 * se_m, (wrong_v - var).abs() > 10 * se_v
        assert ((m - wrong_m).abs() > 5 * se_m)[far_m].all()
        assert ((v - wrong_v).abs() > 5 * se_v)[far_v].all()
        if k <= 10:
            assert far_v.all()


def test_q_mean_variance_equals_the_recursion(lin):
    """Exact: mean_k = √α_k mean_{k−1}, var_k = α_k var_{k−1} + β_k (the moments of one q_step)."""
    m, v = X0_VALUES.clone(), torch.zeros(4, dtype=F64)
    x0 = X0_VALUES.expand(2, -1)
    for s in range(1000):
        m = lin.alphas[s].sqrt() * m
        v = lin.alphas[s] * v + lin.betas[s]
        if s in (0, 1, 99, 500, 999):
            mean, var = D.q_mean_variance(lin, x0, torch.tensor([s, s]))
            assert torch.allclose(mean[1], m, rtol=1e-10, atol=1e-15)
            assert torch.allclose(var[1], v, rtol=1e-10, atol=0)


def test_q_step_one_step_is_q_sample_at_index_0(lin):
    x0 = torch.randn(5, 3, generator=_gen(1), dtype=F64)
    eps = torch.randn(5, 3, generator=_gen(2), dtype=F64)
    assert torch.allclose(D.q_step(lin, x0, 0, eps), D.q_sample(lin, x0, 0, eps), rtol=0, atol=1e-15)
    # and uses β of its own index, not of the next one
    b = lin.betas[7]
    assert torch.allclose(D.q_step(lin, x0, 7, eps), (1 - b).sqrt() * x0 + b.sqrt() * eps, rtol=0, atol=1e-15)


def test_q_sample_with_given_noise_is_the_closed_form(lin):
    x0 = torch.randn(4, 1, 8, 8, generator=_gen(3), dtype=F64)
    eps = torch.randn(4, 1, 8, 8, generator=_gen(4), dtype=F64)
    t = torch.tensor([0, 10, 500, 999])
    xt = D.q_sample(lin, x0, t, eps)
    ab = lin.alpha_bars[t].view(4, 1, 1, 1)
    assert torch.allclose(xt, ab.sqrt() * x0 + (1 - ab).sqrt() * eps, rtol=0, atol=1e-14)


def test_q_sample_generator_is_reproducible(lin):
    x0 = torch.zeros(3, 2)
    a = D.q_sample(lin, x0, 5, generator=_gen(7))
    b = D.q_sample(lin, x0, 5, generator=_gen(7))
    c = D.q_sample(lin, x0, 5, generator=_gen(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


# ----------------------------------------------------------------------------- posterior
@pytest.mark.parametrize("make", [linear_schedule, cosine_schedule])
def test_two_forms_of_posterior_mean_agree(make):
    """Seed eq. for μ̃: the x_t/x_0 form (q_posterior) equals (x_t − β_t/√(1−ᾱ_t) ε)/√α_t with the true ε."""
    s = make(1000)
    B = 1000
    t = torch.arange(B)
    x0 = torch.rand(B, 2, 3, generator=_gen(5), dtype=F64) * 2 - 1
    eps = torch.randn(B, 2, 3, generator=_gen(6), dtype=F64)
    xt = D.q_sample(s, x0, t, eps)
    mean, var = D.q_posterior(s, x0, xt, t)
    mean2 = D.mean_from_eps(s, xt, t, eps)
    # the cosine schedule's final β = 0.999 makes 1/√α_T ≈ 32: scale the tolerance by the coefficients' size
    assert torch.allclose(mean, mean2, rtol=0, atol=1e-10)
    assert torch.allclose(var, s.posterior_variance.view(B, 1, 1).expand_as(var), rtol=0, atol=0)


def test_q_posterior_at_index_0_is_point_mass_at_x0(lin):
    x0 = torch.randn(3, 4, generator=_gen(9), dtype=F64)
    xt = D.q_sample(lin, x0, 0, generator=_gen(10))
    mean, var = D.q_posterior(lin, x0, xt, 0)
    assert torch.allclose(mean, x0, rtol=0, atol=1e-12)   # coef β_1/(1−ᾱ_1) = 1 up to rounding
    assert (var == 0).all()


@pytest.mark.parametrize("k", [2, 10, 300, 1000])  # paper step t = k: regress x_{k-1} on x_k
def test_q_posterior_against_regression(lin, k):
    """Sample x_{t−1} ~ q(x_{t−1}|x_0), then x_t = q_step(x_{t−1}); for fixed x_0 the regression of
    x_{t−1} on x_t is exactly linear-Gaussian with slope/intercept/residual variance of q(x_{t−1}|x_t,x_0)."""
    N = 40_000
    x0v = 0.7
    g = _gen(100 + k)
    x0 = torch.full((N, 1), x0v, dtype=F64)
    x_prev = D.q_sample(lin, x0, k - 2, generator=g)          # paper step k−1 is code index k−2
    x_t = D.q_step(lin, x_prev, k - 1, generator=g)           # paper step k is code index k−1
    a, b = x_prev[:, 0], x_t[:, 0]
    bc = b - b.mean()
    slope = (bc * (a - a.mean())).sum() / (bc * bc).sum()
    intercept = a.mean() - slope * b.mean()
    resid = a - intercept - slope * b
    resid_var = (resid * resid).sum() / (N - 2)

    mean_coef_xt = lin.posterior_mean_coef_xt[k - 1]
    mean_coef_x0 = lin.posterior_mean_coef_x0[k - 1]
    beta_tilde = lin.posterior_variance[k - 1]
    se_slope = (beta_tilde / (bc * bc).sum()).sqrt()
    se_intercept = (beta_tilde * (1 / N + b.mean() ** 2 / (bc * bc).sum())).sqrt()
    se_var = beta_tilde * math.sqrt(2 / (N - 2))
    assert abs(slope - mean_coef_xt) <= 5 * se_slope
    assert abs(intercept - mean_coef_x0 * x0v) <= 5 * se_intercept
    assert abs(resid_var - beta_tilde) <= 5 * se_var
    # q_posterior gives the same line: mean(x_t) = slope·x_t + intercept, variance β̃
    pm, pv = D.q_posterior(lin, x0[:3], x_t[:3], k - 1)
    assert torch.allclose(pm, mean_coef_xt * x_t[:3] + mean_coef_x0 * x0v, rtol=0, atol=1e-14)
    assert torch.allclose(pv, beta_tilde.expand(3, 1), rtol=0, atol=0)
    # not vacuous: where β̃_t and β_t differ (small t) the regression tells them apart
    if k <= 10:
        assert abs(resid_var - lin.betas[k - 1]) > 5 * se_var


# ----------------------------------------------------------------------------- inverses
@pytest.mark.parametrize("make", [linear_schedule, cosine_schedule])
def test_predict_x0_and_eps_invert_q_sample(make):
    s = make(1000)
    t = torch.tensor([0, 1, 250, 500, 750, 998])
    x0 = torch.rand(6, 1, 4, 4, generator=_gen(11), dtype=F64) * 2 - 1
    eps = torch.randn(6, 1, 4, 4, generator=_gen(12), dtype=F64)
    xt = D.q_sample(s, x0, t, eps)
    assert torch.allclose(D.predict_x0_from_eps(s, xt, t, eps), x0, rtol=0, atol=1e-9)
    assert torch.allclose(D.predict_eps_from_x0(s, xt, t, x0), eps, rtol=0, atol=1e-9)


def test_predict_x0_inverts_q_sample_at_the_last_step(lin):
    x0 = torch.rand(4, 3, generator=_gen(13), dtype=F64) * 2 - 1
    eps = torch.randn(4, 3, generator=_gen(14), dtype=F64)
    xt = D.q_sample(lin, x0, 999, eps)
    assert torch.allclose(D.predict_x0_from_eps(lin, xt, 999, eps), x0, rtol=0, atol=1e-10)
    assert torch.allclose(D.predict_eps_from_x0(lin, xt, 999, x0), eps, rtol=0, atol=1e-12)


def test_float32_in_float32_out_with_float64_coefficients(lin):
    """float32 tensors stay float32; the coefficients come from float64 and are rounded once, so a float32
    round trip at t = 999 (where x̂_0 = (x_t − …)/√ᾱ_T amplifies errors ~150×) stays close to float64."""
    x0_64 = torch.rand(64, 2, generator=_gen(15), dtype=F64) * 2 - 1
    eps_64 = torch.randn(64, 2, generator=_gen(16), dtype=F64)
    x0, eps = x0_64.float(), eps_64.float()
    t = torch.full((64,), 999)
    xt = D.q_sample(lin, x0, t, eps)
    assert xt.dtype == torch.float32
    xt_64 = D.q_sample(lin, x0_64, t, eps_64)
    assert torch.allclose(xt.double(), xt_64, rtol=0, atol=1e-6)
    # float32 rounding of x_t (ε₃₂ ≈ 1.2e-7) is amplified by 1/√ᾱ_T ≈ 157 in x̂_0; elsewhere it is not
    eps32 = torch.finfo(torch.float32).eps
    amplified = 20 * eps32 / lin.alpha_bars[999].sqrt().item()   # ≈ 3.7e-4
    for fn, a, b, tol in ((D.predict_x0_from_eps, eps, eps_64, amplified), (D.predict_eps_from_x0, x0, x0_64, 20 * eps32),
                          (D.mean_from_eps, eps, eps_64, 20 * eps32)):
        out32 = fn(lin, xt, t, a)
        assert out32.dtype == torch.float32, fn.__name__
        out64 = fn(lin, xt.double(), t, b)   # same float32-rounded x_t, float64 everywhere else
        assert torch.allclose(out32.double(), out64, rtol=0, atol=tol), fn.__name__
    m, v = D.q_posterior(lin, x0, xt, t)
    assert m.dtype == v.dtype == torch.float32
    m, v = D.q_mean_variance(lin, x0, t)
    assert m.dtype == v.dtype == torch.float32
    # the coefficient used for float32 is the float64 value rounded once
    sab = lin.extract("sqrt_alpha_bars", t, xt)[0].item()
    assert sab == lin.alpha_bars[999].sqrt().float().item()


# ----------------------------------------------------------------------------- p_mean_variance
def _oracle(schedule, x0):
    def model(x_t, t, y=None):
        return D.predict_eps_from_x0(schedule, x_t, t, x0)
    return model


def test_p_mean_variance_with_oracle_is_the_posterior(lin):
    x0 = torch.rand(5, 3, generator=_gen(17), dtype=F64) * 2 - 1
    t = torch.tensor([1, 2, 100, 500, 999])
    xt = D.q_sample(lin, x0, t, generator=_gen(18))
    out = D.p_mean_variance(_oracle(lin, x0), lin, xt, t, variance="beta_tilde")
    pm, pv = D.q_posterior(lin, x0, xt, t)
    assert torch.allclose(out["mean"], pm, rtol=0, atol=1e-10)
    assert torch.allclose(out["variance"], pv, rtol=0, atol=0)
    assert torch.allclose(out["pred_x0"], x0, rtol=0, atol=1e-9)
    assert torch.allclose(out["log_variance"], pv.log(), rtol=1e-12, atol=0)
    out_b = D.p_mean_variance(_oracle(lin, x0), lin, xt, t, variance="beta")
    assert torch.allclose(out_b["variance"], lin.betas[t].view(5, 1).expand(5, 3), rtol=0, atol=0)
    assert torch.allclose(out_b["mean"], out["mean"], rtol=0, atol=0)   # σ² does not change the mean


def test_p_mean_variance_beta_tilde_at_index_0_is_clipped(lin):
    x = torch.zeros(2, 3, dtype=F64)
    out = D.p_mean_variance(lambda x_t, t: torch.zeros_like(x_t), lin, x, 0, variance="beta_tilde")
    assert (out["variance"] == lin.posterior_variance[1]).all()
    assert torch.isfinite(out["log_variance"]).all()


def test_p_mean_variance_clip_x0_rederives_eps(lin):
    x0_far = torch.full((2, 3), 5.0, dtype=F64)
    xt = D.q_sample(lin, x0_far, 300, generator=_gen(19))
    out = D.p_mean_variance(_oracle(lin, x0_far), lin, xt, 300, clip_x0=(-1.0, 1.0))
    assert torch.allclose(out["pred_x0"], torch.ones_like(xt))
    # the three agree: ε from the clipped x̂0, and the mean is the seed's form with that ε
    assert torch.allclose(D.predict_x0_from_eps(lin, xt, 300, out["eps"]), out["pred_x0"], atol=1e-10)
    assert torch.allclose(D.mean_from_eps(lin, xt, 300, out["eps"]), out["mean"], atol=1e-10)
    with pytest.raises(ValueError, match="clip_x0 must be"):
        D.p_mean_variance(_oracle(lin, x0_far), lin, xt, 300, clip_x0=(1.0, -1.0))


def test_p_mean_variance_checks_model_output(lin):
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"the model must return ε of x_t's shape \(2, 3\), got \(2, 4\)"):
        D.p_mean_variance(lambda x_t, t: torch.zeros(2, 4), lin, x, 0)
    with pytest.raises(TypeError, match="the model must return a tensor"):
        D.p_mean_variance(lambda x_t, t: 0.0, lin, x, 0)


def test_p_mean_variance_unknown_variance(lin):
    with pytest.raises(ValueError, match=r"variance must be one of \('beta', 'beta_tilde'\), got 'learned'"):
        D.p_mean_variance(lambda x_t, t: torch.zeros_like(x_t), lin, torch.zeros(1, 2), 0, variance="learned")
    with pytest.raises(ValueError, match="variance must be one of"):
        D.model_variance(lin, "sigma")


# ----------------------------------------------------------------------------- L_simple
class _LinearEps:
    """A deterministic stand-in for ε_θ: depends on x_t and t, records its calls."""

    def __init__(self):
        self.calls = []

    def __call__(self, x_t, t, y=None):
        self.calls.append((x_t.clone(), t.clone(), y))
        return 0.3 * x_t + 0.001 * t.view(-1, *[1] * (x_t.dim() - 1)).to(x_t.dtype)


def test_loss_simple_is_the_hand_written_mse(lin):
    x0 = torch.rand(4, 1, 8, 8, generator=_gen(20), dtype=F64) * 2 - 1
    noise = torch.randn(4, 1, 8, 8, generator=_gen(21), dtype=F64)
    t = torch.tensor([0, 3, 500, 999])
    model = _LinearEps()
    loss = D.loss_simple(model, lin, x0, t, noise=noise)
    ab = lin.alpha_bars[t].view(4, 1, 1, 1)
    xt = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
    eps = 0.3 * xt + 0.001 * t.view(4, 1, 1, 1).double()
    per_item = ((noise - eps) ** 2).mean(dim=(1, 2, 3))
    assert loss.shape == () and loss.item() == pytest.approx(per_item.mean().item(), rel=1e-12)
    none = D.loss_simple(model, lin, x0, t, noise=noise, reduction="none")
    assert none.shape == (4,)
    assert torch.allclose(none, per_item, rtol=1e-12, atol=0)
    # the model saw the right x_t and t, and no label
    x_seen, t_seen, y_seen = model.calls[0]
    assert torch.allclose(x_seen, xt, atol=1e-14) and torch.equal(t_seen, t) and y_seen is None


def test_loss_simple_passes_labels_and_draws_t(lin):
    model = _LinearEps()
    y = torch.tensor([1, 2, 3])
    D.loss_simple(model, lin, torch.zeros(3, 2), y=y, generator=_gen(22))
    _, t_seen, y_seen = model.calls[0]
    assert torch.equal(y_seen, y)
    assert t_seen.shape == (3,) and t_seen.dtype == torch.long and 0 <= t_seen.min() and t_seen.max() < 1000
    perfect = D.loss_simple(lambda x_t, t: D.predict_eps_from_x0(lin, x_t, t, torch.zeros(3, 2, dtype=F64)),
                            lin, torch.zeros(3, 2, dtype=F64), generator=_gen(23))
    assert perfect.item() < 1e-20                     # the oracle has zero loss


def test_loss_simple_bad_reduction(lin):
    with pytest.raises(ValueError, match="reduction must be 'mean' or 'none', got 'sum'"):
        D.loss_simple(_LinearEps(), lin, torch.zeros(2, 2), reduction="sum")


# ----------------------------------------------------------------------------- bad input
FNS_X0_T = [
    ("q_sample", lambda s, x, t: D.q_sample(s, x, t)),
    ("q_step", lambda s, x, t: D.q_step(s, x, t)),
    ("q_mean_variance", lambda s, x, t: D.q_mean_variance(s, x, t)),
    ("q_posterior", lambda s, x, t: D.q_posterior(s, x, x, t)),
    ("predict_x0_from_eps", lambda s, x, t: D.predict_x0_from_eps(s, x, t, x)),
    ("predict_eps_from_x0", lambda s, x, t: D.predict_eps_from_x0(s, x, t, x)),
    ("mean_from_eps", lambda s, x, t: D.mean_from_eps(s, x, t, x)),
    ("loss_simple", lambda s, x, t: D.loss_simple(lambda a, b: a, s, x, t)),
    ("p_mean_variance", lambda s, x, t: D.p_mean_variance(lambda a, b: a, s, x, t)),
]


@pytest.mark.parametrize("name,fn", FNS_X0_T, ids=[n for n, _ in FNS_X0_T])
@pytest.mark.parametrize("t", [-1, 1000, torch.tensor([0, -1]), torch.tensor([999, 1000])], ids=["-1", "T", "neg", "T2"])
def test_t_out_of_range_raises_and_never_wraps(lin, name, fn, t):
    with pytest.raises(ValueError, match=r"t must lie in \[0, T-1\] = \[0, 999\]"):
        fn(lin, torch.zeros(2, 3), t)


@pytest.mark.parametrize("name,fn", FNS_X0_T, ids=[n for n, _ in FNS_X0_T])
def test_float_t_raises(lin, name, fn):
    with pytest.raises(TypeError, match=r"integer timesteps \(torch.long\), got dtype torch.float32"):
        fn(lin, torch.zeros(2, 3), torch.tensor([1.0, 2.0]))
    with pytest.raises(TypeError, match="t must be an int or an integer torch.Tensor, got float"):
        fn(lin, torch.zeros(2, 3), 5.0)


@pytest.mark.parametrize("name,fn", FNS_X0_T, ids=[n for n, _ in FNS_X0_T])
def test_t_of_wrong_batch_length_raises(lin, name, fn):
    with pytest.raises(ValueError, match="t has 3 timesteps but the batch has 2 items"):
        fn(lin, torch.zeros(2, 3), torch.tensor([1, 2, 3]))


def test_mismatched_shapes(lin):
    x = torch.zeros(2, 3)
    bad = torch.zeros(2, 4)
    with pytest.raises(ValueError, match=r"noise and x must have the same shape, got \(2, 4\) and \(2, 3\)"):
        D.q_sample(lin, x, 0, noise=bad)
    with pytest.raises(ValueError, match="noise and x must have the same shape"):
        D.q_step(lin, x, 0, noise=bad)
    with pytest.raises(ValueError, match="noise and x must have the same shape"):
        D.loss_simple(_LinearEps(), lin, x, 0, noise=bad)
    with pytest.raises(ValueError, match=r"x0 and x_t must have the same shape, got \(2, 3\) and \(2, 4\)"):
        D.q_posterior(lin, x, bad, 0)
    with pytest.raises(ValueError, match="x0 and x_t must have the same shape"):
        D.predict_eps_from_x0(lin, bad, 0, x)
    with pytest.raises(ValueError, match=r"eps and x_t must have the same shape, got \(2, 4\) and \(2, 3\)"):
        D.predict_x0_from_eps(lin, x, 0, bad)
    with pytest.raises(ValueError, match="eps and x_t must have the same shape"):
        D.mean_from_eps(lin, x, 0, bad)


def test_schedule_must_be_a_noise_schedule():
    with pytest.raises(TypeError, match="schedule must be a NoiseSchedule.*got Tensor"):
        D.q_sample(torch.linspace(1e-4, 0.02, 10), torch.zeros(2), 0)
