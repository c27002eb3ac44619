"""Noise schedules: known values, the index convention, the β̃ identities and the seed's "β̃ ≈ β"."""
import json
import math

import pytest
import torch

from diffusion_lab.schedules import (NoiseSchedule, check_timesteps, cosine_schedule, get_schedule,
                                     linear_schedule)

F64 = torch.float64


@pytest.fixture(scope="module")
def lin():
    return linear_schedule(1000)


@pytest.fixture(scope="module")
def cos():
    return cosine_schedule(1000)


# ----------------------------------------------------------------------------- shapes and dtypes
@pytest.mark.parametrize("make", [linear_schedule, cosine_schedule])
@pytest.mark.parametrize("T", [1, 7, 1000])
def test_every_coefficient_is_float64_of_length_T(make, T):
    s = make(T)
    assert s.T == T
    for name in ("betas", "alphas", "alpha_bars", "alpha_bars_prev", "posterior_variance"):
        v = getattr(s, name)
        assert v.dtype == F64, name
        assert v.shape == (T,), name
        assert torch.isfinite(v).all(), name


# ----------------------------------------------------------------------------- linear: known values
def test_linear_endpoints(lin):
    # code index 0 is the paper's β_1, index T-1 is β_T
    assert lin.betas[0].item() == pytest.approx(1e-4, abs=1e-15)
    assert lin.betas[-1].item() == pytest.approx(0.02, abs=1e-15)
    # evenly spaced
    d = lin.betas.diff()
    assert torch.allclose(d, torch.full_like(d, (0.02 - 1e-4) / 999), rtol=0, atol=1e-15)


def test_linear_alpha_bar_T_is_small(lin):
    assert 0 < lin.alpha_bars[-1].item() < 1e-4
    # reference value computed independently with math.prod in double precision
    ref = math.prod(1 - (1e-4 + k * (0.02 - 1e-4) / 999) for k in range(1000))
    assert lin.alpha_bars[-1].item() == pytest.approx(ref, rel=1e-10)
    assert lin.alpha_bars[-1].item() == pytest.approx(4.0358e-5, rel=1e-4)


def test_linear_posterior_variance_known_values(lin):
    # diffusers' DDPM scheduler test pins β̃ at index 487 of the default linear schedule
    assert lin.posterior_variance[487].item() == pytest.approx(0.00979, abs=1e-5)
    assert lin.posterior_variance[999].item() == pytest.approx(0.02, abs=1e-5)
    assert lin.posterior_variance[0].item() == 0.0


def test_alpha_bars_prev_is_shifted_by_exactly_one(lin, cos):
    for s in (lin, cos):
        assert s.alpha_bars_prev[0].item() == 1.0
        assert torch.equal(s.alpha_bars_prev[1:], s.alpha_bars[:-1])
        # and not the classic mistake of shifting the wrong way / not at all
        assert not torch.equal(s.alpha_bars_prev, s.alpha_bars)


def test_alphas_and_cumprod(lin):
    assert torch.equal(lin.alphas, 1 - lin.betas)
    # ᾱ_t is the running product, recomputed with a Python loop
    prod, ref = 1.0, []
    for a in lin.alphas.tolist():
        prod *= a
        ref.append(prod)
    assert torch.allclose(lin.alpha_bars, torch.tensor(ref, dtype=F64), rtol=1e-12, atol=0)


# ----------------------------------------------------------------------------- β̃ identities
@pytest.mark.parametrize("make", [linear_schedule, cosine_schedule])
def test_posterior_variance_identity_and_completing_the_square(make):
    s = make(1000)
    ab, abp, b, a = s.alpha_bars, s.alpha_bars_prev, s.betas, s.alphas
    formula = (1 - abp) / (1 - ab) * b
    assert torch.allclose(s.posterior_variance, formula, rtol=1e-12, atol=0)
    # completing the square in q(x_t|x_{t-1}) q(x_{t-1}|x_0): precision = α_t/β_t + 1/(1-ᾱ_{t-1}).
    # Defined for paper t ≥ 2 (at t = 1, 1-ᾱ_0 = 0: the posterior is a point mass, β̃_1 = 0).
    square = 1.0 / (a[1:] / b[1:] + 1.0 / (1 - abp[1:]))
    assert torch.allclose(s.posterior_variance[1:], square, rtol=1e-10, atol=0)
    # posterior variance never exceeds either β_t or the prior variance 1-ᾱ_{t-1}
    assert (s.posterior_variance <= b).all()
    assert (s.posterior_variance[1:] <= 1 - abp[1:]).all()


