"""How live is the live sampler? Time from click to 16 samples in headless chromium, against Python, same run.

    python benchmarks/live_sampler.py [--page book/06_sampling.html] [--repeats 3] [--json out.json]

Needs the built book (``jupyter-book build .``), chromium, playwright and ``bash scripts/fetch_offline_assets.sh``
(onnxruntime-web is served from ``.offline`` like in tests/test_live_browser.py: nothing leaves the machine).

Measures, on the first page of the book that holds the live sampler (or ``--page``):

* **first click**: a fresh page, DDIM-50 with CFG (w = 2) for 16 digits, 0–9 in turn, from the click to the
  samples drawn — loading onnxruntime-web, its wasm and the model included;
* **warm clicks**: DDIM-20 and DDIM-50 with CFG, the same 16 digits, the median of ``--repeats`` clicks;
* **Python**: ``ddim_sample`` with ``ClassifierFreeGuidance(2.0)`` on the torch model, the same 16 labels, the
  median of ``--repeats`` runs, with torch's default threads and with one thread (the page's wasm runs on one),
  and the ratios browser / Python.

The widget draws its frames while it samples (at most ~10 a second); that drawing is part of the browser's time.
A benchmark, not a test: the numbers depend on the machine and its load (printed with them).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def python_times(steps_list, repeats, threads=None):
    import torch

    default_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)

    from diffusion_lab import pretrained
    from diffusion_lab.guidance import ClassifierFreeGuidance
    from diffusion_lab.sampling import ddim_sample

    model, schedule = pretrained.load("digits-cond")
    y = torch.arange(16) % 10
    out = {}
    for steps in steps_list:
        ddim_sample(model, schedule, (16, 1, 8, 8), steps=steps, y=y, guidance=ClassifierFreeGuidance(2.0),
                    generator=torch.Generator().manual_seed(0), progress=False)      # warm-up
        ts = []
        for r in range(repeats):
            t0 = time.perf_counter()
            ddim_sample(model, schedule, (16, 1, 8, 8), steps=steps, y=y, guidance=ClassifierFreeGuidance(2.0),
                        generator=torch.Generator().manual_seed(r), progress=False)
            ts.append(time.perf_counter() - t0)
        out[steps] = statistics.median(ts)
    used = torch.get_num_threads()
    torch.set_num_threads(default_threads)
    return out, used


def browser_times(page_path, steps_list, repeats):
    from playwright.sync_api import sync_playwright
    from test_live_browser import HTML, _chapters_with_live_sampler, _serve, open_page, CHROMIUM

    if page_path is None:
        chapters = _chapters_with_live_sampler()
        if not chapters:
            raise SystemExit("no chapter holds the live sampler: pass --page")
        page_path = f"book/{chapters[0]}.html"
    httpd, url = _serve(HTML)
    res = {"page": page_path}
    try:
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"])

            def click(page, box, steps, seed):
                box.locator("[aria-label='sampler']").select_option("ddim")
                for label, value in (("DDIM steps", steps), ("guidance w", 2), ("seed", seed)):
                    c = box.locator(f"[aria-label='{label}']")
                    c.fill(str(value))
                    c.dispatch_event("input")
                box.locator("[aria-label='digit']").select_option("all")
                done = int(box.get_attribute("data-done") or 0)
                t0 = time.perf_counter()
                box.locator("button.dl-go").click()
                page.wait_for_function("([el, n]) => +(el.dataset.done || 0) > n || el.dataset.error",
                                       arg=[box.element_handle(), done], timeout=300_000)
                wall = time.perf_counter() - t0
                if box.get_attribute("data-error"):
                    raise RuntimeError(box.get_attribute("data-error"))
                return wall, float(box.get_attribute("data-ms")) / 1000

            page, errors, blocked = open_page(b, f"{url}/{page_path}")
            page.wait_for_selector(".dl-live", timeout=60_000)
            box = page.locator(".dl-live").first
            box.scroll_into_view_if_needed()
            res["first_click_ddim50_s"], res["first_click_ddim50_in_page_s"] = click(page, box, 50, 0)
            for steps in steps_list:
                walls = [click(page, box, steps, r + 1)[0] for r in range(repeats)]
                res[f"warm_ddim{steps}_s"] = statistics.median(walls)
            if errors or blocked:
                raise RuntimeError(f"console errors {errors} or outside requests {blocked}")
            b.close()
    finally:
        httpd.shutdown()
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--page", default=None, help="the page, relative to _build/html (default: first chapter with it)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args(argv)
    steps_list = (20, 50)
    br = browser_times(args.page, steps_list, args.repeats)
    py, threads = python_times(steps_list, args.repeats)
    py1, _ = python_times(steps_list, args.repeats, threads=1)
    res = {**br, "python_threads": threads, "cpus": os.cpu_count(), "load_1min": round(os.getloadavg()[0], 2)}
    for s in steps_list:
        res[f"python_ddim{s}_s"], res[f"python_1thread_ddim{s}_s"] = py[s], py1[s]
        res[f"ratio_ddim{s}_browser_over_python"] = br[f"warm_ddim{s}_s"] / py[s]
        res[f"ratio_ddim{s}_browser_over_python_1thread"] = br[f"warm_ddim{s}_s"] / py1[s]
    print(f"page {res['page']}  ({res['cpus']} CPUs, load {res['load_1min']})")
    print(f"first click, DDIM-50 + CFG, 16 digits: {res['first_click_ddim50_s']:.2f} s (loading included)")
    for s in steps_list:
        print(f"DDIM-{s} + CFG, 16 digits: browser {br[f'warm_ddim{s}_s']:.2f} s; Python {py[s]:.2f} s "
              f"({threads} threads, ratio {res[f'ratio_ddim{s}_browser_over_python']:.2f}), "
              f"{py1[s]:.2f} s (1 thread, ratio {res[f'ratio_ddim{s}_browser_over_python_1thread']:.2f})")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    return res


if __name__ == "__main__":
    main()
