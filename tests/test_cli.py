"""The command line (``python -m diffusion_lab train|sample``): help, a tiny real run, and clear errors."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from diffusion_lab.__main__ import main
from diffusion_lab.train import ema_smoothed

ROOT = Path(__file__).resolve().parent.parent
SUMMARY = re.compile(r"^summary: steps=(\d+) final_loss=([0-9.]+) wall_s=([0-9.]+) img_per_s=([0-9.]+) "
                     r"device=(\S+) out=(\S+)$", re.M)


def run_cli(*args, timeout=120):
    """The CLI in a fresh interpreter, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "diffusion_lab", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env=_env())


def _env():
    import os
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return env


@pytest.mark.parametrize("cmd, flags", [
    ("train", ["--model", "--base-channels", "--channel-mults", "--num-res-blocks", "--attention-resolutions",
               "--dropout", "--data", "--conditional", "--label-dropout", "--schedule", "--T", "--steps",
               "--batch-size", "--lr", "--warmup", "--ema", "--seed", "--device", "--amp", "--compile", "--out",
               "--resume", "mnist", "fashion_mnist", "noisy_classifier"]),
    ("sample", ["--sampler", "--steps", "--eta", "--variance", "--guidance-weight", "--guidance-scale",
                "--guidance-interval", "--labels",
                "--classifier",
                "--classifier-scale", "--n", "--seed", "--out", "ddim", "beta_tilde"]),
])
def test_help_names_every_flag(cmd, flags, capsys):
    with pytest.raises(SystemExit) as exc:
        main([cmd, "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for f in flags:
        assert f in text, f"{cmd} --help does not mention {f}"


def test_top_level_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "train" in out and "sample" in out


@pytest.fixture(scope="module")
def moons_checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "moons"
    r = run_cli("train", "--model", "mlp", "--data", "two_moons", "--toy-points", "512", "--steps", "30",
                "--batch-size", "64", "--warmup", "5", "--threads", "1", "--out", out)
    assert r.returncode == 0, r.stderr
    return out, r


def test_train_writes_checkpoint_and_summary(moons_checkpoint):
    out, r = moons_checkpoint
    m = SUMMARY.search(r.stdout)
    assert m, f"no parsable summary line in {r.stdout!r}"
    steps, loss, wall, rate, device, path = m.groups()
    assert int(steps) == 30 and 0 < float(loss) < 5 and float(wall) > 0 and float(rate) > 0 and device == "cpu"
    assert Path(path) == out.with_name("moons.json") and Path(path).exists()
    assert out.with_name("moons.safetensors").exists() and out.with_name("moons.state.safetensors").exists()
    doc = json.loads(Path(path).read_text())
    assert doc["step"] == 30 and doc["model"]["kind"] == "mlp" and doc["extra"]["data"] == "two_moons"
    assert doc["extra"]["cli_runs"][0]["command"].startswith("python -m diffusion_lab train --model mlp")


def test_resume_continues_to_more_steps(moons_checkpoint, tmp_path):
    import shutil

    out, _ = moons_checkpoint
    for suffix in (".json", ".safetensors", ".state.safetensors"):
        shutil.copy(out.with_name("moons" + suffix), tmp_path / ("m" + suffix))
    r = run_cli("train", "--model", "mlp", "--data", "two_moons", "--toy-points", "512", "--steps", "40",
                "--batch-size", "64", "--warmup", "5", "--threads", "1", "--no-progress", "--resume",
                "--out", tmp_path / "m")
    assert r.returncode == 0, r.stderr
    assert SUMMARY.search(r.stdout).group(1) == "40"
    doc = json.loads((tmp_path / "m.json").read_text())
    assert doc["step"] == 40 and len(doc["extra"]["cli_runs"]) == 2


def test_sample_writes_output(moons_checkpoint, tmp_path):
    out, _ = moons_checkpoint
    png = tmp_path / "moons.png"
    r = run_cli("sample", out, "--sampler", "ddim", "--steps", "10", "--n", "64", "--out", png, "--no-progress",
                "--save-tensors", tmp_path / "s.safetensors")
    assert r.returncode == 0, r.stderr
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert re.search(r"^summary: n=64 sampler=ddim steps=10 .* out=\S+moons.png$", r.stdout, re.M)
    from safetensors.torch import load_file
    assert load_file(str(tmp_path / "s.safetensors"))["samples"].shape == (64, 2)


@pytest.mark.parametrize("args, message", [
    (["train", "--model", "transformer", "--out", "x"], "invalid choice: 'transformer'"),
    (["train", "--data", "imagenet", "--out", "x"], "invalid choice: 'imagenet'"),
    (["train", "--steps", "-5", "--out", "x"], "--steps: must be a positive integer"),
    (["train", "--steps", "0", "--out", "x"], "--steps: must be a positive integer"),
    (["train", "--label-dropout", "1.5", "--out", "x"], "--label-dropout: must be a number in [0, 1]"),
    (["train", "--model", "mlp", "--data", "two_moons"], "--out"),
    (["sample", "x", "--sampler", "euler"], "invalid choice: 'euler'"),
    (["sample", "x", "--n", "-1"], "--n: must be a positive integer"),
])
def test_bad_arguments_exit_nonzero_with_message(args, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["train", "--model", "mlp", "--data", "digits"], "--model mlp takes flat 2-D data"),
    (["train", "--model", "unet", "--data", "two_moons"], "use --model mlp"),
    (["train", "--model", "mlp", "--data", "two_moons", "--label-dropout", "0.1"], "--label-dropout needs --conditional"),
    (["train", "--model", "mlp", "--data", "two_moons", "--conditional"], "--conditional needs labels"),
    (["train", "--model", "noisy_classifier", "--data", "swiss_roll"], "needs labelled images"),
])
def test_inconsistent_train_arguments(args, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args + ["--out", str(tmp_path / "x"), "--steps", "1", "--threads", "1"])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_guidance_needs_a_conditional_model(moons_checkpoint, tmp_path, capsys):
    out, _ = moons_checkpoint
    with pytest.raises(SystemExit) as exc:
        main(["sample", str(out), "--guidance-weight", "2", "--out", str(tmp_path / "g.png"), "--threads", "1"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--guidance-weight" in err and "unconditional" in err and "--conditional" in err


def test_unknown_checkpoint_names_the_shipped_models(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["sample", str(tmp_path / "nothing"), "--threads", "1"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "neither a checkpoint" in err and "digits-cond" in err


def test_resume_without_checkpoint_is_an_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--model", "mlp", "--data", "two_moons", "--resume", "--out", str(tmp_path / "none"),
              "--threads", "1"])
    assert exc.value.code == 2 and "--resume: no checkpoint" in capsys.readouterr().err


def test_sample_shipped_model_by_name_prints_metrics(tmp_path, capsys):
    rc = main(["sample", "digits-cond", "--sampler", "ddim", "--steps", "10", "--guidance-weight", "2", "--n", "20",
               "--labels", "3,7", "--out", str(tmp_path / "d.png"), "--no-progress", "--threads", "1"])
    assert rc == 0
    out = capsys.readouterr().out
    assert re.search(r"^metrics: judge_accuracy=[0-9.]+ frechet=[0-9.]+ real_train_vs_test=2\.838", out, re.M)
    assert (tmp_path / "d.png").exists()


def test_sample_with_a_guidance_interval(tmp_path, capsys):
    rc = main(["sample", "digits-cond", "--sampler", "ddim", "--steps", "10", "--guidance-weight", "2",
               "--guidance-interval", "0,300", "--n", "10", "--out", str(tmp_path / "i.png"), "--no-progress",
               "--threads", "1", "--no-metrics"])
    assert rc == 0 and "interval=(0, 300)" in capsys.readouterr().out


@pytest.mark.parametrize("args, msg", [
    (["--guidance-weight", "2", "--guidance-interval", "300,0"], "0 <= LO <= HI"),
    (["--guidance-scale", "3", "--guidance-interval", "5"], "'LO,HI'"),
    (["--guidance-interval", "0,100"], "give --guidance-weight W (or --guidance-scale S) too"),
    (["--guidance-weight", "2", "--guidance-scale", "3"], "not allowed with argument"),
])
def test_guidance_interval_bad_input(args, msg, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["sample", "digits-cond", *args, "--out", str(tmp_path / "x.png"), "--threads", "1"])
    assert exc.value.code == 2 and msg in capsys.readouterr().err


def test_ema_smoothed_loss():
    assert ema_smoothed([2.0] * 10) == pytest.approx(2.0)
    assert ema_smoothed([]) != ema_smoothed([])  # nan
    assert 1.0 < ema_smoothed([2.0] * 100 + [1.0] * 10) < 2.0


@pytest.mark.parametrize("eta", ["-0.1", "1.5", "nan", "x"])
def test_eta_is_checked(eta, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["sample", "digits-cond", "--sampler", "ddim", "--eta", eta])
    assert exc.value.code == 2 and "--eta" in capsys.readouterr().err


def test_console_script_entry_point_is_main():
    tomllib = pytest.importorskip("tomllib")

    doc = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert doc["project"]["scripts"]["diffusion-lab"] == "diffusion_lab.__main__:main"
