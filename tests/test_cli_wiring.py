"""The command line does what its flags say: each flag reaches the function it configures.

The samplers and the trainer are replaced by recorders (nothing is sampled or trained), so each test asserts the
arguments a flag produces — not the CLI's own earlier output. Two end-to-end runs check the shipped models reach a
stated minimum: classifier-free guidance on ``digits-cond`` and classifier guidance with the shipped
``digits-noisy-classifier`` on ``digits-uncond``.
"""
import re

import pytest
import torch

import diffusion_lab.__main__ as cli
from diffusion_lab import guidance as guidance_mod
from diffusion_lab import pretrained
from diffusion_lab import sampling as sampling_mod
from diffusion_lab import train as train_mod


class Called(Exception):
    """Raised by a recorder to stop the command once the arguments are known."""


def _patch(monkeypatch, module, name, fake):
    """Replace ``name`` where the CLI can find it: in its home module and, if imported there, in the CLI module."""
    monkeypatch.setattr(module, name, fake)
    if hasattr(cli, name):
        monkeypatch.setattr(cli, name, fake)


@pytest.fixture
def sampler_calls(monkeypatch):
    calls = []

    def recorder(kind):
        def fake(model, schedule, shape, **kw):
            calls.append(dict(kind=kind, model=model, schedule=schedule, shape=tuple(shape), threads=torch.get_num_threads(),
                              **kw))
            return torch.zeros(shape)
        return fake

    _patch(monkeypatch, sampling_mod, "ddpm_sample", recorder("ddpm"))
    _patch(monkeypatch, sampling_mod, "ddim_sample", recorder("ddim"))
    return calls


def _sample(tmp_path, *args):
    return cli.main(["sample", *args, "--out", str(tmp_path / "g.png"), "--no-progress", "--no-metrics"])


def test_ddim_flags_reach_ddim_sample(sampler_calls, tmp_path):
    assert _sample(tmp_path, "digits-uncond", "--sampler", "ddim", "--steps", "7", "--eta", "0.3", "--n", "5",
                   "--seed", "11", "--threads", "1") == 0
    (c,) = sampler_calls
    assert c["kind"] == "ddim" and c["steps"] == 7 and c["eta"] == pytest.approx(0.3)
    assert c["shape"] == (5, 1, 8, 8) and c["y"] is None and c["guidance"] is None and c["clip_x0"] is None
    assert c["threads"] == 1
    assert c["generator"].initial_seed() == 11


def test_ddpm_flags_reach_ddpm_sample(sampler_calls, tmp_path):
    assert _sample(tmp_path, "digits-uncond", "--sampler", "ddpm", "--variance", "beta_tilde", "--clip-x0", "--n", "3",
                   "--threads", "2") == 0
    (c,) = sampler_calls
    assert c["kind"] == "ddpm" and c["variance"] == "beta_tilde" and tuple(c["clip_x0"]) == (-1.0, 1.0)
    assert c["threads"] == 2


def test_batch_size_splits_the_samples(sampler_calls, tmp_path):
    assert _sample(tmp_path, "digits-uncond", "--sampler", "ddim", "--steps", "2", "--n", "7", "--batch-size", "3",
                   "--threads", "1") == 0
    assert [c["shape"][0] for c in sampler_calls] == [3, 3, 1]


def test_guidance_scale_and_interval_reach_cfg(sampler_calls, tmp_path):
    assert _sample(tmp_path, "digits-cond", "--sampler", "ddim", "--steps", "4", "--guidance-scale", "2.5",
                   "--guidance-interval", "0,120", "--labels", "3,7", "--n", "4", "--threads", "1") == 0
    (c,) = sampler_calls
    g = c["guidance"]
    assert isinstance(g, guidance_mod.ClassifierFreeGuidance)
    assert float(g.w) == pytest.approx(2.5) and tuple(g.interval) == (0, 120)
    assert c["y"].tolist() == [3, 7, 3, 7]


def test_classifier_flags_reach_classifier_guidance(sampler_calls, tmp_path):
    assert _sample(tmp_path, "digits-uncond", "--sampler", "ddim", "--steps", "4", "--classifier",
                   "digits-noisy-classifier", "--classifier-scale", "3.5", "--labels", "5", "--n", "2",
                   "--threads", "1") == 0
    (c,) = sampler_calls
    g = c["guidance"]
    assert isinstance(g, guidance_mod.ClassifierGuidance) and float(g.scale) == pytest.approx(3.5)
    shipped, _ = pretrained.load("digits-noisy-classifier")
    for a, b in zip(g.classifier.state_dict().values(), shipped.state_dict().values()):
        assert torch.equal(a, b), "the guidance uses the classifier named by --classifier"
    assert c["y"].tolist() == [5, 5]


