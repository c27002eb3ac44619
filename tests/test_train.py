"""The training loop: the loss really falls, resume is exact, NaNs are caught, DDP equals one process."""
import math
import os
import socket
import statistics

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from diffusion_lab.checkpoint import load_checkpoint
from diffusion_lab.data import load_digits, make_toy
from diffusion_lab.diffusion import loss_simple
from diffusion_lab.models import MLPDenoiser, NoisyClassifier, UNet
from diffusion_lab.schedules import linear_schedule
from diffusion_lab.train import NonFiniteLossError, default_device, train, train_classifier




def moons_with_labels(n=512):
    x = make_toy("two_moons", n, seed=0)
    return x, (x[:, 0] > 0).long()


def test_default_device_is_a_device():
    assert default_device().type in ("cpu", "cuda", "mps")


def test_mlp_loss_falls_on_two_moons():
    torch.manual_seed(0)
    r = train(MLPDenoiser(hidden_dim=64, num_blocks=2), linear_schedule(1000), make_toy("two_moons", 2000), steps=300,
              batch_size=256, lr=3e-3, warmup=10, ema_decay=0.99, device="cpu", progress=False, log_every=100)
    assert len(r.losses) == 300 and r.steps == 300
    first, last = statistics.mean(r.losses[:10]), statistics.mean(r.losses[-50:])
    assert first > 0.6 and last < 0.45 and last < 0.6 * first, (first, last)
    assert r.ema_model is not None and not r.ema_model.training


def test_resume_is_exact(tmp_path):
    def run(steps, path, resume=False):
        torch.manual_seed(123)
        model = MLPDenoiser(hidden_dim=32, num_blocks=2, num_classes=2, dropout=0.1)
        return train(model, linear_schedule(100), moons_with_labels(), steps=steps, batch_size=96, lr=1e-2, warmup=3,
                     ema_decay=0.9, label_dropout=0.3, seed=7, device="cpu", progress=False, log_every=5,
                     checkpoint_path=path, checkpoint_every=6, resume=resume)

    full = run(20, tmp_path / "full")
    half = run(12, tmp_path / "split")
    resumed = run(20, tmp_path / "split", resume=True)
    assert len(full.losses) == 20 and resumed.losses[:12] == half.losses
    assert resumed.losses == full.losses  # bit-for-bit, the whole history
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(full.ema_model.state_dict().values(), resumed.ema_model.state_dict().values()):
        assert torch.equal(a, b)


class _NaNAtThirdCall(MLPDenoiser):
    calls = 0

    def forward(self, x_t, t, y=None):
        self.calls += 1
        out = super().forward(x_t, t, y)
        return out * float("nan") if self.calls == 3 else out


def test_non_finite_loss_names_the_step():
    with pytest.raises(NonFiniteLossError, match="at step 3"):
        train(_NaNAtThirdCall(), linear_schedule(100), make_toy("two_moons", 200), steps=10, batch_size=32,
              device="cpu", progress=False)


def test_bad_arguments():
    x, y = moons_with_labels(64)
    with pytest.raises(ValueError, match="class-conditional"):
        train(MLPDenoiser(num_classes=2), linear_schedule(10), x, steps=1, batch_size=8, device="cpu", progress=False)
    with pytest.raises(ValueError, match="label_dropout"):
        train(MLPDenoiser(), linear_schedule(10), (x, y), steps=1, batch_size=8, label_dropout=0.1, device="cpu",
              progress=False)
    with pytest.raises(ValueError, match="steps"):
        train(MLPDenoiser(), linear_schedule(10), x, steps=0, device="cpu", progress=False)
    with pytest.raises(TypeError, match="data"):
        train(MLPDenoiser(), linear_schedule(10), [x, y, y], steps=1, device="cpu", progress=False)


def test_conditional_unet_checkpoint_and_callback(tmp_path):
    x, y = load_digits("train")
    seen = []
    model = UNet(base_channels=32, channel_mults=(1, 2), num_res_blocks=1, num_classes=10)
    r = train(model, linear_schedule(1000), (x, y), steps=4, batch_size=32, lr=1e-3, warmup=2, label_dropout=0.1,
              device="cpu", progress=True, log_every=2, checkpoint_path=tmp_path / "digits", checkpoint_every=2,
              callback=lambda info: seen.append((info["step"], round(info["loss"], 6))))
    assert [s for s, _ in seen] == [2, 4] and all(torch.isfinite(torch.tensor(r.losses)))
    ck = load_checkpoint(r.checkpoint)
    loaded, schedule, meta = ck.model, ck.schedule, ck.meta
    assert meta["step"] == 4 and meta["weights"] == "ema" and schedule.T == 1000
    xt, t, lab = x[:3], torch.tensor([1, 10, 100]), torch.tensor([0, 5, 10])
    assert torch.equal(loaded(xt, t, lab), r.ema_model(xt, t, lab))


