"""The command line does what its flags say: each flag reaches the function it configures.

The samplers and the trainer are replaced by recorders (nothing is sampled or trained), so each test asserts the
arguments a flag produces — not the CLI's own earlier output. Two end-to-end runs check the shipped models reach a
stated minimum: classifier-free guidance on ``digits-cond`` and classifier guidance with the shipped
``digits-noisy-classifier`` on ``digits-uncond``.
"""
import dataclasses
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


def test_guidance_weight_and_interval_reach_cfg(sampler_calls, tmp_path):
    assert _sample(tmp_path, "digits-cond", "--sampler", "ddim", "--steps", "4", "--guidance-weight", "2.5",
                   "--guidance-interval", "0,120", "--labels", "3,7", "--n", "4", "--threads", "1") == 0
    (c,) = sampler_calls
    g = c["guidance"]
    assert isinstance(g, guidance_mod.ClassifierFreeGuidance)
    assert float(g.w) == pytest.approx(2.5) and tuple(g.interval) == (0, 120)
    assert c["y"].tolist() == [3, 7, 3, 7]


def test_guidance_scale_is_diffusers_s_one_plus_w(sampler_calls, tmp_path):
    assert _sample(tmp_path, "digits-cond", "--sampler", "ddim", "--steps", "4", "--guidance-scale", "3.5",
                   "--n", "2", "--threads", "1") == 0
    (c,) = sampler_calls
    assert float(c["guidance"].w) == pytest.approx(2.5), "--guidance-scale s is w = s - 1"


def test_sample_preset_supplies_the_presets_sampling_and_flags_override_it(sampler_calls, tmp_path):
    from diffusion_lab import presets

    want = presets.get_preset("digits-cond").sampling
    assert _sample(tmp_path, "digits-cond", "--preset", "digits-cond", "--n", "2", "--threads", "1") == 0
    assert _sample(tmp_path, "digits-cond", "--preset", "digits-cond", "--steps", "3", "--guidance-scale", "1.5",
                   "--n", "2", "--threads", "1") == 0
    a, b = sampler_calls
    assert a["kind"] == want["sampler"] and a["steps"] == want["steps"]
    assert float(a["guidance"].w) == want["guidance_weight"] and tuple(a["guidance"].interval) == want["guidance_interval"]
    assert b["steps"] == 3 and float(b["guidance"].w) == pytest.approx(0.5) and b["guidance"].interval is None


def test_guidance_scale_3_and_guidance_weight_2_give_identical_samples(tmp_path):
    """The two spellings of one guidance: diffusers' s = 3 is the seed's w = 2, down to the last bit."""
    from safetensors.torch import load_file

    outs = []
    for flag, value in (("--guidance-scale", "3"), ("--guidance-weight", "2")):
        path = tmp_path / f"{flag[2:]}.safetensors"
        assert cli.main(["sample", "digits-cond", "--sampler", "ddim", "--steps", "5", "--n", "6", "--seed", "3",
                         flag, value, "--out", str(tmp_path / "g.png"), "--save-tensors", str(path),
                         "--no-progress", "--no-metrics", "--threads", "1"]) == 0
        outs.append(load_file(str(path))["samples"])
    assert torch.equal(outs[0], outs[1])
    w2 = cli.main(["sample", "digits-cond", "--sampler", "ddim", "--steps", "5", "--n", "6", "--seed", "3",
                   "--guidance-scale", "2", "--out", str(tmp_path / "g.png"), "--save-tensors",
                   str(tmp_path / "s2.safetensors"), "--no-progress", "--no-metrics", "--threads", "1"])
    assert w2 == 0 and not torch.equal(load_file(str(tmp_path / "s2.safetensors"))["samples"], outs[0])


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
    rc = cli.main(["sample", "digits-cond", "--sampler", "ddim", "--steps", "20", "--guidance-weight", "2", "--n", "100",
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


# ----------------------------------------------------------------------------- one source of training defaults
def _cli_config(*flags):
    args = cli.build_parser().parse_args(["train", *flags, "--out", "unused"])
    cli._resolve_train_args(args)
    return cli.train_config(args)


@pytest.mark.parametrize("flags, api", [
    ((), lambda: train_mod.TrainConfig()),
    (("--conditional",), lambda: train_mod.TrainConfig(label_dropout=0.15)),
    (("--model", "noisy_classifier"), lambda: train_mod.TrainConfig.for_task("classifier")),
    (("--model", "noisy_classifier", "--lr", "0.001", "--ema", "0.999"),
     lambda: train_mod.TrainConfig.for_task("classifier", lr=1e-3, ema_decay=0.999)),
    (("--steps", "7", "--ema-power", "6.94"), lambda: train_mod.TrainConfig.resolve(steps=7, ema_power=6.94)),
    (("--preset", "digits-cond-fast", "--steps", "9"), lambda: train_mod.TrainConfig.resolve(preset="digits-cond-fast",
                                                                                             steps=9)),
])
def test_cli_and_api_build_the_same_config(flags, api):
    """The CLI has no defaults of its own: for the same request it builds the config the API builds."""
    assert _cli_config(*flags) == api()


def test_the_classifier_config_is_the_same_through_the_cli_and_train_classifier(train_calls, tmp_path, monkeypatch):
    """The noisy classifier trains with the same settings whether started from the CLI or from the API."""
    from diffusion_lab.data import load_digits
    from diffusion_lab.models import NoisyClassifier
    from diffusion_lab.schedules import linear_schedule

    monkeypatch.undo()                                   # the real train_classifier, on a tiny run
    x, y = load_digits("train")
    clf = NoisyClassifier(base_channels=8, channel_mults=(1,), num_res_blocks=1, num_groups=8,
                          attention_resolutions=(), num_classes=10)
    r = train_mod.train_classifier(clf, linear_schedule(20), x[:16], y[:16], steps=1, batch_size=8, device="cpu",
                                   progress=False)
    cli_cfg = _cli_config("--model", "noisy_classifier", "--steps", "1", "--batch-size", "8")
    assert r.config == dataclasses.asdict(cli_cfg)
    assert cli_cfg.ema_decay is None and cli_cfg.lr == pytest.approx(3e-4) and cli_cfg.warmup == 50
