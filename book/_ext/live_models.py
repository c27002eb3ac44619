"""Put the live sampler's files into the built book: ``_static/live/`` gets the shipped ONNX exports and their
metadata (``diffusion_lab/web/*.onnx``, ``*.onnx.json``) and the sampler's ES module (``live.js``, which the browser
test imports). The widget (``diffusion_lab.live``) fetches ``<content root>/_static/live/<name>.onnx`` on its first
click, so the pages themselves stay light: the model is not in the page, only in this folder.
"""
from __future__ import annotations

import shutil
from pathlib import Path

WEB = Path(__file__).resolve().parents[2] / "diffusion_lab" / "web"
PATTERNS = ("*.onnx", "*.onnx.json", "live.js")


def _copy(app, exception):
    if exception is not None or app.builder.format != "html":
        return
    out = Path(app.outdir) / "_static" / "live"
    out.mkdir(parents=True, exist_ok=True)
    for pattern in PATTERNS:
        for src in sorted(WEB.glob(pattern)):
            shutil.copyfile(src, out / src.name)


def setup(app):
    app.connect("build-finished", _copy)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
