"""Facts about the book's sources: table of contents, committed notebooks, bootstrap cells, widget state."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import diffusion_lab

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = ["01_generative_models", "02_forward_process", "03_reverse_process", "04_elbo", "05_training",
            "06_sampling", "07_classifier_guidance", "08_classifier_free_guidance"]
NOTEBOOKS = sorted((ROOT / "book").glob("[0-9][0-9]_*.ipynb"))


def _config_repo_url() -> str:
    text = (ROOT / "_config.yml").read_text()
    m = re.search(r"^repository:\s*\n\s+url:\s*(\S+)", text, re.M)
    assert m, "_config.yml must hold repository.url"
    return m.group(1)


def _load(nb_path: Path) -> dict:
    return json.loads(nb_path.read_text())


def test_toc_lists_the_eight_chapters_in_order():
    toc = (ROOT / "_toc.yml").read_text()
    files = re.findall(r"-\s*file:\s*(\S+)", toc)
    assert files == [f"book/{c}" for c in CHAPTERS]
    assert re.search(r"^root:\s*book/intro\s*$", toc, re.M)
    for c in CHAPTERS:
        assert (ROOT / "book" / f"{c}.ipynb").exists(), c
    assert [p.stem for p in NOTEBOOKS] == CHAPTERS, "every chapter notebook is in the toc and nothing else"


def test_jupyter_book_config_renders_committed_outputs():
    cfg = (ROOT / "_config.yml").read_text()
    assert re.search(r'^\s*execute_notebooks:\s*"off"', cfg, re.M), 'execute_notebooks must be the string "off"'
    assert re.search(r"^only_build_toc_files:\s*true", cfg, re.M)
    req = (ROOT / "requirements.txt").read_text()
    m = re.search(r"^jupyter-book==(\d+)\.", req, re.M)
    assert m and m.group(1) == "1", "the book is built with Jupyter Book 1.x"


def test_one_repository_url():
    url = _config_repo_url()
    assert diffusion_lab.REPO_URL == url
    for nb in NOTEBOOKS:
        first = _load(nb)["cells"][0]
        src = "".join(first["source"])
        assert first["cell_type"] == "code" and "google.colab" in src, f"{nb.name}: first cell must be the Colab bootstrap"
        assert f"git+{url}" in src, f"{nb.name}: bootstrap installs from another URL than _config.yml's {url}"
        assert "remove-cell" in first["metadata"].get("tags", []), f"{nb.name}: bootstrap cell must be hidden"
        assert not re.search(r"pip install[^\n]*\b(torch|numpy)\b", src), "the bootstrap must not reinstall torch/numpy"


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_executed_top_to_bottom(nb_path):
    nb = _load(nb_path)
    code = [c for c in nb["cells"] if c["cell_type"] == "code" and "".join(c["source"]).strip()]
    counts = [c["execution_count"] for c in code]
    assert None not in counts, f"{nb_path.name}: run scripts/execute_notebooks.py (unexecuted cells)"
    assert counts == list(range(1, len(code) + 1)), f"{nb_path.name}: not executed top to bottom in one fresh kernel"
    errors = [o for c in code if "raises-exception" not in c.get("metadata", {}).get("tags", [])
              for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert not errors, f"{nb_path.name}: cells with errors (only cells tagged raises-exception may raise)"


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_described_widgets_in_saved_state(nb_path):
    """MathJax 3 on the book's pages breaks widgets that carry a description (see diffusion_lab.widgets)."""
    state = _load(nb_path).get("metadata", {}).get("widgets", {})
    state = state.get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    described = [v["model_name"] for v in state.values() if v.get("state", {}).get("description")]
    assert not described, f"{nb_path.name}: widgets with a description: {described}"
    labels = [v for v in state.values() if v["model_name"] in ("LabelModel", "HTMLMathModel")]
    assert not labels, f"{nb_path.name}: Label/HTMLMath widgets are typeset with MathJax 2 calls; use HTML"


def test_widget_state_is_stored_where_widgets_are_shown():
    for nb_path in NOTEBOOKS:
        nb = _load(nb_path)
        shown = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])
                 if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
        state = nb.get("metadata", {}).get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
        for o in shown:
            mid = o["data"]["application/vnd.jupyter.widget-view+json"]["model_id"]
            assert mid in state.get("state", {}), f"{nb_path.name}: widget {mid} shown but its state is not stored"


def test_chapters_keep_the_seeds_chinese_terms():
    expected = {"02_forward_process": "前向过程", "03_reverse_process": "逆向过程", "04_elbo": "变分"}
    for stem, term in expected.items():
        text = (ROOT / "book" / f"{stem}.ipynb").read_text()
        assert term in text, f"{stem}: the seed's term {term} should stand beside the English one"
