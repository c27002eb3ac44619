"""Flow matching: the loss's target, the exact velocity of a Gaussian mixture (against Tweedie on the rescaled
diffusion and against Monte Carlo), Euler and Heun on the exact velocity, CFG, training, diffusers' flow scheduler."""
import math

import numpy as np
import pytest
import torch

from diffusion_lab import flow_matching as fm
from diffusion_lab.gaussian_mixture import GaussianMixture, example_mixture_2d
from diffusion_lab.guidance import ClassifierFreeGuidance
from diffusion_lab.models import build_model


@pytest.fixture(scope="module")
def mix():
    return example_mixture_2d()


def test_interpolate_and_target():
    x0 = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    e = torch.randn(6, 3, generator=torch.Generator().manual_seed(1))
    t = torch.linspace(0, 1, 6)
    xt = fm.interpolate(x0, e, t)
    assert torch.allclose(xt[0], x0[0]) and torch.allclose(xt[-1], e[-1])
    assert torch.allclose(xt, (1 - t[:, None]) * x0 + t[:, None] * e)
    assert torch.equal(fm.velocity_target(x0, e), e - x0)
    with pytest.raises(ValueError):
        fm.interpolate(x0, e, 1.5)


def test_loss_regresses_the_velocity_target():
    """A model that returns ε − x_0 exactly (it is told both) has zero loss; one that returns 0 has E|ε − x_0|²."""
    x0 = torch.randn(32, 4, generator=torch.Generator().manual_seed(2))
    noise = torch.randn(32, 4, generator=torch.Generator().manual_seed(3))
    t = torch.rand(32, generator=torch.Generator().manual_seed(4))
    # at x_t, ε − x_0 = (x_t − x_0)/t: an oracle that knows x_0
    oracle = lambda x, tt, y=None: (x - (1 - tt[:, None]) * x0) / tt[:, None] - x0
    assert fm.flow_matching_loss(oracle, x0, t=t, noise=noise).item() < 1e-10
    zero = lambda x, tt, y=None: torch.zeros_like(x)
    expect = (noise - x0).pow(2).mean()
    assert torch.allclose(fm.flow_matching_loss(zero, x0, t=t, noise=noise), expect)
    per = fm.flow_matching_loss(zero, x0, t=t, noise=noise, reduction="none")
    assert per.shape == (32,)
    drawn = fm.flow_matching_loss(zero, x0, generator=torch.Generator().manual_seed(0))
    assert drawn.item() > 0


def test_flow_velocity_equals_rescaled_diffusion_tweedie(mix):
    x = torch.randn(300, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64) * 1.5
    for t in (0.05, 0.3, 0.5, 0.8, 0.97):
        c = math.sqrt((1 - t) ** 2 + t ** 2)
        ab = ((1 - t) / c) ** 2
        eps = -math.sqrt(1 - ab) * mix.diffuse(ab).score(x / c)
        x0 = (x - t * eps) / (1 - t)
        assert (mix.flow_velocity(x, t) - (eps - x0)).abs().max() < 1e-9, t


def test_flow_velocity_is_the_conditional_mean_monte_carlo():
    """One Gaussian in 1-D: v*(x, t) from regressing ε − x_0 on x_t over many draws (a linear fit is exact here)."""
    g = GaussianMixture([1.0], [[0.4]], stds=0.3)
    gen = torch.Generator().manual_seed(6)
    x0 = g.sample(400_000, gen)
    e = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
    t = 0.4
    xt = (1 - t) * x0 + t * e
    target = (e - x0)[:, 0]
    A = torch.stack([xt[:, 0], torch.ones(len(xt), dtype=torch.float64)], 1)
    coef = torch.linalg.lstsq(A, target[:, None]).solution[:, 0]
    grid = torch.linspace(-1, 1.5, 7, dtype=torch.float64)[:, None]
    assert (g.flow_velocity(grid, t)[:, 0] - (coef[0] * grid[:, 0] + coef[1])).abs().max() < 0.01


