"""The ONNX exports the page samples with (``diffusion_lab.export``): equal to the torch ε-models, and not stale."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from diffusion_lab import export, pretrained
from diffusion_lab.checkpoint import file_sha256
from diffusion_lab.models import UNet
from diffusion_lab.parameterization import EpsFromPrediction
from diffusion_lab.schedules import linear_schedule

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is in requirements.txt (pip install onnxruntime)")


def _max_diff(model, path, n=16, seed=0):
    meta = export.read_metadata(path)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((n,) + tuple(meta["item_shape"]), generator=g)
    t = torch.randint(0, meta["T"], (n,), generator=g)
    feeds = {"x": x.numpy(), "t": t.numpy()}
    y = None
    if meta["num_classes"] is not None:
        y = torch.randint(0, meta["num_classes"] + 1, (n,), generator=g)    # the null label K included
        feeds["y"] = y.numpy()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = sess.run(["eps"], feeds)
    with torch.no_grad():
        want = model(x, t, y=y) if y is not None else model(x, t)
    return float(np.abs(got - want.numpy()).max())


@pytest.mark.parametrize("name", export.SHIPPED)
def test_shipped_export_equals_torch(name):
    model, _ = pretrained.load(name)
    path = export.web_dir() / f"{name}.onnx"
    for seed in (0, 1):
        assert _max_diff(model, path, seed=seed) <= 1e-5


@pytest.mark.parametrize("name", export.SHIPPED)
def test_shipped_export_is_not_stale(name):
    """The export records the sha256 of the weights it came from, and its own; both must be today's."""
    path = export.web_dir() / f"{name}.onnx"
    meta = export.read_metadata(path)
    hint = "the shipped weights changed since the export: run `python -m diffusion_lab.export`"
    assert meta["source_sha256"] == pretrained.info(name)["sha256"], hint
    assert meta["onnx_sha256"] == file_sha256(path), f"{path.name} was modified after its export: {hint}"
    _, schedule = pretrained.load(name)
    assert meta["T"] == schedule.T and meta["schedule"]["betas"] == schedule.betas.tolist()
    assert meta["num_classes"] == pretrained.info(name)["model"]["config"]["num_classes"]
    assert meta["item_shape"] == [1, 8, 8] and meta["prediction"] == "eps"


def _tiny_unet(num_classes):
    torch.manual_seed(0)
    return UNet(in_channels=1, image_size=8, base_channels=16, channel_mults=(1, 2), num_res_blocks=1,
                attention_resolutions=(4,), num_classes=num_classes, num_groups=8, time_embed_dim=32).eval()


@pytest.mark.parametrize("num_classes", [None, 10])
def test_to_onnx_round_trip(tmp_path, num_classes):
    model, schedule = _tiny_unet(num_classes), linear_schedule(1000)
    path = export.to_onnx(model, tmp_path / "m.onnx", schedule=schedule, source_sha256="ab" * 32)
    meta = json.loads((tmp_path / "m.onnx.json").read_text())
    assert meta["num_classes"] == num_classes and meta["inputs"] == (["x", "t"] if num_classes is None else
                                                                      ["x", "t", "y"])
    assert meta["source_sha256"] == "ab" * 32 and meta["onnx_sha256"] == file_sha256(path)
    assert _max_diff(model, path, n=5) <= 1e-5


def test_v_prediction_exports_the_eps_model(tmp_path):
    """A v-predicting network is exported as the ε-model the samplers call (the wrapper's eq. 5.6 included)."""
    schedule = linear_schedule(1000)
    model = EpsFromPrediction(_tiny_unet(10), schedule, "v").eval()
    path = export.to_onnx(model, tmp_path / "v.onnx", schedule=schedule)
    assert export.read_metadata(path)["prediction"] == "v"
    assert _max_diff(model, path, n=7) <= 1e-5


def test_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match=r"\.onnx"):
        export.to_onnx(_tiny_unet(None), tmp_path / "m.bin", schedule=linear_schedule(10))
    with pytest.raises(TypeError, match="nn.Module"):
        export.onnx_bytes(lambda x, t: x)
    with pytest.raises(FileNotFoundError, match="to_onnx"):
        export.read_metadata(tmp_path / "none.onnx")
