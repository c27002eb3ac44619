"""Summarise what the browser test measured on the built pages (``_build/browser/readable.json``).

    python -m pytest -o addopts="" tests/test_book_browser.py -k readable   # writes the measurements
    python scripts/readable_report.py [--width 1280]

Prints, per page: the display equations wider than their column at that width (the ones to split with
``aligned``), the code cells and printed outputs that need horizontal scrolling, the code column in characters,
and the page weight (bytes of every file the page requested, as stored and gzipped; the Noto Sans SC chunks
separately).
"""
from __future__ import annotations

import argparse
import gzip
import json
import re
import sys
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "_build" / "browser" / "readable.json"
HTML = ROOT / "_build" / "html"
NODE_MODULES = ROOT / ".offline" / "node_modules"
CDN_NPM = re.compile(r"https://cdn\.jsdelivr\.net/npm/((?:@[^/]+/)?[^@/]+)(?:@[^/]+)?/(.*)")


def local_file(url: str) -> Path | None:
    """The file a requested URL stands for: the built site, or the npm package a CDN URL names."""
    url = url.split("?")[0].split("#")[0]
    m = CDN_NPM.match(url)
    if m:
        p = NODE_MODULES / m.group(1) / m.group(2)
    elif url.startswith("http://127.0.0.1"):
        p = HTML / urlparse(url).path.lstrip("/")
    else:
        return None
    return p if p.is_file() else None


COMPRESSIBLE = {".html", ".js", ".css", ".svg", ".json", ".txt", ".ttf", ".woff", ""}


def gzipped(p: Path) -> int:
    """Bytes over the wire from a server that gzips text (fonts in woff2 and images are sent as they are)."""
    if p.suffix not in COMPRESSIBLE:
        return p.stat().st_size
    return len(gzip.compress(p.read_bytes(), 6))


def weight(urls: list[str]) -> tuple[int, int, int, list[str]]:
    total = wire = fonts = 0
    unknown = []
    for u in dict.fromkeys(urls):          # each file once, as a browser cache would
        if u.startswith("data:"):
            continue
        p = local_file(u)
        if p is None:
            unknown.append(u)
            continue
        n = p.stat().st_size
        total += n
        wire += gzipped(p)
        if p.suffix in (".woff2", ".woff", ".ttf") and "noto-sans-sc" in p.name:
            fonts += n
    return total, wire, fonts, unknown


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--width", type=int, default=1280)
    args = ap.parse_args(argv)
    if not REPORT.is_file():
        ap.error(f"{REPORT} is missing: run the browser test first")
    data = json.loads(REPORT.read_text())
    w = str(args.width)
    print(f"## Display equations wider than their column at {w} px\n")
    print("| page | equation | section | width px | column px | TeX (start) |")
    print("|---|---|---|---|---|---|")
    n_wide = n_eq = 0
    for page, rep in data.items():
        if w not in rep:
            continue
        for e in rep[w]["equations"]:
            n_eq += 1
            if e["width"] > e["room"] + 1:
                n_wide += 1
                tex = e["tex"].replace("|", "\\|")[:60]
                print(f"| {page} | {e['tag'] or '(unnumbered)'} | {e['section']} | {e['width']:.0f} | "
                      f"{e['room']:.0f} | `{tex}` |")
    print(f"\n{n_wide} of {n_eq} display equations are wider than their column at {w} px.\n")
    print(f"## Code at {w} px, and page weight\n")
    print("| page | code cells scrolling | outputs scrolling | other code scrolling | code column (chars) "
          "| page weight | gzipped | of it Noto Sans SC |")
    print("|---|---|---|---|---|---|---|---|")
    for page, rep in data.items():
        if w not in rep:
            continue
        m = rep[w]
        total, wire, fonts, unknown = weight(rep.get("requested", []))
        cc = f"{m['code_chars']:.1f}" if m.get("code_chars") else "-"
        c = {k: f"{sum(b['scrolls'] for b in m[k])} / {len(m[k])}" for k in ("code", "outputs", "other_code")}
        print(f"| {page} | {c['code']} | {c['outputs']} | {c['other_code']} | {cc} | "
              f"{total / 1e6:.2f} MB | {wire / 1e6:.2f} MB | {fonts / 1e3:.0f} kB |"
              + (f" {len(unknown)} requests for missing files" if unknown else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
