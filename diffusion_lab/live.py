"""Sample a digits model live, in the browser: the book's one widget that computes instead of replaying frames.

    from diffusion_lab.live import live_sampler
    live_sampler("digits-cond", digit=3, w=2.0)              # the shipped model
    live_sampler(model=my_model, schedule=my_schedule)       # your own, exported on the fly (in a kernel)

The widget is an ``anywidget`` whose front end is ``diffusion_lab/web/live.js``: the samplers of
:mod:`diffusion_lab.sampling` (DDPM with σ² = β or β̃, DDIM with steps and η, classifier-free guidance with w and
the interval of eq. 8.2) written again in JavaScript, running the ONNX export (:mod:`diffusion_lab.export`) with
onnxruntime-web. What runs where:

* **the book's static page** (no kernel): the widget state saved in the notebook holds the front end and the
  settings; the first click loads onnxruntime-web from its CDN and the shipped ``.onnx`` file from the book's
  ``_static/live/`` folder (copied there by ``book/_ext/live_models.py``), then samples in the page;
* **Jupyter and Colab**: the same front end; the kernel hands it the model's ONNX bytes in a message (never part
  of the saved state): the shipped export from the package, or your own model, exported when the widget is made.
  The sampling still runs in the browser, not in the kernel. A saved copy of the page samples the shipped model.

A seed picks the browser's own PRNG (not torch's), so a seed gives the same digits in every browser but not the
digits ``ddim_sample`` draws from ``torch.manual_seed(seed)``; fed the same noise, the two agree to 1e-4
(``tests/test_live_browser.py``).
"""
from __future__ import annotations

import pathlib

from . import checks, export

__all__ = ["MODEL_URL", "live_sampler"]   # and LiveSampler, the widget class, made on first use

MODEL_URL = "_static/live/{name}.onnx"       # relative to the book's root (html data-content_root)
SAMPLER_CHOICES = ("ddim", "ddpm_beta", "ddpm_beta_tilde")


def _widget_class():
    import anywidget
    import traitlets as tl

    class LiveSampler(anywidget.AnyWidget):
        """The live sampler's widget (see the module docstring); make it with :func:`live_sampler`."""

        _esm = pathlib.Path(__file__).resolve().parent / "web" / "live.js"
        meta = tl.Dict().tag(sync=True)                  # the export's metadata: schedule, classes, item shape
        model_name = tl.Unicode("digits-cond").tag(sync=True)
        model_url = tl.Unicode("").tag(sync=True)
        kernel_model = tl.Bool(False).tag(sync=True)     # whether the kernel has the reader's own model to send
        digit = tl.Union([tl.Int(), tl.Unicode()], default_value=3).tag(sync=True)
        w = tl.Float(2.0).tag(sync=True)
        interval = tl.List(tl.Int(), allow_none=True, default_value=None).tag(sync=True)
        sampler = tl.Unicode("ddim").tag(sync=True)
        steps = tl.Int(50).tag(sync=True)
        eta = tl.Float(0.0).tag(sync=True)
        seed = tl.Int(0).tag(sync=True)
        batch = tl.Int(16).tag(sync=True)
        caption = tl.Unicode("").tag(sync=True)

        def __init__(self, onnx: bytes | None = None, kernel_meta: dict | None = None, kernel_caption: str = "",
                     **kwargs):
            super().__init__(**kwargs)
            self._onnx, self._kernel_meta, self._kernel_caption = onnx, kernel_meta, kernel_caption
            self.kernel_model = onnx is not None
            self.on_msg(self._on_msg)

        def _on_msg(self, widget, content, buffers):
            # The front end says hello when it renders: hand it the kernel's model (never part of the saved state):
            # the reader's own, or the shipped export from the package (a notebook server has no _static/live/).
            if not (isinstance(content, dict) and content.get("type") == "hello"):
                return
            if self._onnx is None:
                onnx = (export.web_dir() / f"{self.model_name}.onnx").read_bytes()
                self.send({"type": "model", "meta": self.meta, "caption": self.caption}, [onnx])
            else:
                self.send({"type": "model", "meta": self._kernel_meta, "caption": self._kernel_caption}, [self._onnx])

    LiveSampler.__qualname__ = "LiveSampler"     # its repr: <diffusion_lab.live.LiveSampler object at …>
    return LiveSampler