def test_posterior_mean_coefficients(lin):
    s = lin
    c0 = s.alpha_bars_prev.sqrt() * s.betas / (1 - s.alpha_bars)
    ct = s.alphas.sqrt() * (1 - s.alpha_bars_prev) / (1 - s.alpha_bars)
    assert torch.allclose(s.posterior_mean_coef_x0, c0, rtol=1e-12, atol=0)
    assert torch.allclose(s.posterior_mean_coef_xt, ct, rtol=1e-12, atol=0)
    # at paper t = 1 the posterior mean is x_0 itself
    assert s.posterior_mean_coef_x0[0].item() == pytest.approx(1.0, abs=1e-12)
    assert s.posterior_mean_coef_xt[0].item() == 0.0


def test_seed_beta_tilde_approx_beta_quantified(lin):
    """The seed writes β̃_t ≈ β_t. For linear T=1000 it holds to 1% from paper step t=168 on (code index
    167) — measured: at paper t=167 the ratio is 0.98996 — and fails badly at the start (β̃_1 = 0)."""
    ratio = lin.posterior_variance / lin.betas
    assert ((ratio[167:] - 1).abs() <= 0.01).all()
    assert abs(ratio[166].item() - 1) > 0.01          # the threshold is where we say it is
    assert ratio[0].item() == 0.0                     # paper t = 1: β̃_1 = 0, infinitely far from β_1 in ratio
    assert ratio[1].item() == pytest.approx(0.4547, abs=1e-4)  # paper t = 2: less than half
    assert (ratio <= 1).all() and (ratio.diff() >= 0).all()    # β̃ ≤ β, approaching from below


def test_posterior_variance_clipped(lin):
    v = lin.posterior_variance_clipped
    assert v[0].item() == lin.posterior_variance[1].item() > 0
    assert torch.equal(v[1:], lin.posterior_variance[1:])
    assert lin.posterior_variance[0].item() == 0.0  # the original is untouched


# ----------------------------------------------------------------------------- cosine
def test_cosine_schedule(cos):
    T, s = 1000, 0.008
    f = lambda t: math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    assert cos.alpha_bars[0].item() == pytest.approx(f(1) / f(0), rel=1e-12)
    assert cos.alpha_bars[499].item() == pytest.approx(f(500) / f(0), rel=1e-9)
    assert (cos.alpha_bars.diff() < 0).all()          # strictly decreasing
    assert cos.betas.max().item() == 0.999             # clipped at max_beta ...
    assert cos.betas[-1].item() == 0.999               # ... exactly at the end, where f(T) = 0 would give β = 1
    assert (cos.betas < 1).all() and (cos.betas > 0).all()
    assert (cos.betas[:-1] < 0.999).all()              # only the last one needed clipping
    # the cosine schedule keeps more signal mid-way than the linear one (its raison d'être)
    assert cos.alpha_bars[499] > linear_schedule(1000).alpha_bars[499]


def test_cosine_max_beta_argument():
    s = cosine_schedule(100, max_beta=0.5)
    assert s.betas.max().item() == 0.5


# ----------------------------------------------------------------------------- config round trip
@pytest.mark.parametrize("sched", [linear_schedule(1000), linear_schedule(50, 1e-3, 0.05), cosine_schedule(1000),
                                   cosine_schedule(30, s=0.02), NoiseSchedule(torch.tensor([0.1, 0.2, 0.3]))])
def test_get_schedule_round_trip(sched):
    cfg = json.loads(json.dumps(sched.to_config()))   # JSON-able
    back = get_schedule(cfg)
    assert back.T == sched.T
    for name in ("betas", "alpha_bars", "posterior_variance"):
        assert torch.allclose(getattr(back, name), getattr(sched, name), rtol=1e-12, atol=0), name


def test_get_schedule_by_name():
    assert torch.equal(get_schedule("linear", T=10).betas, linear_schedule(10).betas)
    assert torch.equal(get_schedule("cosine", T=10).betas, cosine_schedule(10).betas)


def test_repr_mentions_T():
    assert "T=1000" in repr(linear_schedule())


# ----------------------------------------------------------------------------- extract
def test_extract_gathers_and_broadcasts_in_input_dtype(lin):
    x = torch.zeros(3, 2, 4, 4, dtype=torch.float32)
    t = torch.tensor([0, 487, 999])
    out = lin.extract("posterior_variance", t, x)
    assert out.shape == (3, 1, 1, 1) and out.dtype == torch.float32
    assert torch.equal(out.flatten(), lin.posterior_variance[t].float())
    out64 = lin.extract(lin.betas, 5, x.double())
    assert out64.dtype == F64 and torch.equal(out64.flatten(), lin.betas[[5, 5, 5]])


