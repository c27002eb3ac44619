"""Widgets that work without a kernel (GUIDE §5).

The online book is static HTML: ``interact`` and ``observe`` callbacks never run there. What works
everywhere (live kernel, Colab, static HTML) is to precompute the frames, put them in an
``ipywidgets.Stack`` of ``Image`` widgets, and tie a slider (and a ``Play`` button) to the stack's
``selected_index`` with ``jslink`` — a link the browser's widget manager evaluates by itself.

One trap, found with the browser test of the built book: the book's pages load MathJax 3, and the
widget manager (controls 5.x) calls the MathJax 2 API ``MathJax.Hub.Queue`` to typeset every non-empty
widget ``description`` (and every ``Label``). On such a page that call throws while the view renders, and
the ``jslink`` bindings silently stop working. So the scrubber gives its Play button and slider no
description and shows its caption in an ``HTML`` widget, which is never typeset.
"""
from __future__ import annotations

import html
import io
from typing import Callable, Iterable, Sequence

import numpy as np

__all__ = ["scrubber", "chooser", "png_bytes", "array_to_png", "render_frames"]


def png_bytes(fig, dpi: int = 80) -> bytes:
    """A matplotlib figure as PNG bytes (the figure is left open)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def array_to_png(arr, *, cmap: str = "gray", vmin: float | None = -1.0, vmax: float | None = 1.0, scale: int = 1) -> bytes:
    """An image array as PNG bytes: (H, W) through ``cmap``, or (H, W, 3) / (3, H, W) / (1, H, W) in [vmin, vmax].

    ``scale`` repeats each pixel (nearest neighbour) so tiny images such as 8×8 digits stay crisp.
    """
    import matplotlib.pyplot as plt

    a = np.asarray(arr.detach().cpu() if hasattr(arr, "detach") else arr, dtype=np.float32)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = np.moveaxis(a, 0, -1)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3):
        raise ValueError(f"expected an image of shape (H, W), (H, W, 3) or (C, H, W), got {a.shape}")
    if not (isinstance(scale, int) and scale >= 1):
        raise ValueError(f"scale must be a positive int, got {scale!r}")
    if scale > 1:
        a = a.repeat(scale, 0).repeat(scale, 1)
    buf = io.BytesIO()
    if a.ndim == 3:
        lo = a.min() if vmin is None else vmin
        hi = a.max() if vmax is None else vmax
        plt.imsave(buf, np.clip((a - lo) / max(hi - lo, 1e-12), 0, 1), format="png")
    else:
        plt.imsave(buf, a, cmap=cmap, vmin=vmin, vmax=vmax, format="png")
    return buf.getvalue()


def render_frames(draw: Callable, values: Iterable, *, figsize=(4, 3), dpi: int = 80) -> list[bytes]:
    """Render one PNG per value: ``draw(fig, value)`` draws on a cleared figure each time."""
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=figsize)
    frames = []
    try:
        for v in values:
            fig.clf()
            draw(fig, v)
            frames.append(png_bytes(fig, dpi=dpi))
    finally:
        plt.close(fig)
    return frames


def scrubber(frames: Sequence[bytes], labels: Sequence[str] | None = None, *, description: str = "t",
             interval_ms: int = 300, width: str | None = None):
    """A slider (with a Play button) that flips through precomputed PNG frames, with no kernel needed.

    ``frames`` are PNG bytes (see :func:`png_bytes`, :func:`array_to_png`, :func:`render_frames`);
    ``labels`` name each frame on the slider (e.g. ``"t=250"`` in the paper's numbering).
    Returns an ``ipywidgets.VBox``; its ``.stack`` and ``.slider`` attributes give access for tests.
    """
    import ipywidgets as W

    frames = list(frames)
    if not frames:
        raise ValueError("scrubber needs at least one frame")
    for i, f in enumerate(frames):
        if not isinstance(f, (bytes, bytearray)) or not bytes(f[:8]) == b"\x89PNG\r\n\x1a\n":
            raise TypeError(f"frame {i} is not PNG bytes; convert figures with png_bytes() and arrays with array_to_png()")
    if labels is None:
        labels = [str(i) for i in range(len(frames))]
    labels = [str(s) for s in labels]
    if len(labels) != len(frames):
        raise ValueError(f"got {len(frames)} frames but {len(labels)} labels; give one label per frame")
    if len(set(labels)) != len(labels):
        raise ValueError("labels must be distinct (the slider shows them)")
    layout = W.Layout(width=width) if width else W.Layout()
    images = [W.Image(value=bytes(f), format="png", layout=layout) for f in frames]
    stack = W.Stack(images, selected_index=0)
    # No `description=` on purpose: see the module docstring (MathJax 3 breaks described widgets).
    slider, play = _slider_row_parts(labels, interval_ms)
    W.jslink((play, "value"), (slider, "index"))
    W.jslink((slider, "index"), (stack, "selected_index"))
    box = W.VBox(([caption_html(description)] if description else []) + [W.HBox([play, slider]), stack])
    box.stack, box.slider, box.play = stack, slider, play
    return box


# One layout for every scrubber (and the live sampler, diffusion_lab/web/live.js, follows it): the caption on a
# line of its own and never wrapped, then the Play button and the slider, whose track takes the rest of the row
# and at least TRACK_MIN_PX. (Beside the Play button and the slider, a long caption squeezed the track to ~60 px.)
TRACK_MIN_PX = 320


def caption_html(text: str):
    """The caption of a scrubber: bold, on one line (an ``HTML`` widget, which MathJax never typesets)."""
    import ipywidgets as W

    return W.HTML(value=f'<b style="white-space: nowrap">{html.escape(text)}</b>',
                  layout=W.Layout(overflow="visible"))


def _slider_row_parts(labels, interval_ms):
    import ipywidgets as W

    # the slider's box = its track + its readout (about as wide as the longest label, up to the ~160 px the widget
    # manager's stylesheet allows it); flex lets it fill the row, which a ~690 px page column has room for
    longest = max(len(s) for s in labels)
    readout_px = min(8 * longest + 16, 160)
    slider = W.SelectionSlider(options=labels, index=0, continuous_update=True,
                               layout=W.Layout(flex="1 1 auto", width="auto",
                                               min_width=f"{TRACK_MIN_PX + readout_px}px"),
                               style={"description_width": "0px"})
    play = W.Play(value=0, min=0, max=len(labels) - 1, step=1, interval=interval_ms,
                  layout=W.Layout(flex="0 0 auto"))
    return slider, play


def chooser(children: Sequence, labels: Sequence[str], *, caption: str = "", sync_sliders: bool = True):
    """Toggle buttons that show one of several widgets (e.g. one scrubber per data point), with no kernel needed.

    The buttons' ``index`` is ``jslink``-ed to a ``Stack``'s ``selected_index``. With ``sync_sliders``, the
    children's ``.slider`` attributes (scrubbers) are linked too, so switching keeps the chosen step.
    Like :func:`scrubber`, it sets no widget ``description`` (see the module docstring).
    """
    import ipywidgets as W

    children = list(children)
    labels = [str(s) for s in labels]
    if not children:
        raise ValueError("chooser needs at least one child widget")
    if len(labels) != len(children):
        raise ValueError(f"got {len(children)} children but {len(labels)} labels; give one label per child")
    if len(set(labels)) != len(labels):
        raise ValueError("labels must be distinct (the buttons show them)")
    buttons = W.ToggleButtons(options=labels, index=0)
    panel = W.Stack(children, selected_index=0)
    W.jslink((buttons, "index"), (panel, "selected_index"))
    if sync_sliders:
        sliders = [getattr(c, "slider", None) for c in children]
        if all(s is not None for s in sliders):
            for a, b in zip(sliders, sliders[1:]):
                W.jslink((a, "index"), (b, "index"))
    head = [caption_html(caption)] if caption else []
    box = W.VBox([W.HBox(head + [buttons]), panel])
    box.buttons, box.stack = buttons, panel
    return box
