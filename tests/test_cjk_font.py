"""The self-hosted Noto Sans SC chunks (``_static/fonts/noto-sans-sc/``, from ``scripts/cjk_font.py``) cover every
Chinese character of the book, so no term is drawn as an empty box on a machine without a CJK font."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FONT_DIR = ROOT / "_static" / "fonts" / "noto-sans-sc"


def _script():
    spec = importlib.util.spec_from_file_location("cjk_font", ROOT / "scripts" / "cjk_font.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


cjk_font = _script()


def _committed_faces():
    return cjk_font.font_faces((FONT_DIR / cjk_font.CSS_NAME).read_text(encoding="utf-8"))


def test_every_chinese_character_of_the_book_is_in_a_committed_chunk():
    faces = _committed_faces()
    missing = sorted(ch for ch in cjk_font.book_cjk_chars() if not any(cjk_font.covers(r, ch) for _, r in faces))
    assert not missing, (f"no self-hosted font chunk holds {''.join(missing)!r}: run `python scripts/cjk_font.py` "
                         "and commit _static/fonts/noto-sans-sc/")


def test_the_scan_finds_the_chapter_titles_terms():
    # chapter 5 is "Training (训练)": the scan reads the notebooks' decoded JSON
    chars = cjk_font.book_cjk_chars()
    assert {"训", "练"} <= chars
    assert len(chars) > 50


def test_every_declared_chunk_is_committed_and_the_licence_is_there():
    faces = _committed_faces()
    assert faces, "the stylesheet declares no font face"
    for name, ranges in faces:
        path = FONT_DIR / name
        assert path.is_file(), f"{name} is declared but not committed"
        assert path.read_bytes()[:4] == b"wOF2", f"{name} is not a woff2 file"
        # only CJK code points are claimed, so Latin text keeps the theme's font
        assert ranges == cjk_font.cjk_part(ranges), f"{name} claims code points outside the CJK blocks"
    woff2 = {p.name for p in FONT_DIR.glob("*.woff2")}
    assert woff2 == {n for n, _ in faces}, "a committed chunk no stylesheet names (dead weight)"
    licence = (FONT_DIR / "LICENSE").read_text(encoding="utf-8")
    assert "SIL Open Font License" in licence and "Version 1.1" in licence


def test_the_font_is_served_from_the_books_static_files_only():
    css = (FONT_DIR / cjk_font.CSS_NAME).read_text(encoding="utf-8")
    urls = re.findall(r"url\(([^)]*)\)", css)
    assert urls and all(u.startswith("./") for u in urls), "fonts must be self-hosted, not fetched from a CDN"
    book_css = (ROOT / "_static" / "book.css").read_text(encoding="utf-8")
    assert '"Noto Sans SC"' in book_css
    assert not list((ROOT / "_static").rglob("*.js")), "Jupyter Book injects every .js under _static into every page"


@pytest.mark.parametrize("bad", ["4e00-4e05", "U+4e??"])
def test_parse_ranges_rejects_what_it_cannot_read(bad):
    with pytest.raises(ValueError):
        cjk_font.parse_ranges(bad)


def test_ranges_round_trip_and_cjk_part():
    r = cjk_font.parse_ranges("U+20-7e, U+4e00-4e05,U+ff0c")
    assert r == [(0x20, 0x7E), (0x4E00, 0x4E05), (0xFF0C, 0xFF0C)]
    assert cjk_font.format_ranges(r) == "U+20-7e,U+4e00-4e05,U+ff0c"
    assert cjk_font.cjk_part(r) == [(0x4E00, 0x4E05), (0xFF0C, 0xFF0C)]


def test_build_copies_only_the_chunks_needed(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "files").mkdir(parents=True)
    css = ""
    for i, rng in enumerate(["U+0-7f", "U+4e00-4e0f", "U+8bad-8bad,U+7ec3"]):
        (pkg / "files" / f"c{i}.woff2").write_bytes(b"wOF2" + bytes(i))
        css += f"@font-face {{ src: url(./files/c{i}.woff2) format('woff2'); unicode-range: {rng}; }}\n"
    (pkg / "400.css").write_text(css)
    (pkg / "LICENSE").write_text("SIL Open Font License, Version 1.1")
    out = tmp_path / "out"
    summary = cjk_font.build({"训", "练"}, pkg, out)
    assert summary["chunks"] == 1
    assert sorted(p.name for p in out.iterdir()) == ["LICENSE", "c2.woff2", cjk_font.CSS_NAME]
    with pytest.raises(SystemExit, match="no chunk"):
        cjk_font.build({"丁", "丂", "龟"}, pkg, tmp_path / "out2")
