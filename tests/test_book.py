"""Facts about the book's sources: table of contents, committed notebooks, bootstrap cells, widget state."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import diffusion_lab

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = ["01_generative_models", "02_forward_process", "03_reverse_process", "04_elbo", "05_training",
            "06_sampling", "07_classifier_guidance", "08_classifier_free_guidance", "09_beyond"]
NOTEBOOKS = sorted((ROOT / "book").glob("[0-9][0-9]_*.ipynb"))
APPENDICES = ["appendix_errata", "appendix_run", "appendix_api"]


def _config_repo_url() -> str:
    text = (ROOT / "_config.yml").read_text()
    m = re.search(r"^repository:\s*\n\s+url:\s*(\S+)", text, re.M)
    assert m, "_config.yml must hold repository.url"
    return m.group(1)


def _load(nb_path: Path) -> dict:
    return json.loads(nb_path.read_text())


def test_toc_lists_the_chapters_in_order():
    toc = (ROOT / "_toc.yml").read_text()
    files = re.findall(r"-\s*file:\s*(\S+)", toc)
    assert files == [f"book/{c}" for c in CHAPTERS + APPENDICES], "the chapters in order, then the appendices"
    for a in APPENDICES:
        assert list((ROOT / "book").glob(f"{a}.*")), f"book/{a} is in the toc but missing"
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
    import tomllib
    urls = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"].get("urls", {})
    assert set(urls.values()) <= {url}, f"pyproject.toml's project.urls must be {url}, got {urls}"
    for nb in NOTEBOOKS:
        first = _load(nb)["cells"][0]
        src = "".join(first["source"])
        assert first["cell_type"] == "code" and "google.colab" in src, f"{nb.name}: first cell must be the Colab bootstrap"
        assert f"git+{url}" in src, f"{nb.name}: bootstrap installs from another URL than _config.yml's {url}"
        assert "remove-cell" in first["metadata"].get("tags", []), f"{nb.name}: bootstrap cell must be hidden"
        assert not re.search(r"pip install[^\n]*\b(torch|numpy)\b", src), "the bootstrap must not reinstall torch/numpy"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_notebook_asks_colab_for_a_gpu(chapter):
    """Colab opens a notebook on the runtime its metadata names (the keys Colab writes itself when saving)."""
    meta = _load(ROOT / "book" / f"{chapter}.ipynb")["metadata"]
    assert meta.get("accelerator") == "GPU", f"{chapter}: metadata.accelerator must be 'GPU' (scripts/nbtools.py ensure_colab_metadata)"
    colab = meta.get("colab", {})
    assert colab.get("gpuType") == "T4", f"{chapter}: metadata.colab.gpuType must name a GPU Colab offers for free"
    assert isinstance(colab.get("provenance"), list)


def test_ensure_colab_metadata_is_idempotent_and_keeps_other_keys():
    import sys
    sys.path.insert(0, str(ROOT / "scripts"))
    import nbformat
    from nbtools import ensure_colab_metadata, new_chapter

    nb = nbformat.v4.new_notebook()
    nb.metadata["colab"] = {"name": "x.ipynb"}
    ensure_colab_metadata(ensure_colab_metadata(nb))
    assert nb.metadata["accelerator"] == "GPU" and nb.metadata["colab"] == {"name": "x.ipynb", "gpuType": "T4", "provenance": []}
    assert new_chapter([]).metadata["accelerator"] == "GPU", "new chapters ask for a GPU from the start"


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_executed_top_to_bottom(nb_path):
    nb = _load(nb_path)
    code = [c for c in nb["cells"] if c["cell_type"] == "code" and "".join(c["source"]).strip()]
    counts = [c["execution_count"] for c in code]
    assert None not in counts, f"{nb_path.name}: run scripts/execute_notebooks.py (unexecuted cells)"
    assert counts == list(range(1, len(code) + 1)), f"{nb_path.name}: not executed top to bottom in one fresh kernel"
    raising = [c for c in code if "raises-exception" in c["metadata"].get("tags", [])]
    errors = [o for c in code if c not in raising for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert not errors, f"{nb_path.name}: cells with errors (only cells tagged raises-exception may raise)"
    silent = [c["execution_count"] for c in raising if not any(o["output_type"] == "error" for o in c.get("outputs", []))]
    assert not silent, f"{nb_path.name}: cells tagged raises-exception that did not raise: {silent}"


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
    expected = {"02_forward_process": ["前向过程", "超参数"], "03_reverse_process": ["逆向过程", "超参数"],
                "04_elbo": ["变分上限", "隐变量模型", "熵"]}
    for stem, terms in expected.items():
        text = (ROOT / "book" / f"{stem}.ipynb").read_text()
        for term in terms:
            assert term in text, f"{stem}: the seed's term {term} should stand beside the English one"


def test_chapter_4_names_the_bound_as_the_seed_does():
    """The bound is an upper bound on the negative log-likelihood: the seed's 变分上限, not a 下界, in the title."""
    cells = _load(ROOT / "book" / "04_elbo.ipynb")["cells"]
    title = next("".join(c["source"]) for c in cells if c["cell_type"] == "markdown").splitlines()[0]
    assert "变分上限" in title and "下界" not in title, title


def test_chapter_times_json_records_measured_chapters():
    """book/chapter_times.json (written by scripts/execute_notebooks.py) feeds the appendix "Run it yourself"."""
    data = json.loads((ROOT / "book" / "chapter_times.json").read_text())
    assert set(data) <= set(CHAPTERS), f"unknown chapters in chapter_times.json: {set(data) - set(CHAPTERS)}"
    for stem, rec in data.items():
        assert set(rec) <= {"cpu", "gpu"} and rec, stem
        for prof, e in rec.items():
            assert e["execute_s"] > 0 and e["date"], (stem, prof)


def test_execute_notebooks_records_times_per_profile(tmp_path):
    import sys
    sys.path.insert(0, str(ROOT / "scripts"))
    import execute_notebooks as ex

    f = tmp_path / "times.json"
    f.write_text(json.dumps({"04_elbo": {"profile": "cpu", "execute_s": 9.0}}))      # an older, flat entry
    ex.record_time(ROOT / "book" / "04_elbo.ipynb", 12.34, [(3, 5.0), (7, 6.5), (9, 0.1)], times_file=f)
    ex.record_time(ROOT / "book" / "04_elbo.ipynb", 2.0, [], times_file=f, profile="gpu")
    rec = json.loads(f.read_text())["04_elbo"]
    assert rec["cpu"]["execute_s"] == 12.3 and rec["gpu"]["execute_s"] == 2.0
    assert [c["cell"] for c in rec["cpu"]["slowest_cells"]] == [7, 3, 9]


def test_api_pages_show_an_unparsable_docstring_verbatim():
    """The API appendix stays -W clean whatever a docstring contains (book/_ext/book_pages.py)."""
    import sys
    sys.path.insert(0, str(ROOT / "book" / "_ext"))
    from book_pages import _safe_docstring

    good = ["Sample x_t ~ q(x_t | x_0), eq. (2.4): see :func:`q_step` and ``noise``.", ""]
    bad = ["Returns a dict with", "  ``terms``  (B, T): one column per step,", "    ``prior`` (B,)", "*unclosed emphasis"]
    g, b = list(good), list(bad)
    _safe_docstring(None, "function", "x", None, {}, g)
    _safe_docstring(None, "function", "x", None, {}, b)
    assert g == good, "valid reST (with Sphinx roles) is left to Sphinx"
    assert b[0] == "::" and b[2:2 + len(bad)] == ["    " + l for l in bad], "invalid reST becomes a literal block"
