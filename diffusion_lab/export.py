"""Export an ε-model to ONNX, so the book's pages can sample it in the reader's browser (onnxruntime-web).

    from diffusion_lab import export, pretrained
    model, schedule = pretrained.load("digits-cond")
    export.to_onnx(model, "digits-cond.onnx", schedule=schedule)   # writes digits-cond.onnx + digits-cond.onnx.json

The graph is the ε-model exactly as a checkpoint loads it (:func:`diffusion_lab.checkpoint.load_checkpoint`): a
network that predicts x₀ or v comes wrapped in ``EpsFromPrediction``, and the wrapper's conversion (eq. 5.6) is
exported with it. Inputs and output, the batch dimension dynamic:

    x  float32 (B, C, H, W)   x_t
    t  int64   (B,)           code indices 0 … T−1 (paper step t+1)
    y  int64   (B,)           labels 0 … K−1, or K for the null label ∅ (conditional models only)
    →  eps float32 (B, C, H, W)

Beside ``<name>.onnx`` a metadata file ``<name>.onnx.json`` records what a sampler needs and what the export came
from: ``num_classes``, ``item_shape``, ``prediction``, ``T``, the schedule's β (float64, as the JSON's shortest
round-trip decimals), the source checkpoint's sha256 and the ONNX file's own sha256. The page's sampler
(``diffusion_lab/web/live.js``) reads it; ``tests/test_export.py`` checks that the shipped exports equal the torch
models and that the checkpoint they were made from is still the shipped one.

``python -m diffusion_lab.export`` re-exports the shipped ``digits-cond`` and ``digits-uncond`` into
``diffusion_lab/web/`` (run it after re-training a shipped model; the staleness test says when).
"""
from __future__ import annotations

import hashlib
import io
import json
import warnings
from pathlib import Path

import torch

from . import checks

__all__ = ["to_onnx", "onnx_bytes", "model_metadata", "read_metadata", "web_dir", "SHIPPED", "export_shipped",
           "OPSET", "META_SUFFIX"]

OPSET = 17
META_SUFFIX = ".json"          # digits-cond.onnx → digits-cond.onnx.json
SHIPPED = ("digits-cond", "digits-uncond")


def web_dir() -> Path:
    """The folder of the page's sampler and the shipped exports (package data)."""
    return Path(__file__).resolve().parent / "web"


def _num_classes(model):
    k = getattr(model, "num_classes", None)
    if k is None:
        k = getattr(getattr(model, "config", None), "num_classes", None)
    return k


def _item_shape(model, item_shape):
    if item_shape is not None:
        return tuple(int(s) for s in item_shape)
    cfg = getattr(model, "config", None)
    c, size = getattr(cfg, "in_channels", None), getattr(cfg, "image_size", None)
    if c is None or size is None:
        raise ValueError(f"cannot tell the item shape of {type(model).__name__}: pass item_shape=(C, H, W)")
    return (int(c), int(size), int(size))


def _prediction(model) -> str:
    return getattr(model, "parameterization", "eps")


class _Graph(torch.nn.Module):
    """The function exported: ``eps = model(x, t, y)`` with the package's input checks skipped (they read values
    back to the host, which a trace cannot follow; the sampler in the page checks its inputs itself)."""

    def __init__(self, model, conditional: bool):
        super().__init__()
        self.model, self.conditional = model, conditional

    def forward(self, x, t, y=None):
        with checks.trusted():
            return self.model(x, t, y=y) if self.conditional else self.model(x, t)


def onnx_bytes(model, *, item_shape=None, opset: int = OPSET) -> bytes:
    """The ONNX serialisation of ``model`` (an ε-model ``model(x_t, t, y=None)``) as bytes; see :func:`to_onnx`."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"to_onnx exports a torch.nn.Module ε-model, got {type(model).__name__}")
    shape = _item_shape(model, item_shape)
    K = _num_classes(model)
    conditional = K is not None
    graph = _Graph(model, conditional).eval()
    was_training = model.training
    model.eval()
    B = 2
    x = torch.randn((B,) + shape)
    t = torch.tensor([0, 999], dtype=torch.long)
    args = (x, t, torch.tensor([0, K], dtype=torch.long)) if conditional else (x, t)
    names = ["x", "t", "y"] if conditional else ["x", "t"]
    buf = io.BytesIO()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")     # the legacy exporter's TracerWarnings on shape checks
            torch.onnx.export(graph, args, buf, input_names=names, output_names=["eps"], opset_version=opset,
                              dynamic_axes={n: {0: "batch"} for n in names + ["eps"]}, do_constant_folding=True,
                              dynamo=False)
    finally:
        model.train(was_training)
    return buf.getvalue()


def model_metadata(model, schedule, *, item_shape=None, source_sha256: str | None = None, name: str | None = None) -> dict:
    """The metadata a sampler needs beside the graph (see the module docstring)."""
    from .schedules import check_schedule

    check_schedule(schedule)
    return {"format": "diffusion-lab/onnx", "version": 1, "name": name, "num_classes": _num_classes(model),
            "item_shape": list(_item_shape(model, item_shape)), "prediction": _prediction(model),
            "T": schedule.T, "schedule": {"name": schedule.name, "betas": schedule.betas.tolist()},
            "inputs": ["x", "t", "y"] if _num_classes(model) is not None else ["x", "t"], "output": "eps",
            "opset": OPSET, "source_sha256": source_sha256, "torch_version": torch.__version__}


def to_onnx(model, path, *, schedule, item_shape=None, source_sha256: str | None = None, name: str | None = None) -> Path:
    """Write ``model`` (an ε-model, conditional or not) to ``path`` (``.onnx``) and its metadata beside it
    (``path + ".json"``, with the sha256 of the ONNX file); returns the ONNX path."""
    path = Path(path)
    if path.suffix != ".onnx":
        raise ValueError(f"the export's path must end in .onnx, got {str(path)!r}")
    data = onnx_bytes(model, item_shape=item_shape)
    meta = model_metadata(model, schedule, item_shape=item_shape, source_sha256=source_sha256,
                          name=name or path.stem)
    meta["onnx_sha256"] = hashlib.sha256(data).hexdigest()
    meta["onnx_bytes"] = len(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    Path(str(path) + META_SUFFIX).write_text(json.dumps(meta, indent=1) + "\n")
    return path


def read_metadata(path) -> dict:
    """The metadata written beside the export ``path`` by :func:`to_onnx`."""
    meta_path = Path(str(path) + META_SUFFIX)
    if not meta_path.exists():
        raise FileNotFoundError(f"{meta_path} is missing: export with diffusion_lab.export.to_onnx")
    return json.loads(meta_path.read_text())


def export_shipped(folder=None, names=SHIPPED) -> list[Path]:
    """Export the shipped models ``names`` (default ``digits-cond``, ``digits-uncond``) into ``folder``
    (default :func:`web_dir`), each recording the sha256 of the shipped weights it came from."""
    from . import pretrained

    folder = web_dir() if folder is None else Path(folder)
    out = []
    for name in names:
        model, schedule = pretrained.load(name)
        sha = pretrained.info(name)["sha256"]
        out.append(to_onnx(model, folder / f"{name}.onnx", schedule=schedule, source_sha256=sha, name=name))
    return out


if __name__ == "__main__":
    for p in export_shipped():
        print(f"wrote {p} ({p.stat().st_size:,} bytes) and {p.name}{META_SUFFIX}")
