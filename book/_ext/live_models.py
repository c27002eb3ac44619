"""Put the live sampler's files into the built book: ``_static/live/`` gets the shipped ONNX exports and their
metadata (``diffusion_lab/web/*.onnx``, ``*.onnx.json``) and the sampler's ES module (``live.js``, which the browser
test imports). The widget (``diffusion_lab.live``) fetches ``<content root>/_static/live/<name>.onnx`` on its first
click, so the pages themselves stay light: the model is not in the page, only in this folder.

The widget's front end is anywidget's (npm, AMD). The widget manager would look for it first beside the page
(``book/anywidget.js``, a 404 and a console error) and then on the CDN at the version range the widget state
records; a global ``require`` config, read by require.js when it loads, sends it straight to the pinned CDN file
(the version ``requirements.txt`` pins and ``scripts/fetch_offline_assets.sh`` fetches for the offline test).
"""
from __future__ import annotations

import shutil
from pathlib import Path

WEB = Path(__file__).resolve().parents[2] / "diffusion_lab" / "web"
PATTERNS = ("*.onnx", "*.onnx.json", "live.js")
ANYWIDGET_NPM = "0.11.0"
ANYWIDGET_URL = f"https://cdn.jsdelivr.net/npm/anywidget@{ANYWIDGET_NPM}/dist/index"


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
    # before require.js (myst-nb's widget scripts come later in the head): require.js takes a global `require`
    # object as its configuration
    app.add_js_file(None, body=f'var require = {{paths: {{anywidget: "{ANYWIDGET_URL}"}}}};', priority=100)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
