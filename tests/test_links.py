"""Every relative link and #anchor of the built book resolves (offline; no network).

Needs the built book (``jupyter-book build . -W --keep-going``): skipped with a message when _build/html is
missing, except under CI (``CI`` set), where that is a failure, as in tests/test_book_browser.py.
"""
from __future__ import annotations

import os
from functools import lru_cache
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
ATTRS = {"a": "href", "link": "href", "img": "src", "script": "src", "iframe": "src", "source": "src"}
SKIP_DIRS = {"_sources", "_static", "_images", "_downloads"}     # Sphinx's copies and assets, not pages


class _Page(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.links: list[tuple[str, str]] = []   # (tag, url)
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        d = dict(attrs)
        for key in ("id", "name"):
            if d.get(key):
                self.ids.add(d[key])
        url = d.get(ATTRS.get(tag, ""), None)
        if url:
            self.links.append((tag, url))


@lru_cache(maxsize=None)
def _parse(path: Path) -> _Page:
    p = _Page()
    p.feed(path.read_text(encoding="utf-8", errors="replace"))
    return p


def _pages() -> list[Path]:
    if not (HTML / "index.html").exists():
        why = f"the book is not built ({HTML / 'index.html'} missing): run `jupyter-book build . -W --keep-going`"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    return sorted(p for p in HTML.rglob("*.html") if not SKIP_DIRS & set(p.relative_to(HTML).parts))


def broken_links(page: Path) -> list[str]:
    """The relative links and anchors of one built page that do not resolve."""
    bad = []
    for tag, url in _parse(page).links:
        parts = urlsplit(url)
        if parts.scheme or url.startswith("//") or url.startswith("data:"):
            continue                                   # external (http, https, mailto, javascript): not checked
        target = page if not parts.path else (page.parent / unquote(parts.path)).resolve()
        if target.is_dir():
            target = target / "index.html"
        if not target.exists():
            bad.append(f"{url} -> {target} does not exist")
            continue
        frag = unquote(parts.fragment)
        if frag and tag == "a" and target.suffix == ".html" and frag not in _parse(target).ids:
            bad.append(f"{url} -> no id {frag!r} in {target.name}")
    return bad


def test_every_relative_link_and_anchor_resolves():
    pages = _pages()
    assert len(pages) >= 4
    report = {str(p.relative_to(HTML)): b for p in pages if (b := broken_links(p))}
    assert not report, "broken internal links:\n" + "\n".join(f"{k}: {v}" for k, v in report.items())


def test_the_checker_finds_a_broken_link_and_anchor(tmp_path):
    (tmp_path / "a.html").write_text('<p id="here"></p><a href="b.html#nowhere">x</a><a href="#here">ok</a>'
                                     '<a href="c.html">y</a><a href="https://example.org/z">ext</a>')
    (tmp_path / "b.html").write_text('<h1 id="top">b</h1>')
    bad = broken_links(tmp_path / "a.html")
    assert len(bad) == 2 and "nowhere" in bad[0] and "c.html" in bad[1]


def test_the_appendices_are_built():
    pages = {p.relative_to(HTML).as_posix() for p in _pages()}
    for name in ("appendix_errata", "appendix_run", "appendix_api"):
        assert f"book/{name}.html" in pages, f"{name} is not in the built book"
