"""Self-host the few chunks of Noto Sans SC that the book's Chinese terms need.

The pages name the tutorial's Chinese term beside each key term, titles included; a reader's machine without a CJK
font would draw empty boxes. ``@fontsource/noto-sans-sc`` (npm, SIL Open Font License 1.1) ships Noto Sans SC cut
into ~100 woff2 chunks by unicode-range. This script reads every CJK character of the book's sources (chapters,
pages, and the package's docstrings, which Appendix C shows), and copies into ``_static/fonts/noto-sans-sc/`` only
the regular-weight chunks that hold them, unmodified, with an ``@font-face`` stylesheet that declares each chunk's
CJK code points and the font's licence. The browser then downloads, per page, only the chunks whose characters
that page shows. The files are committed, so building the book needs no npm; run this again after adding a Chinese
term (``tests/test_cjk_font.py`` fails until then):

    python scripts/cjk_font.py            # fetches the npm package into .offline/ when it is missing
    python scripts/cjk_font.py --also /path/to/more.txt   # also cover the characters of other files
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "@fontsource/noto-sans-sc"
VERSION = "5.3.1"
NPM_DIR = ROOT / ".offline" / "node_modules" / "@fontsource" / "noto-sans-sc"
OUT = ROOT / "_static" / "fonts" / "noto-sans-sc"
CSS_NAME = "noto-sans-sc.css"
WEIGHT = 400
FAMILY = "Noto Sans SC"

# Code points drawn with the CJK font: radicals, CJK punctuation, kana, bopomofo, enclosed/compatibility forms,
# the unified ideographs (with extension A), compatibility ideographs, vertical forms and the full-width forms
# (，（）：). Everything else (Latin letters, dashes, quotes) stays in the theme's own font.
CJK_BLOCKS = ((0x2E80, 0x2FDF), (0x3000, 0x33FF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF),
              (0xFE30, 0xFE4F), (0xFF00, 0xFFEF))
CJK = re.compile("[" + "".join(f"\\u{a:04x}-\\u{b:04x}" for a, b in CJK_BLOCKS) + "]")


def source_files(root: Path = ROOT) -> list[Path]:
    """Every file whose text reaches the built pages: chapters, Markdown/reST pages, TOC and package docstrings."""
    book = root / "book"
    files = sorted(book.glob("*.ipynb")) + sorted(book.glob("*.md")) + sorted(book.glob("*.rst"))
    files += sorted((root / "diffusion_lab").rglob("*.py")) + sorted((book / "_ext").glob("*.py"))
    files += [root / "_toc.yml", root / "_config.yml"]
    return [f for f in files if f.is_file()]


def text_of(path: Path) -> str:
    """A file's text; a notebook's JSON is decoded, so escaped characters (\\u8bad) count too."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".ipynb":
        text = json.dumps(json.loads(text), ensure_ascii=False)
    return text


def cjk_chars(paths) -> set[str]:
    chars: set[str] = set()
    for p in paths:
        chars |= set(CJK.findall(text_of(Path(p))))
    return chars


def book_cjk_chars(root: Path = ROOT) -> set[str]:
    return cjk_chars(source_files(root))


def parse_ranges(text: str) -> list[tuple[int, int]]:
    """``U+4e00-4e05,U+4e07`` -> [(0x4e00, 0x4e05), (0x4e07, 0x4e07)]."""
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if not part.upper().startswith("U+"):
            raise ValueError(f"not a unicode-range item: {part!r}")
        lo, _, hi = part[2:].partition("-")
        if "?" in lo:
            raise ValueError(f"wildcard ranges are not supported: {part!r}")
        out.append((int(lo, 16), int(hi or lo, 16)))
    return out


def format_ranges(ranges: list[tuple[int, int]]) -> str:
    return ",".join(f"U+{a:x}" if a == b else f"U+{a:x}-{b:x}" for a, b in ranges)


