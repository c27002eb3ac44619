"""Named recipes: the preset's settings reach the trainer; flags and keyword arguments override them."""
import copy
import json

import pytest
import torch

from diffusion_lab import presets
from diffusion_lab.__main__ import main
from diffusion_lab.diffusion import loss_simple
from diffusion_lab.train import (TrainConfig, WarmupDecay, EpochSampler, as_eps_model, min_snr_weights,
                                 power_ema_decay, train)

FAST = "digits-cond-fast"


def test_unknown_preset_is_a_lookup_error_naming_the_known_ones(tmp_path, capsys):
    with pytest.raises(LookupError, match="digits-cond-fast") as err:
        presets.get_preset("digits-fastest")
    assert isinstance(err.value, presets.UnknownPresetError) and "digits-fastest" in str(err.value)
    with pytest.raises(LookupError, match="known presets"):
        TrainConfig.resolve(preset="nope")
    with pytest.raises(SystemExit) as ex:
        main(["train", "--preset", "nope", "--out", str(tmp_path / "x")])
    assert ex.value.code == 2 and "digits-cond-fast" in capsys.readouterr().err


def test_build_gives_the_presets_model_and_schedule():
    p = presets.get_preset(FAST)
    fresh = presets.build(FAST)
    model, schedule = fresh.network, fresh.schedule
    assert fresh.meta["data"] == "digits" and schedule.T == p.schedule["T"] and fresh.source == "preset"
    assert model.config.num_classes == 10 and model.config.dropout == p.model["dropout"]
    assert fresh.num_classes == 10 and fresh.item_shape == (1, 8, 8) and fresh.prediction == p.train["prediction"]
    assert fresh.model is not model and fresh.network is model, "a v-network samples through its ε-wrapper"
    assert all(q.requires_grad for q in model.parameters()), "a fresh preset network is trainable"
    assert presets.build(FAST, base_channels=64).network.config.base_channels == 64
    x, y = presets.training_data(FAST)
    assert x.shape[1:] == (1, 8, 8) and y.shape == (x.shape[0],)
    TrainConfig(**p.train)  # every preset's training options are valid TrainConfig fields


def test_preset_settings_reach_the_trainer():
    """Three steps of the preset: the optimiser's lr follows its warm-up, the EMA its power profile, and the
    config its values; a keyword argument overrides one value and leaves the others."""
    p = presets.get_preset(FAST)
    torch.manual_seed(0)
    fresh = presets.build(FAST)
    model, schedule = fresh.network, fresh.schedule
    x, y = presets.training_data(FAST)
    seen = []

    def record(info):
        seen.append((info["lr"], {n: v.detach().clone() for n, v in info["model"].named_parameters()}))

    init = copy.deepcopy(model)
    r = train(model, schedule, (x[:64], y[:64]), preset=FAST, steps=3, batch_size=16, device="cpu", progress=False,
              log_every=1, callback=record)
    # the first loss is the preset's weighting (min-SNR-γ) of the same draws, label dropout included
    g = torch.Generator().manual_seed(p.train.get("seed", 0))
    idx = EpochSampler(64, p.train.get("seed", 0)).batch(0, 16)
    t = torch.randint(0, schedule.T, (16,), generator=g)
    noise = torch.randn(16, 1, 8, 8, generator=g)
    drop = torch.rand(16, generator=g) < p.train["label_dropout"]
    labels = torch.where(drop, torch.full_like(y[idx], 10), y[idx])
    # the network's target (ε, x₀ or v) is the preset's, checked through the ε-route of eq. (5.7): the ε-error of the
    # wrapped network under ε's min-SNR weights equals the target's error under the target's weights
    pred = p.train.get("prediction", "eps")
    per = loss_simple(as_eps_model(init, schedule, pred), schedule, x[idx], t, y=labels, noise=noise,
                      reduction="none")
    assert p.train["loss_weighting"] == "min_snr" and r.config["prediction"] == pred
    w = min_snr_weights(schedule, t, p.train["min_snr_gamma"]).float()
    assert r.losses[0] == pytest.approx((w * per).mean().item(), rel=1e-4)
    want = {**p.train, "steps": 3, "batch_size": 16, "log_every": 1}
    assert all(r.config[k] == v for k, v in want.items()), (r.config, want)
    ref = WarmupDecay(p.train["warmup"], 3, p.train["lr_schedule"], p.train["min_lr_ratio"])
    assert [lr for lr, _ in seen] == pytest.approx([p.train["lr"] * ref(s) for s in (1, 2, 3)])
    gamma = p.train["ema_power"]
    name = "output.weight" if "output.weight" in seen[0][1] else next(iter(seen[0][1]))
    ema = seen[0][1][name]
    for t in (2, 3):
        b = power_ema_decay(t, gamma)
        ema = b * ema + (1 - b) * seen[t - 1][1][name]
    torch.testing.assert_close(dict(r.ema_model.named_parameters())[name], ema)
    r2 = train(presets.build(FAST).network, schedule, (x[:32], y[:32]), preset=FAST, steps=1, batch_size=16, lr=1e-4,
               device="cpu", progress=False)
    assert r2.config["lr"] == 1e-4 and r2.config["ema_power"] == gamma


def test_cli_flags_override_the_preset(tmp_path):
    p = presets.get_preset(FAST)
    out = tmp_path / "fast"
    assert main(["train", "--preset", FAST, "--steps", "2", "--batch-size", "16", "--lr", "1e-4", "--dropout", "0.2",
                 "--ema", "0.99", "--threads", "1", "--device", "cpu", "--no-progress", "--out", str(out)]) == 0
    doc = json.loads(out.with_suffix(".json").read_text())
    tc, mc = doc["train_config"], doc["model"]["config"]
    assert (tc["steps"], tc["batch_size"], tc["lr"], tc["ema_decay"], tc["ema_power"]) == (2, 16, 1e-4, 0.99, None)
    assert tc["lr_schedule"] == p.train["lr_schedule"] and tc["warmup"] == p.train["warmup"]   # kept from the preset
    assert tc["label_dropout"] == p.train["label_dropout"] and mc["num_classes"] == 10 and mc["dropout"] == 0.2
    assert doc["extra"]["preset"] == FAST
    assert tc["prediction"] == doc["prediction"] == p.train["prediction"]   # the checkpoint loads as an ε-model
