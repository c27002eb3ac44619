"""Every glued figure the prose pastes exists in the executed notebook it names, and its format renders it.

Jupyter Book only warns (and ``-W`` fails the whole build) when a key is missing; this finds it without a build, names
the page and the key, and checks what a build cannot: that a format spec suits the stored value.
A role is ``{glue:text}`key:fmt``` (same notebook) or ``{glue:text}`other.ipynb::key:fmt``` (another page, which
needs an explicit format: myst-nb splits the format at the last colon).
"""
from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
PAGES = sorted(BOOK.glob("[0-9][0-9]_*.ipynb")) + sorted(BOOK.glob("*.md"))
ROLE = re.compile(r"\{glue(?::(\w+))?\}`([^`]*)`")
PREFIX = "application/papermill.record/"


def glued(nb_path: Path) -> dict[str, str]:
    """{key: stored text/plain} of every glue output in an executed notebook."""
    out = {}
    for cell in json.loads(nb_path.read_text())["cells"]:
        for o in cell.get("outputs", []):
            name = o.get("metadata", {}).get("scrapbook", {}).get("name")
            if name is not None:
                out[name] = o.get("data", {}).get(PREFIX + "text/plain", o.get("data", {}).get("text/plain"))
    return out


def references(page: Path) -> list[tuple[str, str, str | None, str]]:
    """(role, doc, key, format) for each glue role in a page's markdown."""
    if page.suffix == ".md":
        texts = [page.read_text()]
    else:
        texts = ["".join(c["source"]) for c in json.loads(page.read_text())["cells"] if c["cell_type"] == "markdown"]
    refs = []
    for text in texts:
        for m in ROLE.finditer(text):
            role, content = m.group(1) or "any", m.group(2)
            if "::" in content:
                doc, rest = content.split("::", 1)
            else:
                doc, rest = page.name, content
            key, fmt = rest.rsplit(":", 1) if (role == "text" and ":" in rest) else (rest, None)
            refs.append((role, doc, key, fmt))
    return refs


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_glue_reference_resolves(page):
    problems = []
    cache: dict[str, dict[str, str]] = {}
    for role, doc, key, fmt in references(page):
        target = (page.parent / doc)
        if target.suffix != ".ipynb" or not target.exists():
            problems.append(f"{doc}::{key}: no notebook {doc} beside {page.name}")
            continue
        keys = cache.setdefault(doc, glued(target))
        if doc != page.name and fmt is None and role == "text":
            problems.append(f"{doc}::{key}: a cross-page glue:text needs a format (`{doc}::{key}:.2f`)")
        if key not in keys:
            problems.append(f"{doc}::{key}: no such glued key in the executed {doc}")
            continue
        if fmt and fmt != "s":
            try:
                format(ast.literal_eval(keys[key]), fmt)
            except (ValueError, TypeError, SyntaxError) as exc:
                problems.append(f"{doc}::{key}: format {fmt!r} does not render {keys[key]!r} ({exc})")
    assert not problems, f"{page.name}:\n" + "\n".join(problems)


def test_a_missing_key_and_a_bad_format_are_found(tmp_path):
    nb = {"cells": [{"cell_type": "code", "source": "", "metadata": {}, "execution_count": 1, "outputs": [
        {"output_type": "display_data", "metadata": {"scrapbook": {"name": "k", "mime_prefix": PREFIX}},
         "data": {PREFIX + "text/plain": "'text'"}}]}], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (tmp_path / "a.ipynb").write_text(json.dumps(nb))
    page = tmp_path / "p.md"
    page.write_text("{glue:text}`a.ipynb::k:.2f` and {glue:text}`a.ipynb::gone:.1f` and {glue:text}`a.ipynb::k`")
    assert references(page) == [("text", "a.ipynb", "k", ".2f"), ("text", "a.ipynb", "gone", ".1f"),
                                ("text", "a.ipynb", "k", None)]
    with pytest.raises(AssertionError) as err:
        test_every_glue_reference_resolves(page)
    assert "does not render" in str(err.value) and "no such glued key" in str(err.value)
    assert "needs a format" in str(err.value)