def test_train_classifier_on_noisy_digits():
    x, y = load_digits("train")
    clf = NoisyClassifier(base_channels=32, channel_mults=(1, 2), num_res_blocks=1, num_classes=10)
    r = train_classifier(clf, linear_schedule(1000), x, y, steps=6, batch_size=64, device="cpu", progress=False)
    assert len(r.losses) == 6 and all(0 < v < 10 for v in r.losses)
    assert abs(r.losses[0] - 2.3026) < 0.6  # ≈ ln 10 at initialisation
    with pytest.raises(ValueError, match=r"\[0, 9\]"):
        train_classifier(clf, linear_schedule(10), x[:4], torch.tensor([0, 1, 2, 10]), steps=1, batch_size=4,
                         device="cpu", progress=False)


# ----------------------------------------------------------------------------- data-parallel (gloo, 2 processes)
def _ddp_fixture():
    torch.manual_seed(0)
    model = MLPDenoiser(hidden_dim=32, num_blocks=2)
    with torch.no_grad():
        model.output.weight.normal_(0, 0.1)   # non-zero output so every layer gets a gradient
    g = torch.Generator().manual_seed(1)
    x = make_toy("two_moons", 64, seed=3)
    t = torch.randint(0, 100, (64,), generator=g)
    noise = torch.randn(64, 2, generator=g)
    return model, x, t, noise


def _ddp_worker(rank, world, port, out):
    from safetensors.torch import save_file

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model, x, t, noise = _ddp_fixture()
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        sl = slice(rank * 32, (rank + 1) * 32)
        loss_simple(ddp, linear_schedule(100), x[sl], t[sl], noise=noise[sl]).backward()
        torch.manual_seed(0)
        r = train(MLPDenoiser(hidden_dim=32, num_blocks=2), linear_schedule(100), make_toy("two_moons", 256), steps=5,
                  batch_size=64, lr=1e-2, warmup=1, device="cpu", progress=False)
        if rank == 0:
            tensors = {f"grad.{n}": p.grad for n, p in model.named_parameters()}
            tensors.update({f"param.{n}": p.detach() for n, p in r.model.named_parameters()})
            tensors["losses"] = torch.tensor(r.losses, dtype=torch.float64)
            save_file(tensors, out)
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")
def test_ddp_two_processes_match_one_process(tmp_path):
    from safetensors.torch import load_file

    out = str(tmp_path / "rank0.safetensors")
    mp.spawn(_ddp_worker, args=(2, _free_port(), out), nprocs=2, join=True)
    got = load_file(out)
    # one process, the union batch
    model, x, t, noise = _ddp_fixture()
    loss_simple(model, linear_schedule(100), x, t, noise=noise).backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(got[f"grad.{n}"], p.grad, atol=1e-6, rtol=0, msg=lambda m: f"{n}: {m}")
    torch.manual_seed(0)
    r = train(MLPDenoiser(hidden_dim=32, num_blocks=2), linear_schedule(100), make_toy("two_moons", 256), steps=5,
              batch_size=64, lr=1e-2, warmup=1, device="cpu", progress=False)
    torch.testing.assert_close(got["losses"], torch.tensor(r.losses, dtype=torch.float64), atol=1e-5, rtol=0)
    for n, p in r.model.named_parameters():
        torch.testing.assert_close(got[f"param.{n}"], p.detach(), atol=1e-4, rtol=0)


# ----------------------------------------------------------------------------- one config; the time-to-quality levers
from diffusion_lab.train import (PowerEMA, TrainConfig, WarmupDecay, min_snr_weights,  # noqa: E402
                                 power_ema_decay)


def test_config_resolution_and_errors():
    cfg = TrainConfig.resolve(TrainConfig(lr=1e-3, ema_decay=None, ema_power=3.0), ema_decay=0.99)
    assert (cfg.lr, cfg.ema_decay, cfg.ema_power) == (1e-3, 0.99, None)  # an explicit constant EMA wins
    assert TrainConfig.resolve(ema_power=7.0).ema_decay is None
    with pytest.raises(TypeError, match="unknown training option.*lrr.*batch_size"):
        TrainConfig.resolve(lrr=1.0)
    with pytest.raises(ValueError, match="not both"):
        TrainConfig(ema_decay=0.9, ema_power=1.0)
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainConfig(lr_schedule="exp")
    with pytest.raises(ValueError, match="loss_weighting"):
        TrainConfig(loss_weighting="snr")
    with pytest.raises(TypeError, match="unknown training option"):
        train(MLPDenoiser(), linear_schedule(10), make_toy("two_moons", 64), steps=1, device="cpu", progress=False,
              ema_deacy=0.9)


