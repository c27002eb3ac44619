"""DPM-Solver++(2M) against exact answers: two steps written out by hand from Lu et al.'s formulas, the first-order
solver = DDIM, the second order measured on the exact mixture denoiser, and diffusers' DPMSolverMultistepScheduler."""
import math

import numpy as np
import pytest
import torch

from diffusion_lab import sampling
from diffusion_lab.gaussian_mixture import example_mixture_2d, optimal_eps_model
from diffusion_lab.guidance import ClassifierFreeGuidance
from diffusion_lab.gaussian_mixture import GaussianOracle
from diffusion_lab.schedules import linear_schedule


@pytest.fixture(scope="module")
def sch():
    return linear_schedule(1000)


def test_three_steps_by_hand(sch):
    """Grid 100 < 500 < 999: a first-order step, a second-order step with r = h_prev / h, the final jump to x̂_0."""
    oracle = GaussianOracle(sch, mean=0.3, std=0.4)
    x_T = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ab = {k: float(sch.alpha_bars[k]) for k in (999, 500, 100)}
    a = {k: math.sqrt(v) for k, v in ab.items()}
    s = {k: math.sqrt(1 - v) for k, v in ab.items()}
    lam = {k: math.log(a[k] / s[k]) for k in ab}
    x0_hat = lambda x, k: (x - s[k] * oracle(x, k)) / a[k]
    # step 1: 999 -> 500, first order (9.4)
    d1 = x0_hat(x_T, 999)
    h1 = lam[500] - lam[999]
    x = s[500] / s[999] * x_T - a[500] * (math.exp(-h1) - 1) * d1
    # step 2: 500 -> 100, second order (9.5)
    d2 = x0_hat(x, 500)
    h2 = lam[100] - lam[500]
    r = h1 / h2
    D = (1 + 1 / (2 * r)) * d2 - 1 / (2 * r) * d1
    x = s[100] / s[500] * x - a[100] * (math.exp(-h2) - 1) * D
    # step 3: 100 -> sigma = 0, first order: x_0 = x̂_0
    x = x0_hat(x, 100)
    pkg = sampling.dpm_solver_sample(oracle, sch, None, timesteps=[100, 500, 999], x_T=x_T, progress=False)
    assert torch.allclose(pkg, x, atol=1e-12, rtol=0)


