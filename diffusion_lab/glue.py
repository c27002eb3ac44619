"""Figures in the prose come from the cells that compute them: myst-nb's *glue*, without needing myst-nb.

A chapter cell calls ``glue("fd_shipped", fd, digits=2)``; the chapter's text says ``{glue:text}`fd_shipped:.2f```
(or, from another page, ``{glue:text}`05_training.ipynb::fd_shipped:.2f```), and the built book shows the value of
the last execution, so re-running a chapter updates its prose. The output written is exactly what
``myst_nb.glue(name, value, display=False)`` writes (a ``display_data`` under the ``application/papermill.record/``
prefix with ``scrapbook`` metadata), so Jupyter Book reads it, while Colab, which runs a chapter with only the
package's own dependencies, needs no Sphinx stack to execute it.

Round a float to the digits the prose shows (``digits=``): the stored output is then as reproducible as the
printed numbers that ``pytest --nbval`` compares.
"""
from __future__ import annotations

import numbers
import re

__all__ = ["glue", "GLUE_PREFIX"]

GLUE_PREFIX = "application/papermill.record/"
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_\-]*")


def _plain(value):
    """A Python number, string or bool from ``value`` (numpy and 0-d torch scalars included)."""
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0 and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, (bool, str, numbers.Integral)):
        return value if not isinstance(value, numbers.Integral) or isinstance(value, bool) else int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    raise TypeError(f"glue takes a number or a string, got {type(value).__name__}; "
                    "pass value.item() for a one-element tensor, or format it into a string first")


def glue(name: str, value, *, digits: int | None = None) -> None:
    """Store ``value`` under ``name`` in the cell's outputs, for ``{glue:text}`name:fmt``` in the prose.

    ``digits`` rounds a float first (``round(value, digits)``). Nothing is shown in the cell.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"glue name must be a letter followed by letters, digits, '_' or '-', got {name!r}")
    value = _plain(value)
    if digits is not None:
        if not isinstance(digits, int) or isinstance(digits, bool):
            raise TypeError(f"digits must be an int, got {digits!r}")
        if isinstance(value, (str, bool)):
            raise TypeError(f"digits rounds numbers; {name!r} is {value!r}")
        value = round(float(value), digits)
    from IPython.display import display   # a notebook-only need, imported where it is used

    display({GLUE_PREFIX + "text/plain": repr(value)}, raw=True,
            metadata={"scrapbook": {"name": name, "mime_prefix": GLUE_PREFIX}})
