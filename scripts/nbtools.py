"""Small helpers for authoring chapter notebooks with nbformat (the .ipynb stays the source of truth).

    from nbtools import new_chapter, md, code
    nb = new_chapter([md("# 2. The forward process"), code("import torch", tags=["nbval-ignore-output"])])
    nbformat.write(nb, "book/02_forward_process.ipynb")

then run ``python scripts/execute_notebooks.py book/02_forward_process.ipynb``.
"""
from __future__ import annotations

import re
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parents[1]


def repo_url() -> str:
    """The repository URL, read from _config.yml (the one place it lives)."""
    text = (ROOT / "_config.yml").read_text()
    m = re.search(r"^repository:\s*\n\s+url:\s*(\S+)", text, re.M)
    if not m:
        raise RuntimeError("_config.yml has no repository.url")
    return m.group(1)


def bootstrap_source(url: str | None = None) -> str:
    url = url or repo_url()
    return (
        "# Colab bootstrap: in Google Colab, install this book's package from the repository.\n"
        "# torch and numpy are kept as Colab ships them. Elsewhere this cell does nothing.\n"
        "import sys\n"
        "if \"google.colab\" in sys.modules:\n"
        f"    !pip install -q \"diffusion-lab @ git+{url}\"\n"
    )


def md(text: str, tags=None):
    c = new_markdown_cell(text.strip("\n"))
    if tags:
        c.metadata["tags"] = list(tags)
    return c


def code(src: str, tags=None):
    c = new_code_cell(src.strip("\n"))
    if tags:
        c.metadata["tags"] = list(tags)
    return c


# What Colab reads from a notebook's metadata to open it on a GPU runtime (the keys Colab itself writes when
# "Runtime > Change runtime type > T4 GPU" is saved): the top-level "accelerator" and "colab.gpuType".
COLAB_METADATA = {"accelerator": "GPU", "colab": {"gpuType": "T4", "provenance": []}}


def ensure_colab_metadata(nb) -> nbformat.NotebookNode:
    """Ask Colab for a GPU runtime: set ``accelerator: GPU`` and ``colab.gpuType: T4`` in the notebook metadata.

    Idempotent; other keys under ``colab`` (a name, a toc setting) are kept. Returns the notebook.
    """
    nb.metadata["accelerator"] = COLAB_METADATA["accelerator"]
    colab = dict(nb.metadata.get("colab", {}))
    colab["gpuType"] = COLAB_METADATA["colab"]["gpuType"]
    colab.setdefault("provenance", [])
    nb.metadata["colab"] = colab
    return nb


def new_chapter(cells) -> nbformat.NotebookNode:
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    ensure_colab_metadata(nb)
    nb.cells = [code(bootstrap_source(), tags=["remove-cell"])] + list(cells)
    return nb
