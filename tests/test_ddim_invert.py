"""``ddim_invert``'s convention pinned: ε is evaluated at the current x and the TARGET step τ_i (diffusers'
DDIMInverseScheduler), as its docstring says — with a tolerance tight enough to tell that from the other natural
choice, ε at the current x and the step it is leaving, τ_{i−1}."""
import torch

from diffusion_lab.sampling import ddim_invert, ddim_timesteps
from diffusion_lab.schedules import linear_schedule

SCHEDULE = linear_schedule(1000)


class Curved:
    """A smooth ε-model whose value depends on t strongly enough to separate the two conventions; records calls."""

    def __init__(self):
        self.calls = []

    def __call__(self, x, t, y=None):
        self.calls.append((x.detach().clone(), t.detach().clone()))
        s = (t.to(torch.float64) / 1000.0).reshape(-1, *([1] * (x.dim() - 1)))
        return (0.3 * torch.tanh(x) + s * 0.5 * x.flip(-1) + 0.2 * s).to(x.dtype)


def by_hand(model, x0, steps, at_target: bool):
    taus = ddim_timesteps(1000, steps).tolist()
    ab = SCHEDULE.alpha_bars
    x, prev = x0.clone(), -1
    for tau in taus:
        a_cur = 1.0 if prev < 0 else ab[prev].item()
        a_next = ab[tau].item()
        t_eval = tau if at_target else max(prev, 0)
        eps = model(x, torch.full((x.shape[0],), t_eval, dtype=torch.long))
        x0_hat = (x - (1 - a_cur) ** 0.5 * eps) / a_cur ** 0.5
        x = a_next ** 0.5 * x0_hat + (1 - a_next) ** 0.5 * eps
        prev = tau
    return x


def test_ddim_invert_evaluates_eps_at_the_current_x_and_the_target_step():
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(6, 3, generator=g, dtype=torch.float64)
    rec = Curved()
    got = ddim_invert(rec, SCHEDULE, x0, steps=10)
    target = by_hand(Curved(), x0, 10, at_target=True)
    other = by_hand(Curved(), x0, 10, at_target=False)
    err = (got - target).abs().max().item()
    gap = (target - other).abs().max().item()
    assert gap > 1e-2, f"the two conventions should differ clearly here (gap {gap:.2e})"
    assert err < 1e-9 < gap / 1e6, f"|ddim_invert − target-step convention| = {err:.2e} (gap to the other: {gap:.2e})"
    # the calls: one per step, at τ_1 < … < τ_S, each on the x reached so far (the first on x0 itself)
    taus = ddim_timesteps(1000, 10).tolist()
    assert [int(t[0]) for _, t in rec.calls] == taus
    assert torch.equal(rec.calls[0][0], x0)
