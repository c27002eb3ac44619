"""Public functions checked against independent values: closed forms, finite differences, hand-computed cases.

``OptimalDenoiser.x0_mean`` (Tweedie) against a Monte-Carlo posterior mean; ``GaussianMixture.responsibilities``
against Bayes' rule done by hand with scipy-free Gaussian densities; ``NoiseSchedule.snr`` against ᾱ/(1−ᾱ) from
the β's; ``resolve_amp`` and ``TrainResult.sampling_model`` on each of their cases.
"""
import math

import pytest
import torch

from diffusion_lab.gaussian_mixture import GaussianMixture, OptimalDenoiser
from diffusion_lab.schedules import cosine_schedule, linear_schedule
from diffusion_lab.train import TrainResult, resolve_amp

MIX = GaussianMixture(weights=[0.3, 0.7], means=[[-1.0, 0.5], [1.5, -0.5]],
                      covs=[[[0.2, 0.05], [0.05, 0.1]], [[0.3, 0.0], [0.0, 0.05]]])


def gauss_pdf(x, mean, cov):
    d = x - mean
    inv = torch.linalg.inv(cov)
    q = (d @ inv * d).sum(-1)
    return torch.exp(-0.5 * q) / (2 * math.pi * torch.linalg.det(cov).sqrt())


def test_responsibilities_are_bayes_rule_by_hand():
    x = torch.tensor([[-1.0, 0.4], [0.2, 0.0], [1.4, -0.6], [5.0, 5.0]], dtype=torch.float64)
    like = torch.stack([gauss_pdf(x, MIX.means[k], MIX.covs[k]) for k in range(2)], 1)
    joint = like * MIX.weights
    by_hand = joint / joint.sum(1, keepdim=True)
    got = MIX.responsibilities(x)
    assert got.shape == (4, 2)
    assert (got - by_hand).abs().max().item() < 1e-12
    assert torch.allclose(got.sum(1), torch.ones(4, dtype=torch.float64))


def test_x0_mean_equals_a_monte_carlo_posterior_mean():
    """E[x_0 | x_t] by importance weighting prior draws x_0 ~ p with weights q(x_t | x_0) (eq. 2.4)."""
    sched = linear_schedule(1000)
    oracle = OptimalDenoiser(MIX, sched)
    g = torch.Generator().manual_seed(0)
    x0s = MIX.sample(400_000, generator=g)
    for t in (50, 300, 700):
        ab = sched.alpha_bars[t].item()
        x_t = torch.tensor([[0.3, 0.1]], dtype=torch.float64)
        logw = -((x_t - math.sqrt(ab) * x0s) ** 2).sum(1) / (2 * (1 - ab))
        w = torch.softmax(logw, 0)
        mc = (w[:, None] * x0s).sum(0)
        ess = 1.0 / (w ** 2).sum().item()
        var = (w[:, None] * (x0s - mc) ** 2).sum(0)
        se = (var / ess).sqrt()
        got = oracle.x0_mean(x_t, t)[0]
        z = ((got - mc) / se).abs().max().item()
        assert z < 5, f"code t={t}: Tweedie {got.tolist()} vs Monte Carlo {mc.tolist()} (z = {z:.1f}, ESS {ess:.0f})"


@pytest.mark.parametrize("make", [lambda: linear_schedule(1000), lambda: cosine_schedule(200)])
def test_snr_from_the_betas(make):
    s = make()
    ab = torch.cumprod(1 - s.betas, 0)
    by_hand = ab / (1 - ab)
    assert s.snr.dtype == torch.float64
    assert ((s.snr - by_hand).abs() / by_hand).max().item() < 1e-10
    assert bool((s.snr[1:] < s.snr[:-1]).all()), "the SNR falls with t"
    # a known value: linear schedule, code t = 0 → ᾱ = 1 − 1e-4
    if s.T == 1000 and abs(s.betas[0].item() - 1e-4) < 1e-15:
        assert s.snr[0].item() == pytest.approx((1 - 1e-4) / 1e-4, rel=1e-9)


def test_resolve_amp_cases():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    for off in (None, False, "off", "no", "fp32", "none"):
        assert resolve_amp(off, cpu) is None and resolve_amp(off, cuda) is None
    assert resolve_amp("auto", cpu) is None and resolve_amp(True, cpu) is None
    assert resolve_amp("bf16", cpu) is torch.bfloat16 and resolve_amp("bfloat16", cpu) is torch.bfloat16
    assert resolve_amp("fp16", cuda) is torch.float16 and resolve_amp("float16", cuda) is torch.float16
    with pytest.raises(ValueError, match="amp must be"):
        resolve_amp("int8", cpu)


def test_sampling_model_is_the_ema_when_there_is_one():
    a, b = torch.nn.Linear(1, 1), torch.nn.Linear(1, 1)
    common = dict(losses=[], steps=0, wall_time=0.0, samples_per_s=0.0, device="cpu", amp=None)
    assert TrainResult(model=a, ema_model=b, **common).sampling_model is b
    assert TrainResult(model=a, ema_model=None, **common).sampling_model is a
