"""diffusion_lab.glue writes what myst-nb's glue writes, so Jupyter Book pastes it; bad input is refused."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from diffusion_lab import glue as glue_mod


def _capture(monkeypatch, target_module, attr):
    calls = []
    monkeypatch.setattr(target_module, attr, lambda data, raw, metadata: calls.append((data, raw, metadata)))
    return calls


def test_same_output_as_myst_nb(monkeypatch):
    import IPython.display
    import myst_nb.ext.glue as mg

    ours = _capture(monkeypatch, IPython.display, "display")
    theirs = _capture(monkeypatch, mg, "ipy_display")
    for name, value in [("fd", 10.64), ("n", 48000), ("label", "digits-cond"), ("ok", True)]:
        glue_mod.glue(name, value)
        mg.glue(name, value, display=False)
    assert ours == theirs


def test_rounds_and_unwraps_scalars(monkeypatch):
    import IPython.display

    calls = _capture(monkeypatch, IPython.display, "display")
    glue_mod.glue("a", torch.tensor(0.123456), digits=3)
    glue_mod.glue("b", np.float32(2.5))
    glue_mod.glue("c", np.int64(7))
    texts = [c[0][glue_mod.GLUE_PREFIX + "text/plain"] for c in calls]
    assert texts == ["0.123", "2.5", "7"]


@pytest.mark.parametrize("name, value, kw, err", [
    ("1bad", 1.0, {}, ValueError), ("ok", torch.zeros(3), {}, TypeError), ("ok", [1, 2], {}, TypeError),
    ("ok", "text", {"digits": 2}, TypeError), ("ok", 1.5, {"digits": 1.0}, TypeError),
])
def test_bad_input(name, value, kw, err):
    with pytest.raises(err):
        glue_mod.glue(name, value, **kw)
