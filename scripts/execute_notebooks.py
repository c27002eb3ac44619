#!/usr/bin/env python
"""Re-execute the book's notebooks in a fresh kernel, in the ``cpu`` profile, storing outputs and widget state.

This is the only way notebooks are saved (GUIDE §4): never hand-save one from a UI.

    python scripts/execute_notebooks.py                 # every chapter in _toc.yml order
    python scripts/execute_notebooks.py book/02_forward_process.ipynb
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]


def book_notebooks() -> list[Path]:
    return sorted((ROOT / "book").glob("[0-9][0-9]_*.ipynb"))


def execute(path: Path, timeout: int = 1200) -> float:
    nb = nbformat.read(path, as_version=4)
    os.environ["DIFFUSION_LAB_PROFILE"] = "cpu"
    os.environ.setdefault("PYTHONHASHSEED", "0")
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", store_widget_state=True,
                            resources={"metadata": {"path": str(path.parent)}})
    t0 = time.perf_counter()
    client.execute()
    elapsed = time.perf_counter() - t0
    nbformat.validate(nb)
    nbformat.write(nb, path)
    return elapsed


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("notebooks", nargs="*", type=Path)
    ap.add_argument("--timeout", type=int, default=1200, help="seconds per cell")
    args = ap.parse_args(argv)
    paths = [p.resolve() for p in args.notebooks] or book_notebooks()
    total = 0.0
    for p in paths:
        dt = execute(p, args.timeout)
        total += dt
        print(f"{p.relative_to(ROOT)}: {dt:6.1f} s", flush=True)
    print(f"total: {total:.1f} s for {len(paths)} notebooks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
