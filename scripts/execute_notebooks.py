#!/usr/bin/env python
"""Re-execute the book's notebooks in a fresh kernel, in the ``cpu`` profile, storing outputs and widget state.

This is the only way notebooks are saved (GUIDE §4): never hand-save one from a UI.

    python scripts/execute_notebooks.py                 # every chapter in _toc.yml order
    python scripts/execute_notebooks.py book/02_forward_process.ipynb

Before writing, each notebook's metadata is made to ask Colab for a GPU runtime (``nbtools.ensure_colab_metadata``).
Each chapter's wall time, the slowest cells and the machine's load are recorded in ``book/chapter_times.json``
(one entry per chapter and profile, updated in place), which the appendix "Run it yourself" shows. On a GPU machine,

    python scripts/execute_notebooks.py --profile gpu      # times the gpu profile; notebooks are NOT rewritten

records the gpu profile's times without touching the committed (cpu-profile) outputs.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nbtools import ensure_colab_metadata  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TIMES = ROOT / "book" / "chapter_times.json"
LAST_KERNEL_CPU_S: float | None = None    # CPU seconds of the last kernel: what a quiet machine would roughly take


def book_notebooks() -> list[Path]:
    return sorted((ROOT / "book").glob("[0-9][0-9]_*.ipynb"))


def cell_seconds(cell) -> float | None:
    """Execution time of one cell from the timestamps nbclient records (``record_timing``), or None."""
    ex = cell.get("metadata", {}).get("execution", {})
    try:
        start = _dt.datetime.fromisoformat(ex["iopub.execute_input"].replace("Z", "+00:00"))
        end = _dt.datetime.fromisoformat(ex["shell.execute_reply"].replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return None
    return (end - start).total_seconds()


def execute(path: Path, timeout: int = 1200, profile: str = "cpu") -> tuple[float, list[tuple[int, float]]]:
    """Execute one notebook; return its wall time and per-cell seconds [(cell index, s), …].

    In the cpu profile the executed notebook is written back (the committed outputs); in any other profile it is
    only timed."""
    nb = nbformat.read(path, as_version=4)
    os.environ["DIFFUSION_LAB_PROFILE"] = profile
    os.environ.setdefault("PYTHONHASHSEED", "0")
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", store_widget_state=True,
                            record_timing=True, resources={"metadata": {"path": str(path.parent)}})
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    client.execute()                      # starts the kernel, runs every cell, shuts the kernel down (reaped)
    elapsed = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    global LAST_KERNEL_CPU_S
    LAST_KERNEL_CPU_S = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    if profile == "cpu":
        ensure_colab_metadata(nb)
        nbformat.validate(nb)
        nbformat.write(nb, path)
    cells = [(i, s) for i, c in enumerate(nb.cells) if c.cell_type == "code" and (s := cell_seconds(c)) is not None]
    return elapsed, cells


def _device() -> str | None:
    try:
        import torch
        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001 - timing must not fail for want of a device name
        return None


def record_time(path: Path, seconds: float, cells: list[tuple[int, float]], times_file: Path = TIMES,
                profile: str = "cpu", kernel_cpu_s: float | None = None) -> dict:
    """Update the chapter's entry for ``profile`` in the timings JSON and return it."""
    data = json.loads(times_file.read_text()) if times_file.exists() else {}
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = None
    entry = {
        "execute_s": round(seconds, 1),
        "kernel_cpu_s": None if kernel_cpu_s is None else round(kernel_cpu_s, 1),
        "slowest_cells": [{"cell": i, "s": round(s, 1)} for i, s in sorted(cells, key=lambda c: -c[1])[:3]],
        "cpus": os.cpu_count(),
        "load_1min": None if load is None else round(load, 2),
        "machine": platform.machine(),
        "date": _dt.date.today().isoformat(),
    }
    if profile != "cpu" and (dev := _device()):
        entry["device"] = dev
    rec = data.get(path.stem)
    if not isinstance(rec, dict) or "execute_s" in rec:      # missing, or the flat layout of an older version
        rec = data[path.stem] = {}
    rec[profile] = entry
    times_file.write_text(json.dumps(dict(sorted(data.items())), indent=1, ensure_ascii=False) + "\n")
    return entry


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("notebooks", nargs="*", type=Path)
    ap.add_argument("--timeout", type=int, default=1200, help="seconds per cell")
    ap.add_argument("--no-record", action="store_true", help="do not update book/chapter_times.json")
    ap.add_argument("--profile", choices=["cpu", "gpu"], default="cpu",
                    help="cpu (default): execute and save the notebooks; gpu: only time them")
    args = ap.parse_args(argv)
    paths = [p.resolve() for p in args.notebooks] or book_notebooks()
    total = 0.0
    for p in paths:
        dt, cells = execute(p, args.timeout, args.profile)
        total += dt
        if not args.no_record:
            record_time(p, dt, cells, profile=args.profile, kernel_cpu_s=LAST_KERNEL_CPU_S)
        slow = ", ".join(f"cell {i}: {s:.1f} s" for i, s in sorted(cells, key=lambda c: -c[1])[:3])
        print(f"{p.relative_to(ROOT)}: {dt:6.1f} s  (slowest: {slow})", flush=True)
    print(f"total: {total:.1f} s for {len(paths)} notebooks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
