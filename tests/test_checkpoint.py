"""Checkpoints: safetensors + JSON round trip, strict loading with readable errors, no pickle, integrity checks."""
import json

import pytest
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from diffusion_lab.checkpoint import (CheckpointError, checkpoint_files, file_sha256, load_checkpoint,
                                      load_training_state, load_weights, save_checkpoint)
from diffusion_lab.models import MLPDenoiser, UNet
from diffusion_lab.schedules import cosine_schedule, linear_schedule




@pytest.fixture(autouse=True)
def _no_pickle(monkeypatch):
    def forbidden(*a, **k):
        raise AssertionError("torch.load (pickle) must never be used")
    monkeypatch.setattr(torch, "load", forbidden)


def trained_unet():
    torch.manual_seed(0)
    m = UNet(base_channels=32, channel_mults=(1, 2), num_res_blocks=1, num_classes=10)
    ema = AveragedModel(m, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    for _ in range(3):
        m(torch.randn(4, 1, 8, 8), torch.tensor([1, 2, 3, 4]), torch.tensor([0, 1, 2, 10])).sub(1).pow(2).mean().backward()
        opt.step()
        opt.zero_grad()
        ema.update_parameters(m)
    return m, ema, opt


def test_round_trip_with_ema_and_schedule(tmp_path):
    m, ema, opt = trained_unet()
    path = save_checkpoint(tmp_path / "ck", m, cosine_schedule(200), ema=ema, step=2, extra={"note": "hi"})
    assert path == tmp_path / "ck.json" and (tmp_path / "ck.safetensors").exists()
    assert not list(tmp_path.glob("*.tmp")), "temporary files left behind"
    ck = load_checkpoint(tmp_path / "ck.safetensors")
    model, schedule, meta = ck.model, ck.schedule, ck.meta
    assert not model.training and meta["weights"] == "ema" and meta["step"] == 2 and meta["extra"] == {"note": "hi"}
    assert schedule.to_config() == cosine_schedule(200).to_config()
    assert torch.equal(schedule.betas, cosine_schedule(200).betas)
    x, t, y = torch.randn(2, 1, 8, 8), torch.tensor([5, 50]), torch.tensor([3, 10])
    ema.module.eval()
    m.eval()
    assert torch.equal(model(x, t, y), ema.module(x, t, y))
    ck2 = load_checkpoint(path, use_ema=False)
    raw, meta2 = ck2.model, ck2.meta
    assert meta2["weights"] == "model" and torch.equal(raw(x, t, y), m(x, t, y))
    assert not torch.equal(raw(x, t, y), model(x, t, y))


def test_optimizer_state_round_trip(tmp_path):
    m, ema, opt = trained_unet()
    rng = {"generator": torch.Generator().manual_seed(3).get_state()}
    save_checkpoint(tmp_path / "ck", m, linear_schedule(), ema=ema, optimizer=opt, step=2, rng_states=rng,
                    losses=[1.0, 0.5])
    m2 = UNet(m.config)
    ema2 = AveragedModel(m2, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    opt2 = torch.optim.AdamW(m2.parameters(), lr=1e-2)
    st = load_training_state(tmp_path / "ck", m2, ema=ema2, optimizer=opt2)
    assert st["step"] == 2 and st["losses"] == [1.0, 0.5] and torch.equal(st["rng_states"]["generator"], rng["generator"])
    assert int(ema2.n_averaged) == int(ema.n_averaged)
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s1["param_groups"][0]["lr"] == s2["param_groups"][0]["lr"]
    for i, st1 in s1["state"].items():
        for k, v in st1.items():
            assert torch.equal(v, s2["state"][i][k]), (i, k)


def test_wrong_architecture_lists_keys(tmp_path):
    m, _, _ = trained_unet()
    save_checkpoint(tmp_path / "ck", m, linear_schedule())
    other = UNet(base_channels=64, channel_mults=(1, 2), num_res_blocks=1, num_classes=10)
    with pytest.raises(CheckpointError, match="another architecture.*shape mismatches: .*checkpoint \\(32"):
        load_weights(other, tmp_path / "ck")
    with pytest.raises(CheckpointError, match="missing keys: .*unexpected keys"):
        load_weights(MLPDenoiser(), tmp_path / "ck")
    # a JSON whose config disagrees with the weights
    doc = json.loads((tmp_path / "ck.json").read_text())
    doc["model"]["config"]["num_res_blocks"] = 2
    (tmp_path / "ck.json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="missing keys"):
        load_checkpoint(tmp_path / "ck")
    with pytest.raises(CheckpointError, match="cannot resume"):
        load_training_state(tmp_path / "ck", m)


def test_truncated_and_corrupt_files(tmp_path):
    m = MLPDenoiser()
    save_checkpoint(tmp_path / "ck", m, linear_schedule())
    files = checkpoint_files(tmp_path / "ck")
    data = files["weights"].read_bytes()
    files["weights"].write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(tmp_path / "ck")
    # without the recorded hash, the safetensors reader's failure is still reported clearly
    doc = json.loads(files["json"].read_text())
    del doc["files"]["weights"]["sha256"]
    files["json"].write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(tmp_path / "ck")
    text = files["json"].read_text()
    files["json"].write_text(text[: len(text) // 2])
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(tmp_path / "ck")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nothing")


def test_sha256_argument(tmp_path):
    save_checkpoint(tmp_path / "ck", MLPDenoiser(), linear_schedule())
    digest = file_sha256(tmp_path / "ck.safetensors")
    load_checkpoint(tmp_path / "ck", sha256=digest)
    with pytest.raises(CheckpointError, match="sha256 mismatch"):
        load_checkpoint(tmp_path / "ck", sha256="0" * 64)


def test_files_are_plain_safetensors_and_json(tmp_path):
    from safetensors.torch import load_file

    m, ema, opt = trained_unet()
    save_checkpoint(tmp_path / "ck", m, linear_schedule(), ema=ema, optimizer=opt, step=2)
    doc = json.loads((tmp_path / "ck.json").read_text())
    assert doc["model"]["kind"] == "unet" and doc["schedule"]["name"] == "linear" and doc["step"] == 2
    w = load_file(tmp_path / "ck.safetensors")
    assert set(w) == {f"model.{k}" for k in m.state_dict()} | {f"ema.{k}" for k in m.state_dict()}
    state = load_file(tmp_path / "ck.state.safetensors")
    assert any(k.startswith("optim.") for k in state)


def test_every_loader_returns_one_record():
    """pretrained.load, load_checkpoint, the reader's loader, presets.build and the CLI's resolve_model all give a
    LoadedModel that knows its classes, item shape and prediction; it unpacks as (model, schedule) and the samplers
    take it in place of the model."""
    import diffusion_lab.__main__ as cli
    from diffusion_lab import presets, pretrained
    from diffusion_lab.checkpoint import LoadedModel
    from diffusion_lab.sampling import ddim_sample, sample_batches

    shipped = pretrained.load("digits-cond")
    assert isinstance(shipped, LoadedModel) and shipped.source == "shipped" and shipped.kind == "unet"
    assert shipped.num_classes == 10 and shipped.item_shape == (1, 8, 8) and shipped.prediction == "eps"
    assert not any(p.requires_grad for p in shipped.model.parameters()) and not shipped.model.training
    model, schedule = shipped
    assert model is shipped.model and schedule is shipped.schedule
    via_cli = cli.resolve_model("digits-cond")
    assert isinstance(via_cli, LoadedModel) and via_cli.num_classes == 10
    assert isinstance(presets.build("digits-cond"), LoadedModel)
    clf = pretrained.load("digits-noisy-classifier")
    assert clf.kind == "noisy_classifier" and clf.num_classes == 10
    y = torch.tensor([1, 2])
    a = ddim_sample(shipped, None, (2, 1, 8, 8), steps=3, y=y, generator=torch.Generator().manual_seed(0),
                    progress=False)
    b = ddim_sample(model, schedule, (2, 1, 8, 8), steps=3, y=y, generator=torch.Generator().manual_seed(0),
                    progress=False)
    c = sample_batches(shipped, None, n=2, y=y, sampler="ddim", steps=3, generator=torch.Generator().manual_seed(0),
                       progress=False)
    assert torch.equal(a, b) and torch.equal(a, c)
