"""The chapters' code fits the book's text column (issue 23): `ruff format` at the line length of book/ruff.toml
(the column's width in code characters at 1280 px, which tests/test_book_browser.py measures), and no line of a
shown code cell longer than that — ruff leaves comments and strings alone, so the second check is not redundant."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "book").glob("[0-9][0-9]_*.ipynb"))
LIMIT = int(re.search(r"^line-length\s*=\s*(\d+)", (ROOT / "book" / "ruff.toml").read_text(), re.M).group(1))


def test_the_limit_is_the_measured_column():
    assert 70 <= LIMIT <= 80, "about 77 code characters fit the text column at 1280 px"


def test_ruff_format_is_clean():
    proc = subprocess.run([sys.executable, "-m", "ruff", "format", "--check", *map(str, NOTEBOOKS)], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, f"run `ruff format book/*.ipynb`:\n{proc.stdout}{proc.stderr}"


def long_lines(nb_path: Path) -> list[str]:
    cells = json.loads(nb_path.read_text())["cells"]
    out = []
    for i, cell in enumerate(cells):
        if cell["cell_type"] != "code" or "remove-cell" in cell.get("metadata", {}).get("tags", []):
            continue                                   # the hidden Colab bootstrap is never shown
        for k, line in enumerate("".join(cell["source"]).split("\n")):
            if len(line) > LIMIT:
                out.append(f"cell {i} line {k + 1} ({len(line)} chars): {line.strip()[:60]}")
    return out


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_code_line_wider_than_the_column(nb):
    found = long_lines(nb)
    assert not found, f"{nb.name}: {len(found)} code lines over {LIMIT} characters:\n" + "\n".join(found)
