"""The optimiser side of the training loop against hand calculations: the warm-up's learning rate, the EMA
recurrence, the gradient norm that reaches ``optimizer.step`` under clipping, and the LR schedule's position after
a resume. The values are observed with a global optimizer step pre-hook, i.e. what the optimiser really used."""
import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from diffusion_lab.data import make_toy
from diffusion_lab.models import MLPDenoiser
from diffusion_lab.schedules import linear_schedule
from diffusion_lab.train import LinearWarmup, train

SCHEDULE = linear_schedule(100)


@pytest.fixture
def steps_seen():
    """Every optimiser step: the lr it used and the global gradient norm it was handed."""
    seen = []

    def hook(optimizer, args, kwargs):
        grads = [p.grad.detach().flatten() for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        seen.append({"lr": optimizer.param_groups[0]["lr"], "grad_norm": torch.cat(grads).norm().item()})

    handle = register_optimizer_step_pre_hook(hook)
    yield seen
    handle.remove()


def _run(steps, **kw):
    torch.manual_seed(0)
    args = dict(steps=steps, batch_size=32, lr=1e-2, warmup=10, ema_decay=None, device="cpu", progress=False,
                log_every=1)
    args.update(kw)
    return train(MLPDenoiser(hidden_dim=16, num_blocks=1), SCHEDULE, make_toy("two_moons", 256), **args)


def test_warmup_lr_at_its_first_and_last_step(steps_seen):
    lr, warmup = 1e-2, 10
    _run(14, lr=lr, warmup=warmup)
    used = [s["lr"] for s in steps_seen]
    assert used[0] == pytest.approx(lr / warmup, rel=1e-12), "step 1 uses lr/warmup"
    assert used[warmup - 1] == pytest.approx(lr, rel=1e-12), "step `warmup` reaches the full lr"
    for k in range(warmup):
        assert used[k] == pytest.approx(lr * (k + 1) / warmup, rel=1e-12)
    assert used[warmup:] == pytest.approx([lr] * 4, rel=1e-12)


def test_linear_warmup_multiplier_values():
    w = LinearWarmup(4)
    assert [w(s) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert LinearWarmup(0)(0) == 1.0 and LinearWarmup(1)(0) == 1.0


def test_ema_weights_follow_the_decay_recurrence_by_hand():
    """EMA_1 = θ_1 (the first update copies), EMA_k = d·EMA_{k−1} + (1−d)·θ_k, with θ_k the weights after step k."""
    decay, snapshots = 0.8, []

    def grab(info):
        snapshots.append({k: v.detach().clone() for k, v in info["model"].state_dict().items()})

    res = _run(7, ema_decay=decay, callback=grab)
    assert len(snapshots) == 7
    ema = dict(snapshots[0])
    for snap in snapshots[1:]:
        ema = {k: decay * ema[k] + (1 - decay) * snap[k] for k in ema}
    got = res.ema_model.state_dict()
    worst = max((got[k] - ema[k]).abs().max().item() for k in ema)
    assert worst < 1e-6, f"EMA differs from the hand recurrence by {worst:.2e}"
    # and it is not simply the last weights
    assert max((got[k] - snapshots[-1][k]).abs().max().item() for k in ema) > 1e-4


def test_clipped_gradient_norm_reaches_the_optimiser(steps_seen):
    clip = 0.05
    _run(20, lr=1e-3, grad_clip=clip)
    norms = [s["grad_norm"] for s in steps_seen]
    assert max(norms) <= clip * (1 + 1e-5), f"a step received gradient norm {max(norms):.4g} > clip {clip}"
    # not vacuous: without clipping the same run's gradients exceed the clip value
    steps_seen.clear()
    _run(20, lr=1e-3, grad_clip=None)
    assert max(s["grad_norm"] for s in steps_seen) > 2 * clip


def test_resume_restores_the_lr_schedule_position(tmp_path, steps_seen):
    _run(12, warmup=10, checkpoint_path=tmp_path / "a", checkpoint_every=100)
    uninterrupted = [s["lr"] for s in steps_seen]
    steps_seen.clear()
    _run(5, warmup=10, checkpoint_path=tmp_path / "b", checkpoint_every=5)
    _run(12, warmup=10, checkpoint_path=tmp_path / "b", checkpoint_every=5, resume=True)
    resumed = [s["lr"] for s in steps_seen]
    assert len(resumed) == 12
    assert resumed[5:] == pytest.approx(uninterrupted[5:], rel=1e-12), (
        f"after resuming at step 5 the lr should continue the warm-up ({uninterrupted[5]:.4g}), got {resumed[5]:.4g}")