def test_lr_schedule_values_at_known_steps():
    cos, lin = WarmupDecay(10, 110, "cosine"), WarmupDecay(10, 110, "linear")
    floor = WarmupDecay(10, 110, "cosine", min_ratio=0.1)
    assert cos(0) == pytest.approx(0.1) and cos(9) == pytest.approx(1.0) and cos(10) == pytest.approx(1.0)
    assert cos(60) == pytest.approx(0.5) and lin(60) == pytest.approx(0.5) and floor(60) == pytest.approx(0.55)
    assert cos(35) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4))) and lin(85) == pytest.approx(0.25)
    # the optimiser really runs it: lr of each step, read back through the callback
    seen = []
    train(MLPDenoiser(hidden_dim=16, num_blocks=1), linear_schedule(10), make_toy("two_moons", 64), steps=6,
          batch_size=16, lr=0.1, warmup=2, lr_schedule="linear", min_lr_ratio=0.2, device="cpu", progress=False,
          log_every=1, callback=lambda info: seen.append(info["lr"]))
    ref = WarmupDecay(2, 6, "linear", 0.2)
    assert seen == pytest.approx([0.1 * ref(s) for s in range(1, 7)])  # after step s the next lr is lr·m(s)


def test_power_ema_beta_matches_formula_and_gamma0_is_the_running_mean():
    assert power_ema_decay(1, 6.94) == 0.0
    assert power_ema_decay(2, 6.94) == pytest.approx(0.5 ** 7.94)
    assert power_ema_decay(1000, 16.97) == pytest.approx((1 - 1e-3) ** 17.97)
    thetas = [torch.randn(5, generator=torch.Generator().manual_seed(i)) for i in range(6)]
    for gamma in (0.0, 2.5):
        ema, ref = [thetas[0].clone()], thetas[0].clone()
        for t in range(2, 7):
            PowerEMA(gamma)(ema, [thetas[t - 1]], torch.tensor(t - 1))
            b = (1 - 1 / t) ** (gamma + 1)
            ref = b * ref + (1 - b) * thetas[t - 1]
        torch.testing.assert_close(ema[0], ref)
        if gamma == 0.0:
            torch.testing.assert_close(ema[0], torch.stack(thetas).mean(0))


def test_min_snr_weights_match_formula():
    s = linear_schedule(1000)
    t = torch.tensor([0, 100, 500, 999])
    ab = s.alpha_bars[t]
    snr = ab / (1 - ab)
    want = torch.minimum(snr, torch.full_like(snr, 5.0)) / snr
    torch.testing.assert_close(min_snr_weights(s, t, 5.0), want)
    assert min_snr_weights(s, t, 5.0)[-1] == 1.0 and min_snr_weights(s, t, 5.0)[0] == pytest.approx(5 / snr[0].item())


def test_min_snr_weighting_reaches_the_loss():
    """The first step's loss under min-SNR equals the weighted per-example L_simple of the same draws."""
    import copy

    from diffusion_lab.train import EpochSampler

    x = make_toy("two_moons", 64, seed=1)
    torch.manual_seed(0)
    model = MLPDenoiser(hidden_dim=16, num_blocks=1, dropout=0.0)
    init = copy.deepcopy(model)
    s = linear_schedule(100)
    r = train(model, s, x, steps=1, batch_size=32, loss_weighting="min_snr", min_snr_gamma=2.0, seed=3,
              device="cpu", progress=False)
    g = torch.Generator().manual_seed(3)
    idx = EpochSampler(64, 3).batch(0, 32)
    t = torch.randint(0, 100, (32,), generator=g)
    noise = torch.randn(32, 2, generator=g)
    per = loss_simple(init, s, x[idx], t, noise=noise, reduction="none")
    want = (min_snr_weights(s, t, 2.0).float() * per).mean().item()
    assert r.losses[0] == pytest.approx(want, rel=1e-5) and r.losses[0] != pytest.approx(per.mean().item(), rel=1e-3)


def test_classifier_defaults_come_from_one_place():
    from diffusion_lab.train import TASK_DEFAULTS

    CLASSIFIER_DEFAULTS = TASK_DEFAULTS["classifier"]

    x, y = load_digits("train")
    clf = NoisyClassifier(base_channels=32, channel_mults=(1, 2), num_res_blocks=1, num_classes=10)
    r = train_classifier(clf, linear_schedule(100), x[:32], y[:32], steps=1, batch_size=16, device="cpu",
                         progress=False)
    assert all(r.config[k] == v for k, v in CLASSIFIER_DEFAULTS.items()) and r.ema_model is None


def test_ema_decay_none_still_means_no_ema_even_over_a_power_preset():
    cfg = TrainConfig.resolve(TrainConfig(ema_decay=None, ema_power=6.94), ema_decay=None)
    assert cfg.ema_decay is None and cfg.ema_power is None