_CLASS = None


def __getattr__(name):      # LiveSampler is built on first use, so importing the package needs no anywidget
    global _CLASS
    if name == "LiveSampler":
        if _CLASS is None:
            _CLASS = _widget_class()
        return _CLASS
    raise AttributeError(name)


def live_sampler(name: str = "digits-cond", *, model=None, schedule=None, digit=3, w: float = 2.0,
                 interval=None, sampler: str = "ddim", steps: int = 50, eta: float = 0.0, seed: int = 0,
                 batch: int = 16, caption: str | None = None):
    """The live sampler widget for the shipped export ``name`` (``"digits-cond"`` or ``"digits-uncond"``), or for
    your own ε-model (``model`` and its ``schedule``, exported to ONNX here; its bytes go to the browser through the
    kernel, so a static copy of the page falls back to the shipped ``name``).

    ``digit`` (0–9 or ``"all"``), ``w``, ``interval`` (code steps ``(t_lo, t_hi)`` of eq. 8.2, or None), ``sampler``
    (``"ddim"``, ``"ddpm_beta"``, ``"ddpm_beta_tilde"``), ``steps``, ``eta`` and ``seed`` are the starting
    settings the reader can change; ``batch`` samples are drawn per click.
    """
    if name not in export.SHIPPED:
        raise ValueError(f"name must be one of the shipped exports {export.SHIPPED}, got {name!r}")
    if sampler not in SAMPLER_CHOICES:
        raise ValueError(f"sampler must be one of {SAMPLER_CHOICES}, got {sampler!r}")
    meta = export.read_metadata(export.web_dir() / f"{name}.onnx")
    onnx = kernel_meta = None
    if (model is None) != (schedule is None):
        raise ValueError("pass both model= and schedule= (your own model), or neither (the shipped export)")
    if model is not None:
        kernel_meta = export.model_metadata(model, schedule, name=f"{name} (yours)")
        for key in ("item_shape", "num_classes"):
            if kernel_meta[key] != meta[key]:
                raise ValueError(f"your model's {key} {kernel_meta[key]} differs from the shipped {name!r}'s "
                                 f"{meta[key]}: the page falls back to that one")
        onnx = export.onnx_bytes(model)
    K = meta["num_classes"]
    if K is not None and not (digit == "all" or (isinstance(digit, int) and 0 <= digit < K)):
        raise ValueError(f"digit must be an int in 0…{K - 1} or 'all', got {digit!r}")
    checks.real_number(w, "w")
    checks.real_number(eta, "eta", 0.0, 1.0)
    steps = checks.positive_int(steps, "steps")
    batch = checks.positive_int(batch, "batch")
    if steps > meta["T"]:
        raise ValueError(f"steps must lie in [1, T] = [1, {meta['T']}], got {steps}")
    if interval is not None:
        interval = list(checks.interval(interval))
    kind = "conditional" if K is not None else "unconditional"
    if caption is None:
        caption = (f"Runs in your browser with onnxruntime-web: the shipped {name} ({kind}, T = {meta['T']}), "
                   "exported to ONNX by diffusion_lab.export.")
    kernel_caption = ""
    if onnx is not None:
        kernel_caption = (f"Runs in your browser with onnxruntime-web: your model ({kind}, T = {kernel_meta['T']}, "
                          f"predicts {kernel_meta['prediction']}), exported to ONNX from this kernel.")
    cls = __getattr__("LiveSampler")
    return cls(onnx=onnx, kernel_meta=kernel_meta, kernel_caption=kernel_caption, meta=meta, model_name=name,
               model_url=MODEL_URL.format(name=name), digit=digit, w=float(w), interval=interval, sampler=sampler,
               steps=steps, eta=float(eta), seed=int(seed), batch=batch, caption=caption)
