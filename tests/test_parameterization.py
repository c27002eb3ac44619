"""ε-, x₀- and v-prediction (book eqs. 5.5–5.7): conversions are exact inverses, match the definitions, and the
MSE weights relate the three losses."""
import itertools
import math

import pytest
import torch

from diffusion_lab import diffusion, parameterization as P
from diffusion_lab.schedules import cosine_schedule, linear_schedule

SCHEDULES = [linear_schedule(1000), cosine_schedule(1000), linear_schedule(10, 0.05, 0.5)]


def _draw(schedule, n=256, shape=(1, 8, 8), seed=0):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand((n,) + shape, generator=g, dtype=torch.float64) * 2 - 1
    eps = torch.randn((n,) + shape, generator=g, dtype=torch.float64)
    t = torch.randint(0, schedule.T, (n,), generator=g)
    t[0], t[1] = 0, schedule.T - 1                      # both ends of the chain
    return x0, eps, t, diffusion.q_sample(schedule, x0, t, noise=eps)


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: f"{s.name}{s.T}")
def test_every_conversion_recovers_the_true_targets(schedule):
    x0, eps, t, x_t = _draw(schedule)
    truth = {p: P.training_target(schedule, x0, t, eps, p) for p in P.PARAMETERIZATIONS}
    for src, dst in itertools.product(P.PARAMETERIZATIONS, repeat=2):
        got = P.convert(schedule, x_t, t, truth[src], src, dst)
        scale = 1.0 / schedule.sqrt_one_minus_alpha_bars[0].item() if src == "x0" else 1.0   # x₀ → ε divides by s_t
        assert (got - truth[dst]).abs().max().item() < 1e-11 * scale, (src, dst)


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: f"{s.name}{s.T}")
def test_round_trips_are_the_identity_for_any_prediction(schedule):
    _, _, t, x_t = _draw(schedule, seed=1)
    pred = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    for a, b in itertools.permutations(P.PARAMETERIZATIONS, 2):
        back = P.convert(schedule, x_t, t, P.convert(schedule, x_t, t, pred, a, b), b, a)
        assert (back - pred).abs().max().item() < 1e-9, (a, b)


def test_v_matches_its_definition_and_known_values():
    sch = linear_schedule(1000)
    x0 = torch.ones(2, 3, dtype=torch.float64)
    eps = torch.zeros(2, 3, dtype=torch.float64)
    t = torch.tensor([0, 999])
    v = P.velocity(sch, x0, t, eps)
    # code index 0 = paper step 1: ᾱ = 1 − 1e-4, so v = −√(1e-4) x₀ = −0.01 for x₀ = 1, ε = 0
    assert v[0, 0].item() == pytest.approx(-0.01, abs=1e-15)
    assert v[1, 0].item() == pytest.approx(-math.sqrt(1 - sch.alpha_bars[-1].item()), rel=1e-14)
    # x₀ = 0: v = √ᾱ ε
    v2 = P.velocity(sch, torch.zeros(2, 3, dtype=torch.float64), t, torch.ones(2, 3, dtype=torch.float64))
    assert v2[1, 0].item() == pytest.approx(math.sqrt(sch.alpha_bars[-1].item()), rel=1e-14)


def test_agrees_with_the_diffusion_module():
    sch = linear_schedule(1000)
    x0, eps, t, x_t = _draw(sch, seed=3)
    pred = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    assert torch.allclose(P.to_x0(sch, x_t, t, pred, "eps"), diffusion.predict_x0_from_eps(sch, x_t, t, pred), atol=1e-12)
    assert torch.allclose(P.to_eps(sch, x_t, t, pred, "x0"), diffusion.predict_eps_from_x0(sch, x_t, t, pred), atol=1e-12)


@pytest.mark.parametrize("param", ["eps", "x0", "v"])
def test_mse_weight_relates_the_losses(param):
    """‖ε − ε̂‖² = w_t ‖p − p̂‖² at fixed x_t (eq. 5.7), for an arbitrary wrong prediction p̂."""
    sch = linear_schedule(1000)
    x0, eps, t, x_t = _draw(sch, seed=5)
    p_true = P.training_target(sch, x0, t, eps, param)
    p_hat = p_true + 0.1 * torch.randn(p_true.shape, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    eps_hat = P.to_eps(sch, x_t, t, p_hat, param)
    lhs = (eps - eps_hat).pow(2).flatten(1).sum(1)
    rhs = P.eps_mse_weight(sch, param)[t] * (p_true - p_hat).pow(2).flatten(1).sum(1)
    assert torch.allclose(lhs, rhs, rtol=1e-9, atol=1e-12)


def test_mse_weights_known_values():
    sch = linear_schedule(1000)
    w_x0, w_v = P.eps_mse_weight(sch, "x0"), P.eps_mse_weight(sch, "v")
    assert w_x0[0].item() == pytest.approx((1 - 1e-4) / 1e-4, rel=1e-12)          # SNR at paper step 1 ≈ 9999
    assert w_v[0].item() == pytest.approx(1 - 1e-4, rel=1e-12)
    assert torch.equal(P.eps_mse_weight(sch, "eps"), torch.ones(1000, dtype=torch.float64))
    assert w_x0.dtype == w_v.dtype == torch.float64
    assert bool((w_x0[1:] < w_x0[:-1]).all())                                       # SNR falls with t


@pytest.mark.parametrize("param", ["x0", "v"])
def test_eps_wrapper_turns_an_oracle_into_the_true_noise(param):
    sch = linear_schedule(1000)
    x0, eps, t, x_t = _draw(sch, n=32, shape=(2,), seed=7)
    lookup = {"x0": x0, "v": P.velocity(sch, x0, t, eps)}

    class Oracle(torch.nn.Module):
        def forward(self, x, tt, y=None):
            return lookup[param]

    model = P.EpsFromPrediction(Oracle(), sch, param)
    assert (model(x_t, t) - eps).abs().max().item() < 1e-9
    assert "EpsFromPrediction" in repr(model)


def test_clear_errors():
    sch = linear_schedule(100)
    x = torch.zeros(4, 2)
    t = torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match="parameterization"):
        P.to_eps(sch, x, t, x, "score")
    with pytest.raises(ValueError, match="same shape"):
        P.to_x0(sch, x, t, torch.zeros(4, 3), "v")
    with pytest.raises(TypeError, match="NoiseSchedule"):
        P.velocity("linear", x, t, x)
    with pytest.raises(ValueError, match=r"\[0, T-1\]"):
        P.to_v(sch, x, torch.full((4,), 100), x, "eps")