def test_first_order_is_ddim(sch):
    m = optimal_eps_model(example_mixture_2d(), sch)
    x_T = torch.randn(64, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for steps in (1, 2, 7, 30):
        a = sampling.ddim_sample(m, sch, None, steps=steps, x_T=x_T, progress=False)
        b = sampling.dpm_solver_sample(m, sch, None, steps=steps, spacing="time", order=1, x_T=x_T, progress=False)
        assert (a - b).abs().max() < 1e-10, steps


def test_second_order_on_the_exact_mixture(sch):
    """Error against a 1000-step solution: slope ≈ −2 for DPM-Solver++, ≈ −1 for the first-order solver."""
    m = optimal_eps_model(example_mixture_2d(), sch)
    x_T = torch.randn(100, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    ref = sampling.dpm_solver_sample(m, sch, None, steps=1000, spacing="time", x_T=x_T, progress=False)
    steps = [20, 40, 80]
    err = {o: [(sampling.dpm_solver_sample(m, sch, None, steps=S, order=o, x_T=x_T, progress=False) - ref)
               .norm(dim=1).mean().item() for S in steps] for o in (1, 2)}
    slope = {o: np.polyfit(np.log(steps), np.log(e), 1)[0] for o, e in err.items()}
    assert -1.25 < slope[1] < -0.8, slope
    assert -2.5 < slope[2] < -1.7, slope
    assert err[2][-1] < err[1][-1] / 5


def test_exact_on_gaussian_data_as_steps_grow(sch):
    """The ODE maps N(0, I) to the data law N(m, s²) exactly: the samples' moments converge to it."""
    oracle = GaussianOracle(sch, mean=0.7, std=0.5)
    x = sampling.dpm_solver_sample(oracle, sch, (20000, 2), steps=50, generator=torch.Generator().manual_seed(3),
                                   progress=False)
    assert abs(x.mean().item() - 0.7) < 0.02 and abs(x.std().item() - 0.5) < 0.02


def test_timesteps_grids_and_errors(sch):
    for sp in sampling.DPM_SPACINGS:
        g = sampling.dpm_solver_timesteps(sch, 10, sp)
        assert g[0] == 0 and g[-1] == 999 and len(g) == 10 and bool((g[1:] > g[:-1]).all()), sp
    assert torch.equal(sampling.dpm_solver_timesteps(sch, 10, "time"), sampling.ddim_timesteps(1000, 10))
    m = GaussianOracle(sch)
    with pytest.raises(LookupError):
        sampling.dpm_solver_sample(m, sch, (2, 2), steps=5, spacing="cosine", progress=False)
    with pytest.raises(ValueError):
        sampling.dpm_solver_sample(m, sch, (2, 2), timesteps=[5, 5, 9], progress=False)
    with pytest.raises(ValueError):
        sampling.dpm_solver_sample(m, sch, (2, 2), timesteps=[0, 1000], progress=False)
    with pytest.raises(ValueError):
        sampling.dpm_solver_sample(m, sch, (2, 2), steps=5, order=3, progress=False)
    x, traj = sampling.dpm_solver_sample(m, sch, (3, 2), steps=4, return_trajectory=True, trajectory_every=1,
                                         generator=torch.Generator().manual_seed(0), progress=False)
    assert traj.steps[0] == 1000 and traj.steps[-1] == 0 and torch.equal(traj.x[-1], x)


class _TwoClassModel:
    """A small conditional ε-model for the CFG check: label 0 / 1 / null 2 shift the oracle differently."""
    num_classes = 2

    def __init__(self, sch):
        self.base = GaussianOracle(sch, mean=0.2, std=0.6)

    def __call__(self, x, t, y=None):
        e = self.base(x, t)
        shift = torch.tensor([0.1, -0.2, 0.0], dtype=x.dtype)[y].reshape(-1, *[1] * (x.dim() - 1))
        return e + shift


@pytest.mark.parametrize("spacing", ["logsnr", "time"])
def test_matches_diffusers_dpmsolver_multistep(sch, spacing):
    diffusers = pytest.importorskip("diffusers", reason="diffusers is in requirements.txt; pip install -r requirements.txt")
    model = _TwoClassModel(sch)
    y = torch.tensor([0, 1, 0, 1])
    x_T = torch.randn(4, 1, 4, 4, generator=torch.Generator().manual_seed(4))
    w = 1.5
    for steps in (3, 10, 20):
        grid = sampling.dpm_solver_timesteps(sch, steps, spacing)
        ours = sampling.dpm_solver_sample(model, sch, None, timesteps=grid, x_T=x_T, y=y,
                                          guidance=ClassifierFreeGuidance(w), progress=False)
        dsch = diffusers.DPMSolverMultistepScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02,
                                                     beta_schedule="linear", algorithm_type="dpmsolver++",
                                                     solver_order=2, prediction_type="epsilon",
                                                     final_sigmas_type="zero")
        dsch.set_timesteps(timesteps=grid.flip(0).tolist())
        x = x_T.clone()
        for t in dsch.timesteps:
            tt = torch.full((4,), int(t))
            eps = (1 + w) * model(x, tt, y) - w * model(x, tt, torch.full_like(y, 2))
            x = dsch.step(eps, t, x).prev_sample
        assert (ours - x).abs().max() < 1e-3, (spacing, steps)


def test_matches_diffusers_default_linspace_spacing(sch):
    diffusers = pytest.importorskip("diffusers", reason="diffusers is in requirements.txt; pip install -r requirements.txt")
    model = GaussianOracle(sch, mean=0.2, std=0.6)
    x_T = torch.randn(8, 1, 4, 4, generator=torch.Generator().manual_seed(5))
    dsch = diffusers.DPMSolverMultistepScheduler(num_train_timesteps=1000, algorithm_type="dpmsolver++",
                                                 solver_order=2, final_sigmas_type="zero")
    dsch.set_timesteps(10)
    x = x_T.clone()
    for t in dsch.timesteps:
        x = dsch.step(model(x, torch.full((8,), int(t))), t, x).prev_sample
    ours = sampling.dpm_solver_sample(model, sch, None, timesteps=dsch.timesteps.tolist(), x_T=x_T, progress=False)
    assert (ours - x).abs().max() < 1e-3
