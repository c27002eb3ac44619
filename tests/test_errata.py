"""The errata appendix lists every correction of the seed that a chapter proves, and links only real targets.

A chapter marks the cell that proves a correction with the tags ``erratum`` and ``erratum-NN-slug``; the markdown
cell right before it starts with the MyST target ``(erratum-NN-slug)=``. book/appendix_errata.md has one table row
per correction, its id in backticks in the first column and a ``{ref}`` to the target in the last.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
APPENDIX = ROOT / "book" / "appendix_errata.md"
NOTEBOOKS = sorted((ROOT / "book").glob("[0-9][0-9]_*.ipynb"))
ID = re.compile(r"^erratum-(\d\d)-[a-z0-9]+(?:-[a-z0-9]+)*$")


def _cells(nb_path):
    return json.loads(nb_path.read_text())["cells"]


def _src(cell) -> str:
    return "".join(cell["source"])


def tagged_cells() -> dict[str, tuple[Path, int]]:
    """Every ``erratum-*`` id tag in the chapters -> (notebook, cell index)."""
    found = {}
    for nb in NOTEBOOKS:
        for i, c in enumerate(_cells(nb)):
            for tag in c.get("metadata", {}).get("tags", []):
                if tag.startswith("erratum-"):
                    assert tag not in found, f"{tag} tags two cells: {found[tag]} and {(nb.name, i)}"
                    found[tag] = (nb, i)
    return found


def defined_targets() -> dict[str, Path]:
    """Every MyST target ``(erratum-*)=`` defined in a chapter's markdown."""
    out = {}
    for nb in NOTEBOOKS:
        for c in _cells(nb):
            if c["cell_type"] == "markdown":
                for m in re.finditer(r"^\((erratum-[^)]+)\)=\s*$", _src(c), re.M):
                    out[m.group(1)] = nb
    return out


def table_rows() -> list[tuple[str, str]]:
    """(id, the row's text) for each row of the appendix's table."""
    rows = []
    for line in APPENDIX.read_text().splitlines():
        m = re.match(r"^\|\s*`(erratum-[^`]+)`\s*\|", line)
        if m:
            rows.append((m.group(1), line))
    return rows


def test_the_appendix_has_a_table():
    assert len(table_rows()) >= 10, "the errata table lists the corrections of chapters 2-4 at least"


def test_every_tagged_erratum_cell_is_listed():
    listed = {i for i, _ in table_rows()}
    missing = sorted(set(tagged_cells()) - listed)
    assert not missing, f"erratum cells not in book/appendix_errata.md (add one row each): {missing}"


def test_every_listed_erratum_links_a_target_a_chapter_defines():
    targets = defined_targets()
    for rid, row in table_rows():
        assert ID.match(rid), f"{rid}: ids look like erratum-NN-slug"
        refs = re.findall(r"\{ref\}`[^`<]*<([^>]+)>`", row)
        assert refs == [rid], f"{rid}: the row must link its own target with {{ref}}`text <{rid}>`, found {refs}"
        assert rid in targets, f"{rid}: listed in the appendix but no chapter defines the target ({rid})="
        assert targets[rid].name.startswith(rid.split("-")[1]), f"{rid}: defined in {targets[rid].name}, not chapter {rid.split('-')[1]}"
        assert len([c for c in row.split("|") if c.strip()]) == 4, f"{rid}: a row has four columns"


def test_ids_are_unique_in_the_table():
    ids = [i for i, _ in table_rows()]
    assert len(ids) == len(set(ids)), "an id is listed twice"


@pytest.mark.parametrize("rid", sorted(tagged_cells()))
def test_tagged_cell_follows_its_target_and_carries_both_tags(rid):
    nb, i = tagged_cells()[rid]
    cells = _cells(nb)
    assert ID.match(rid), f"{nb.name}: {rid} does not look like erratum-NN-slug"
    assert nb.name.startswith(rid.split("-")[1]), f"{rid} lives in {nb.name}: NN must be the chapter number"
    cell = cells[i]
    assert cell["cell_type"] == "code" and "erratum" in cell["metadata"]["tags"], f"{rid}: tag the proving code cell with 'erratum' too"
    prev = cells[i - 1]
    assert prev["cell_type"] == "markdown" and _src(prev).startswith(f"({rid})="), (
        f"{nb.name}: the markdown cell before the {rid} cell must start with the target line ({rid})=")
