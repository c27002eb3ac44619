"""The error families (issue 13, item 7): an unknown name raises a LookupError (that is also the ValueError it was
before), a corrupt or foreign file a ValueError that names the file, and every message says what was given and
what is allowed."""
from __future__ import annotations

import pytest
import torch

from diffusion_lab import data, diffusion, pretrained, profile, sampling, schedules
from diffusion_lab.checkpoint import CheckpointError, save_checkpoint, load_checkpoint
from diffusion_lab.errors import CorruptFileError, UnknownNameError
from diffusion_lab.models import build_model
from diffusion_lab.models.judge import load_judge


@pytest.mark.parametrize("call, given, allowed", [
    (lambda: data.make_toy("spiral"), "spiral", "two_moons"),
    (lambda: data.load_digits("val"), "val", "test"),
    (lambda: data.load_dataset("imagenet"), "imagenet", "digits"),
    (lambda: schedules.get_schedule("quadratic"), "quadratic", "cosine"),
    (lambda: schedules.linear_schedule(10).extract("nope", 0, torch.zeros(1)), "nope", "alpha_bars"),
    (lambda: build_model("transformer"), "transformer", "unet"),
    (lambda: sampling.sample_batches(None, schedules.linear_schedule(10), (2,), n=2, sampler="euler"), "euler",
     "ddim"),
    (lambda: diffusion.model_variance(schedules.linear_schedule(10), "learned"), "learned", "beta_tilde"),
    (lambda: pretrained.load("digits-xl"), "digits-xl", "digits-cond"),
])
def test_unknown_names_are_lookup_errors(call, given, allowed):
    with pytest.raises(LookupError) as exc:
        call()
    assert isinstance(exc.value, ValueError) and isinstance(exc.value, UnknownNameError)   # old `except` still works
    assert repr(given) in str(exc.value) and allowed in str(exc.value)


def test_unknown_pretrained_name_is_still_a_pretrained_error():
    with pytest.raises(pretrained.PretrainedError):
        pretrained.load("digits-xl")
    with pytest.raises(TypeError, match="str"):
        pretrained.load(3)


def test_unknown_profile_is_a_lookup_error(monkeypatch):
    monkeypatch.setenv(profile.ENV_VAR, "tpu")
    with pytest.raises(LookupError, match=r"got 'tpu'"):
        profile.get_profile()


def test_corrupt_files_are_value_errors_naming_the_file(tmp_path):
    bad = tmp_path / "x-idx"
    bad.write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(CorruptFileError) as exc:
        data.read_idx(bad)
    assert isinstance(exc.value, ValueError) and exc.value.path == bad and str(bad) in str(exc.value)

    model = build_model("mlp", hidden_dim=8, num_blocks=1, time_embed_dim=8)
    path = save_checkpoint(tmp_path / "ck", model, schedules.linear_schedule(10))
    weights = tmp_path / "ck.safetensors"
    weights.write_bytes(weights.read_bytes()[:-7])
    with pytest.raises(ValueError) as exc:                     # a CheckpointError: RuntimeError and ValueError
        load_checkpoint(path)
    assert isinstance(exc.value, CheckpointError) and isinstance(exc.value, RuntimeError)
    assert str(weights) in str(exc.value)

    from safetensors.torch import save_file
    foreign = tmp_path / "judge.safetensors"
    save_file({"w": torch.zeros(1)}, str(foreign), metadata={"arch": "resnet-50"})
    with pytest.raises(CorruptFileError, match="resnet-50") as exc:
        load_judge(foreign)
    assert str(foreign) in str(exc.value)


def test_pretrained_sha_mismatch_is_a_corrupt_file(tmp_path, monkeypatch):
    import shutil
    for p in pretrained.pretrained_dir().glob("digits-uncond.*"):
        shutil.copy(p, tmp_path / p.name)
    shutil.copy(pretrained.pretrained_dir() / pretrained.MANIFEST_NAME, tmp_path / pretrained.MANIFEST_NAME)
    w = tmp_path / "digits-uncond.safetensors"
    raw = w.read_bytes()
    w.write_bytes(raw[:-1] + bytes([raw[-1] ^ 1]))
    monkeypatch.setattr(pretrained, "pretrained_dir", lambda: tmp_path)
    with pytest.raises(ValueError, match="sha256 mismatch") as exc:
        pretrained.load("digits-uncond")
    assert isinstance(exc.value, pretrained.PretrainedError) and exc.value.path == w