@pytest.fixture
def train_calls(monkeypatch):
    calls = []

    def recorder(kind):
        def fake(model, schedule, *data, **kw):
            calls.append(dict(kind=kind, model=model, schedule=schedule, threads=torch.get_num_threads(), **kw))
            raise Called
        return fake

    _patch(monkeypatch, train_mod, "train", recorder("train"))
    _patch(monkeypatch, train_mod, "train_classifier", recorder("train_classifier"))
    return calls


def _train_settings(call):
    """The training settings a recorded call carries, whether passed as keywords or as one config object."""
    out = {k: v for k, v in call.items() if k not in ("config",)}
    cfg = call.get("config")
    if cfg is not None:
        import dataclasses
        out.update(dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else dict(cfg))
    return out


def test_train_flags_reach_the_trainer(train_calls, tmp_path):
    with pytest.raises(Called):
        cli.main(["train", "--model", "unet", "--data", "digits", "--conditional", "--label-dropout", "0.2",
                  "--base-channels", "16", "--channel-mults", "1", "--attention-resolutions", "", "--num-groups", "8",
                  "--schedule", "cosine", "--T", "50", "--steps", "33", "--batch-size", "24", "--lr", "0.003",
                  "--warmup", "7", "--grad-clip", "0", "--ema", "0.95", "--seed", "4", "--amp", "bf16",
                  "--threads", "1", "--weight-decay", "0.01", "--out", str(tmp_path / "r"), "--no-progress"])
    (c,) = train_calls
    s = _train_settings(c)
    assert c["kind"] == "train"
    assert s["steps"] == 33 and s["batch_size"] == 24 and s["lr"] == pytest.approx(0.003) and s["warmup"] == 7
    assert s["grad_clip"] is None, "--grad-clip 0 turns clipping off"
    assert s["ema_decay"] == pytest.approx(0.95) and s["seed"] == 4 and s["amp"] == "bf16"
    assert s["label_dropout"] == pytest.approx(0.2) and s["weight_decay"] == pytest.approx(0.01)
    assert c["threads"] == 1
    assert c["schedule"].T == 50 and c["schedule"].to_config()["name"] == "cosine"
    cfg = c["model"].config
    assert cfg.base_channels == 16 and tuple(cfg.channel_mults) == (1,) and cfg.num_classes == 10


def test_classifier_training_goes_to_train_classifier(train_calls, tmp_path):
    with pytest.raises(Called):
        cli.main(["train", "--model", "noisy_classifier", "--data", "digits", "--base-channels", "16",
                  "--num-groups", "8", "--steps", "5", "--out", str(tmp_path / "c"), "--threads", "1",
                  "--no-progress"])
    (c,) = train_calls
    assert c["kind"] == "train_classifier"
    # the classifier keeps its own default weight decay (0.05) unless --weight-decay is given
    assert _train_settings(c).get("weight_decay", 0.05) == pytest.approx(0.05)


def _metrics(out):
    m = re.search(r"^metrics: judge_accuracy=([0-9.]+) frechet=([0-9.]+)", out, re.M)
    assert m, out
    return float(m.group(1)), float(m.group(2))


def test_shipped_conditional_model_reaches_its_accuracy_from_the_cli(tmp_path, capsys):
    rc = cli.main(["sample", "digits-cond", "--sampler", "ddim", "--steps", "20", "--guidance-scale", "2", "--n", "100",
                   "--out", str(tmp_path / "d.png"), "--no-progress", "--threads", "1"])
    assert rc == 0
    acc, fd = _metrics(capsys.readouterr().out)
    assert acc >= 0.95, f"digits-cond with CFG w=2 (DDIM 20, 100 samples): judge accuracy {acc:.2f} < 0.95 (measured 0.98)"


def test_classifier_guidance_from_the_cli_with_the_shipped_classifier(tmp_path, capsys):
    rc = cli.main(["sample", "digits-uncond", "--sampler", "ddim", "--steps", "20", "--classifier",
                   "digits-noisy-classifier", "--classifier-scale", "4", "--n", "100", "--out", str(tmp_path / "c.png"),
                   "--no-progress", "--threads", "1"])
    assert rc == 0
    acc, fd = _metrics(capsys.readouterr().out)
    assert acc >= 0.9, f"classifier guidance (scale 4, DDIM 20, 100 samples): judge accuracy {acc:.2f} < 0.90 (measured 0.94)"
