"""The live sampler's Python side (diffusion_lab.live): the widget's state, its checks, the kernel handing over
the model, and one version of anywidget everywhere (Python, the npm package the offline test serves, the page)."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from diffusion_lab import export, pretrained

ROOT = Path(__file__).resolve().parents[1]
anywidget = pytest.importorskip("anywidget", reason="anywidget is in requirements.txt")
live = pytest.importorskip("diffusion_lab.live")


def test_shipped_widget_state():
    w = live.live_sampler("digits-cond", digit=7, w=3.0, interval=(0, 300), sampler="ddpm_beta_tilde", seed=5)
    state = w.get_state()
    assert state["_model_module"] == "anywidget" and "dl-live" in state["_esm"]
    assert state["_esm"] == (export.web_dir() / "live.js").read_text()
    assert state["model_url"] == "_static/live/digits-cond.onnx" and not state["kernel_model"]
    assert state["meta"] == export.read_metadata(export.web_dir() / "digits-cond.onnx")
    assert (state["digit"], state["w"], state["interval"], state["sampler"], state["seed"]) == (
        7, 3.0, [0, 300], "ddpm_beta_tilde", 5)
    assert "shipped digits-cond" in state["caption"]
    # in a kernel, the front end gets the shipped bytes on hello (a notebook server does not serve _static/live/)
    sent = []
    w.send = lambda content, buffers=None: sent.append((content, buffers))
    w._on_msg(w, {"type": "hello"}, [])
    assert sent[0][0] == {"type": "model", "meta": w.meta, "caption": w.caption}
    assert sent[0][1][0] == (export.web_dir() / "digits-cond.onnx").read_bytes()


def test_own_model_is_exported_and_sent_on_hello():
    model, schedule = pretrained.load("digits-uncond")
    w = live.live_sampler("digits-uncond", model=model, schedule=schedule)
    # the saved state describes the shipped export (a static copy of the page samples that one) …
    assert w.kernel_model and w.meta == export.read_metadata(export.web_dir() / "digits-uncond.onnx")
    assert "shipped digits-uncond" in w.caption
    sent = []
    w.send = lambda content, buffers=None: sent.append((content, buffers))
    w._on_msg(w, {"type": "hello"}, [])
    # … and the kernel hands its own model to the front end on hello, with its metadata and caption
    assert len(sent) == 1 and sent[0][0]["type"] == "model" and "your model" in sent[0][0]["caption"]
    assert sent[0][0]["meta"]["num_classes"] is None and sent[0][0]["meta"]["T"] == 1000
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(sent[0][1][0], providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["x", "t"]       # the unconditional model, as exported
    w._on_msg(w, {"type": "other"}, [])
    assert len(sent) == 1


@pytest.mark.parametrize("kwargs, err, match", [
    ({"name": "digits-judge"}, ValueError, "shipped exports"),
    ({"sampler": "euler"}, ValueError, "sampler must be"),
    ({"digit": 10}, ValueError, "digit must be"),
    ({"steps": 0}, ValueError, "steps"),
    ({"steps": 1001}, ValueError, r"\[1, 1000\]"),
    ({"eta": 1.5}, ValueError, "eta"),
    ({"interval": (300, 0)}, ValueError, "interval"),
    ({"schedule": object()}, ValueError, "both model= and schedule="),
    ({"name": "digits-cond", "model": pretrained.load("digits-uncond").model,
      "schedule": pretrained.load("digits-uncond").schedule}, ValueError, "num_classes"),
])
def test_bad_arguments(kwargs, err, match):
    with pytest.raises(err, match=match):
        live.live_sampler(**kwargs)


def test_one_anywidget_version_everywhere():
    sys.path.insert(0, str(ROOT / "book" / "_ext"))
    try:
        import live_models
    finally:
        sys.path.pop(0)
    pinned = re.search(r"^anywidget==(\S+)$", (ROOT / "requirements.txt").read_text(), re.M).group(1)
    fetched = re.search(r'"anywidget@([^"]+)"', (ROOT / "scripts" / "fetch_offline_assets.sh").read_text()).group(1)
    assert live_models.ANYWIDGET_NPM == pinned == fetched
    assert anywidget.__version__ == pinned, "the installed anywidget differs from requirements.txt's pin"


def test_one_onnxruntime_web_version():
    js = (export.web_dir() / "live.js").read_text()
    fetched = re.search(r'"onnxruntime-web@([^"]+)"', (ROOT / "scripts" / "fetch_offline_assets.sh").read_text()).group(1)
    assert f'ORT_VERSION = "{fetched}"' in js


def test_colab_gets_what_the_widget_imports():
    """Colab installs the package with its declared dependencies only: the widget's imports must be among them."""
    tomllib = pytest.importorskip("tomllib")
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.split(r"[<>=!~ ]", d)[0] for d in deps}
    assert {"anywidget", "onnx"} <= names
