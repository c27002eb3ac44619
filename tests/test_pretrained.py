"""The shipped weights (``diffusion_lab.pretrained``): they load, they are verified, they are small, they are real."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from diffusion_lab import metrics, pretrained
from diffusion_lab.checkpoint import file_sha256
from diffusion_lab.data import load_digits
from diffusion_lab.diffusion import q_sample
from diffusion_lab.guidance import ClassifierFreeGuidance
from diffusion_lab.models import NoisyClassifier, UNet
from diffusion_lab.sampling import ddim_sample
from diffusion_lab.schedules import linear_schedule

NAMES = ["digits-cond", "digits-judge", "digits-noisy-classifier", "digits-uncond"]


def test_list_pretrained():
    assert pretrained.list_pretrained() == NAMES


@pytest.mark.parametrize("name, cls, num_classes", [("digits-uncond", UNet, None), ("digits-cond", UNet, 10),
                                                    ("digits-noisy-classifier", NoisyClassifier, 10)])
def test_loads_in_eval_mode_with_its_schedule(name, cls, num_classes):
    model, schedule = pretrained.load(name)
    assert type(model) is cls and model.config.num_classes == num_classes
    assert not model.training and not any(m.training for m in model.modules())
    assert not any(p.requires_grad for p in model.parameters())
    ref = linear_schedule(1000)
    assert schedule.T == 1000 and torch.equal(schedule.betas, ref.betas)
    x = torch.randn(4, 1, 8, 8)
    t = torch.tensor([0, 10, 500, 999])
    with torch.no_grad():
        if cls is NoisyClassifier:
            assert model(x, t).shape == (4, 10)
        else:
            y = torch.tensor([0, 3, 9, 10]) if num_classes else None
            out = model(x, t, y=y) if num_classes else model(x, t)
            assert out.shape == x.shape and torch.isfinite(out).all()


def test_judge_is_shipped_and_used_by_metrics():
    judge, schedule = pretrained.load("digits-judge")
    assert schedule is None and isinstance(judge, metrics.DigitsJudge) and not judge.training
    shipped = pretrained.pretrained_dir() / metrics.JUDGE_WEIGHTS_NAME
    assert shipped.exists()
    assert file_sha256(shipped) == pretrained.manifest()["models"]["digits-judge"]["sha256"]
    assert judge.accuracy(*load_digits("test")) >= 0.97
    # get_judge() reads the very same weights (no retraining)
    got = metrics.get_judge()
    sd = judge.state_dict()
    assert all(torch.equal(v, sd[k]) for k, v in got.state_dict().items())


def test_unknown_name_lists_the_known_names():
    with pytest.raises(pretrained.PretrainedError, match="unknown pretrained model 'digits-xl'") as exc:
        pretrained.load("digits-xl")
    for n in NAMES:
        assert n in str(exc.value)


def _copy_to(tmp_path, monkeypatch):
    folder = tmp_path / "pretrained"
    shutil.copytree(pretrained.pretrained_dir(), folder, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    monkeypatch.setattr(pretrained, "pretrained_dir", lambda: folder)
    return folder


def test_sha256_mismatch_raises(tmp_path, monkeypatch):
    folder = _copy_to(tmp_path, monkeypatch)
    pretrained.load("digits-uncond")  # the untouched copy loads
    w = folder / "digits-uncond.safetensors"
    data = bytearray(w.read_bytes())
    data[-5] ^= 0xFF  # flip one byte of a weight
    w.write_bytes(bytes(data))
    with pytest.raises(pretrained.PretrainedError, match="sha256 mismatch") as exc:
        pretrained.load("digits-uncond")
    assert "digits-uncond" in str(exc.value)


def test_missing_file_raises(tmp_path, monkeypatch):
    folder = _copy_to(tmp_path, monkeypatch)
    (folder / "digits-cond.safetensors").unlink()
    with pytest.raises(pretrained.PretrainedError, match="missing"):
        pretrained.load("digits-cond")
    (folder / "digits-judge.json").unlink()
    with pytest.raises(pretrained.PretrainedError, match="missing"):
        pretrained.load("digits-judge")


def test_total_size_at_most_10_mb():
    folder = pretrained.pretrained_dir()
    data = [p for p in folder.iterdir() if p.suffix in (".safetensors", ".json", ".md")]
    total = sum(p.stat().st_size for p in data)
    assert total <= 10 * 1024 * 1024, f"shipped files take {total / 2**20:.2f} MiB"


def test_manifest_cards_and_no_optimizer_state():
    folder = pretrained.pretrained_dir()
    man = pretrained.manifest()["models"]
    for name, entry in man.items():
        w = folder / entry["weights"]
        assert file_sha256(w) == entry["sha256"] and w.stat().st_size == entry["bytes"]
        card = (folder / entry["card"]).read_text()
        assert entry["sha256"] in card, f"{name}'s model card does not state the weights' sha256"
        if entry["kind"] == "model":
            assert "python -m diffusion_lab train" in card
            doc = json.loads((folder / entry["config"]).read_text())
            assert set(doc["files"]) == {"weights"} and "optimizer" not in doc  # EMA weights only, no state
            from safetensors.torch import load_file
            assert all(k.startswith("model.") for k in load_file(str(w)))
    assert not list(folder.glob("*.state.safetensors"))


def test_cfg_samples_are_read_as_their_labels():
    """A cheap fact check that the shipped weights are real: 100 CFG samples (w=2), DDIM 20 steps."""
    model, schedule = pretrained.load("digits-cond")
    y = torch.arange(10).repeat(10)
    x = ddim_sample(model, schedule, (100, 1, 8, 8), steps=20, y=y, guidance=ClassifierFreeGuidance(2.0),
                    generator=torch.Generator().manual_seed(0), progress=False)
    acc = metrics.conditional_accuracy(x, y)
    assert acc >= 0.80, f"only {100 * acc:.0f} % of CFG samples read as their label"


def test_noisy_classifier_accuracy_falls_with_t():
    clf, schedule = pretrained.load("digits-noisy-classifier")
    x, y = load_digits("test")
    g = torch.Generator().manual_seed(0)
    accs = []
    for t in (0, 200, 500, 999):
        tt = torch.full((x.shape[0],), t, dtype=torch.long)
        with torch.no_grad():
            xt = q_sample(schedule, x, tt, noise=torch.randn(x.shape, generator=g))
            accs.append(float((clf(xt, tt).argmax(1) == y).double().mean()))
    assert accs[0] >= 0.90, accs
    assert all(a >= b - 0.05 for a, b in zip(accs, accs[1:])), accs
    assert accs[-1] <= 0.3 and accs[0] - accs[-1] >= 0.5, accs