def test_extract_rounds_float64_coefficients_not_float32_cumprod(lin):
    """Coefficients are computed in float64 and only the final value is cast: ᾱ_T in float32 equals the
    float64 value rounded once, which differs from a float32 running product (that drifts by ~3e-7)."""
    x = torch.zeros(1)
    got = lin.extract("alpha_bars", 999, x)
    assert got.dtype == torch.float32
    assert got.item() == lin.alpha_bars[999].float().item()
    drift = torch.cumprod(1 - lin.betas.float(), 0)[-1]
    assert drift.item() != got.item()


def test_extract_unknown_name(lin):
    with pytest.raises(ValueError, match="unknown schedule coefficient 'nope'"):
        lin.extract("nope", 0, torch.zeros(1))


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("bad", [0, -5])
def test_T_must_be_positive(bad):
    for make in (linear_schedule, cosine_schedule):
        with pytest.raises(ValueError, match=r"T must be a positive int.*T=" + str(bad)):
            make(bad)


@pytest.mark.parametrize("bad", [10.0, "10", True, None])
def test_T_must_be_int(bad):
    for make in (linear_schedule, cosine_schedule):
        with pytest.raises(TypeError, match="T must be a positive int"):
            make(bad)


@pytest.mark.parametrize("kw", [dict(beta_start=0.0), dict(beta_start=-1e-4), dict(beta_end=1.0),
                                dict(beta_end=1.5)])
def test_linear_betas_must_lie_in_open_unit_interval(kw):
    with pytest.raises(ValueError, match=r"must lie in \(0, 1\)"):
        linear_schedule(10, **kw)


@pytest.mark.parametrize("betas", [[0.1, 0.0, 0.2], [0.1, 1.0], [0.5, -0.1], [0.2, 1.2]])
def test_noise_schedule_rejects_betas_outside_open_interval(betas):
    with pytest.raises(ValueError, match=r"every beta must lie in the open interval \(0, 1\)"):
        NoiseSchedule(torch.tensor(betas))


def test_noise_schedule_rejects_bad_shapes_and_nan():
    with pytest.raises(ValueError, match="non-empty 1-D"):
        NoiseSchedule(torch.tensor([]))
    with pytest.raises(ValueError, match="non-empty 1-D"):
        NoiseSchedule(torch.full((2, 2), 0.1))
    with pytest.raises(ValueError, match="finite"):
        NoiseSchedule(torch.tensor([0.1, float("nan")]))


def test_cosine_bad_arguments():
    with pytest.raises(ValueError, match="s must be >= 0"):
        cosine_schedule(10, s=-0.1)
    with pytest.raises(ValueError, match=r"max_beta must lie in \(0, 1\)"):
        cosine_schedule(10, max_beta=1.0)


def test_unknown_schedule_name():
    with pytest.raises(ValueError, match=r"unknown schedule 'quadratic'; choose one of \['cosine', 'linear'\]"):
        get_schedule("quadratic")


@pytest.mark.parametrize("t", [-1, 10, torch.tensor([0, -1]), torch.tensor([3, 10])])
def test_check_timesteps_range(t):
    with pytest.raises(ValueError, match=r"t must lie in \[0, T-1\] = \[0, 9\]"):
        check_timesteps(t, 10)


def test_check_timesteps_types_and_batch():
    assert torch.equal(check_timesteps(3, 10, batch=4), torch.full((4,), 3))
    assert torch.equal(check_timesteps(torch.tensor(2), 10, batch=3), torch.full((3,), 2))
    assert check_timesteps(torch.tensor([1, 2], dtype=torch.int32), 10).dtype == torch.long
    with pytest.raises(TypeError, match="integer timesteps.*got dtype torch.float32"):
        check_timesteps(torch.tensor([1.0, 2.0]), 10)
    with pytest.raises(TypeError, match="t must be an int or an integer torch.Tensor, got float"):
        check_timesteps(3.0, 10)
    with pytest.raises(TypeError, match="got a bool"):
        check_timesteps(True, 10)
    with pytest.raises(ValueError, match="t has 2 timesteps but the batch has 3 items"):
        check_timesteps(torch.tensor([1, 2]), 10, batch=3)
    with pytest.raises(ValueError, match=r"1-D tensor of shape \(B,\), got shape \(2, 1\)"):
        check_timesteps(torch.tensor([[1], [2]]), 10)


def test_cosine_config_round_trip_keeps_max_beta():
    from diffusion_lab.schedules import get_schedule

    sch = cosine_schedule(200, s=0.01, max_beta=0.5)
    back = get_schedule(sch.to_config())
    assert back.betas.max() <= 0.5 and torch.equal(back.betas, sch.betas)