def test_flow_velocity_ends(mix):
    x = torch.randn(10, 2, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    assert torch.allclose(mix.flow_velocity(x, 1.0), x - mix.mean())
    assert torch.isfinite(mix.flow_velocity(x, 0.0)).all()
    with pytest.raises(ValueError):
        mix.flow_velocity(x, -0.1)


def test_euler_first_and_heun_second_order(mix):
    v = lambda x, t, y=None: mix.flow_velocity(x, t).to(x.dtype)
    x_T = torch.randn(100, 2, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    ref = fm.heun_sample(v, x_T=x_T, steps=800, grid=None)
    steps = [20, 40, 80]
    e = [(fm.euler_sample(v, x_T=x_T, steps=S, grid=None) - ref).norm(dim=1).mean().item() for S in steps]
    h = [(fm.heun_sample(v, x_T=x_T, steps=S, grid=None) - ref).norm(dim=1).mean().item() for S in steps]
    assert -1.25 < np.polyfit(np.log(steps), np.log(e), 1)[0] < -0.8
    assert -2.5 < np.polyfit(np.log(steps), np.log(h), 1)[0] < -1.7


def test_sampler_on_exact_velocity_reaches_the_data_law():
    g = GaussianMixture([1.0], [[0.7, -0.3]], stds=0.5)
    v = lambda x, t, y=None: g.flow_velocity(x, t).to(x.dtype)
    x = fm.heun_sample(v, (20000, 2), steps=30, grid=None, generator=torch.Generator().manual_seed(9))
    assert (x.mean(0) - torch.tensor([0.7, -0.3])).abs().max() < 0.02
    assert (x.std(0) - 0.5).abs().max() < 0.02


def test_cfg_mixes_velocities_and_rejects_an_interval():
    calls = []

    class M:
        num_classes = 2

        def __call__(self, x, t, y=None):
            calls.append(y.clone())
            return torch.where((y == 2)[:, None], torch.ones_like(x), 2 * torch.ones_like(x))

    x_T = torch.zeros(3, 2)
    x = fm.euler_sample(M(), x_T=x_T, steps=1, y=torch.tensor([0, 1, 0]), guidance=ClassifierFreeGuidance(0.5),
                        grid=None)
    # ṽ = 1.5 · 2 − 0.5 · 1 = 2.5, one Euler step of length −1
    assert torch.allclose(x, torch.full((3, 2), -2.5))
    assert calls[0].tolist() == [0, 1, 0, 2, 2, 2]
    with pytest.raises(ValueError):
        fm.euler_sample(M(), x_T=x_T, steps=1, y=torch.tensor([0, 1, 0]),
                        guidance=ClassifierFreeGuidance(0.5, interval=(0, 10)))


def test_timesteps_on_the_grid():
    ts = fm.flow_timesteps(7, grid=1000)
    assert ts[0] == 1 and ts[-1] == 0 and len(ts) == 8
    assert torch.allclose(ts * 999, (ts * 999).round())
    with pytest.raises(ValueError):
        fm.flow_timesteps(0)


def test_train_flow_lowers_the_loss_and_samples():
    torch.manual_seed(0)
    x = torch.randn(256, 1, 8, 8, generator=torch.Generator().manual_seed(10)).clamp(-1, 1) * 0.5
    y = torch.randint(0, 3, (256,), generator=torch.Generator().manual_seed(11))
    net = build_model("unet", image_size=8, in_channels=1, base_channels=8, channel_mults=(1,), num_res_blocks=1,
                      attention_resolutions=(), num_groups=4, num_classes=3)
    res = fm.train_flow(net, (x, y), steps=40, batch_size=32, lr=2e-3, warmup=5, ema_decay=0.9, label_dropout=0.2)
    assert res.images == 40 * 32 and len(res.losses) == 40
    assert np.mean(res.losses[-10:]) < np.mean(res.losses[:5])
    out = fm.heun_sample(res.ema_model, (4, 1, 8, 8), steps=3, y=torch.tensor([0, 1, 2, 0]),
                         guidance=ClassifierFreeGuidance(1.0), generator=torch.Generator().manual_seed(0))
    assert out.shape == (4, 1, 8, 8) and torch.isfinite(out).all()
    with pytest.raises(ValueError):
        fm.train_flow(net, x, steps=2, batch_size=8, label_dropout=0.1)


def test_matches_diffusers_flow_match_euler(mix):
    diffusers = pytest.importorskip("diffusers", reason="diffusers is in requirements.txt; pip install -r requirements.txt")
    v = lambda x, t, y=None: mix.flow_velocity(x, t).to(x.dtype)
    x_T = torch.randn(50, 2, generator=torch.Generator().manual_seed(12))
    ts = fm.flow_timesteps(12, grid=None)
    sch = diffusers.FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000)
    sch.set_timesteps(sigmas=ts[:-1].tolist())
    x = x_T.clone()
    for k, t in enumerate(sch.timesteps):
        x = sch.step(v(x, ts[k].item()), t, x).prev_sample
    assert (fm.euler_sample(v, x_T=x_T, steps=12, grid=None) - x).abs().max() < 1e-4