def font_faces(css: str) -> list[tuple[str, list[tuple[int, int]]]]:
    """(woff2 file name, unicode ranges) of every ``@font-face`` in a stylesheet."""
    faces = []
    for block in re.findall(r"@font-face\s*\{([^}]*)\}", css):
        src = re.search(r"url\((?:\./)?(?:files/)?([^)]+?\.woff2)\)", block)
        rng = re.search(r"unicode-range:\s*([^;]+);", block)
        if src and rng:
            faces.append((src.group(1), parse_ranges(rng.group(1))))
    return faces


def covers(ranges: list[tuple[int, int]], ch: str) -> bool:
    o = ord(ch)
    return any(a <= o <= b for a, b in ranges)


def cjk_part(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The part of `ranges` inside CJK_BLOCKS."""
    out = []
    for a, b in ranges:
        for lo, hi in CJK_BLOCKS:
            x, y = max(a, lo), min(b, hi)
            if x <= y:
                out.append((x, y))
    return sorted(out)


def ensure_package() -> Path:
    if not (NPM_DIR / f"{WEIGHT}.css").is_file():
        subprocess.run(["npm", "install", "--silent", "--no-audit", "--no-fund", "--prefix", str(ROOT / ".offline"),
                        f"{PACKAGE}@{VERSION}"], check=True)
    version = json.loads((NPM_DIR / "package.json").read_text())["version"]
    if version != VERSION:
        raise SystemExit(f"{NPM_DIR} holds {PACKAGE} {version}, this script pins {VERSION}: "
                         f"`npm install --prefix .offline {PACKAGE}@{VERSION}`")
    return NPM_DIR


def build(chars: set[str], package: Path, out: Path = OUT) -> dict:
    """Copy the chunks covering `chars` and write their stylesheet; return a summary."""
    faces = [(f, r) for f, r in font_faces((package / f"{WEIGHT}.css").read_text()) if cjk_part(r)]
    chosen: dict[str, list[tuple[int, int]]] = {}
    missing = []
    for ch in sorted(chars):
        hit = next((f for f, r in faces if covers(cjk_part(r), ch)), None)
        if hit is None:
            missing.append(ch)
        else:
            chosen[hit] = cjk_part(dict(faces)[hit])
    if missing:
        raise SystemExit(f"{PACKAGE} {VERSION} has no chunk for: {''.join(missing)}")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    order = [f for f, _ in faces if f in chosen]
    header = (f"/* {FAMILY} ({PACKAGE} {VERSION}, SIL Open Font License 1.1: see LICENSE here), the {len(order)} "
              f"of its {len(faces)} CJK chunks\n   that hold the book's {len(chars)} CJK characters. Generated by "
              f"scripts/cjk_font.py; do not edit. */")
    rules = [header]
    for f in order:
        shutil.copyfile(package / "files" / f, out / f)
        rules.append("@font-face {\n"
                     f"  font-family: '{FAMILY}';\n  font-style: normal;\n  font-display: swap;\n"
                     f"  font-weight: {WEIGHT};\n  src: url(./{f}) format('woff2');\n"
                     f"  unicode-range: {format_ranges(chosen[f])};\n}}")
    (out / CSS_NAME).write_text("\n".join(rules) + "\n")
    shutil.copyfile(package / "LICENSE", out / "LICENSE")
    size = sum((out / f).stat().st_size for f in order)
    return {"chars": len(chars), "chunks": len(order), "bytes": size}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--also", nargs="*", default=[], type=Path, help="more files whose CJK characters to cover")
    args = ap.parse_args(argv)
    for p in args.also:
        if not p.is_file():
            ap.error(f"--also: no such file: {p}")
    chars = book_cjk_chars() | cjk_chars(args.also)
    summary = build(chars, ensure_package())
    print(f"{summary['chunks']} chunks, {summary['bytes']:,} bytes, for {summary['chars']} CJK characters "
          f"-> {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
