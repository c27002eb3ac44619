"""The built book in a real browser: the kernel-free scrubbers change the image, the maths renders, and every page
is readable at 1280, 800 and 390 px (nothing clipped, Chinese terms in the self-hosted font, code fits the column).

Needs the built HTML (``jupyter-book build .``), Debian's ``chromium``, ``pip install playwright`` and the
npm packages from ``scripts/fetch_offline_assets.sh``. The pages load the widget manager, require.js and
MathJax from CDNs; this machine may be offline, so the test answers those requests from the local npm
packages (same versions) and blocks every other outside request. Skipped with a message when a piece is
missing, except under CI (``CI`` set), where a missing piece is a failure.
"""
from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
NODE_MODULES = ROOT / ".offline" / "node_modules"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = ROOT / "_build" / "browser"


def _missing() -> str | None:
    if not (HTML / "book" / "02_forward_process.html").exists():
        return "the book is not built: run `jupyter-book build . -W --keep-going`"
    if not Path(CHROMIUM).exists():
        return "chromium not found: `apt-get install chromium`"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright not installed: `pip install playwright`"
    if not (NODE_MODULES / "@jupyter-widgets" / "html-manager").exists():
        return "offline JavaScript missing: `bash scripts/fetch_offline_assets.sh`"
    return None


def _require():
    why = _missing()
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"browser test cannot run under CI: {why}")
        pytest.skip(why)


@pytest.fixture(scope="module")
def server():
    _require()
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(HTML))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


CDN_NPM = re.compile(r"https://cdn\.jsdelivr\.net/npm/((?:@[^/]+/)?[^@/]+)(?:@[^/]+)?/(.*)")


def _local_asset(url: str) -> Path | None:
    url = url.split("?")[0]
    m = CDN_NPM.match(url)
    if m:
        path = NODE_MODULES / m.group(1) / m.group(2)
        return path if path.is_file() else None
    return None


@pytest.fixture(scope="module")
def browser():
    _require()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        yield b
        b.close()


CONTENT_TYPES = {".js": "application/javascript", ".mjs": "application/javascript", ".css": "text/css",
                 ".wasm": "application/wasm", ".json": "application/json"}


def _open(browser, url, blocked, requested: list[str] | None = None):
    page = browser.new_page(viewport={"width": 1280, "height": 1600})
    if requested is not None:
        page.on("request", lambda r: requested.append(r.url))

    def route(r):
        u = r.request.url
        if u.startswith("http://127.0.0.1"):
            return r.continue_()
        local = _local_asset(u)
        if local is not None:
            return r.fulfill(path=str(local), content_type=CONTENT_TYPES.get(local.suffix))
        blocked.append(u)
        return r.abort()

    page.route("**/*", route)
    errors = []
    # sphinx-thebe 0.3.1 writes its config <script> twice into every page (an upstream bug, harmless); any
    # other script error fails the test.
    page.on("pageerror", lambda e: None if "THEBE_JS_URL" in str(e) else errors.append(str(e)))
    page.goto(url, wait_until="load")
    return page, errors


def _scrubbers(page):
    page.wait_for_selector(".widget-hslider", timeout=30_000)
    return page.locator(".widget-vbox").filter(has=page.locator(".widget-hslider")).filter(has=page.locator("img"))


def _chapters_with_scrubbers() -> list[str]:
    """Chapters whose committed notebook holds a scrubber (a SelectionSlider linked to a Stack)."""
    import json

    names = []
    for nb in sorted((ROOT / "book").glob("[0-9][0-9]_*.ipynb")):
        state = json.loads(nb.read_text()).get("metadata", {}).get("widgets", {})
        state = state.get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
        kinds = {v.get("model_name") for v in state.values()}
        if {"SelectionSliderModel", "StackModel", "LinkModel"} <= kinds:
            names.append(nb.stem)
    return names


def test_chapter_2_has_scrubbers():
    assert "02_forward_process" in _chapters_with_scrubbers()


def _check_scrubber(page, box, shot_prefix):
    box.scroll_into_view_if_needed()
    readout = box.locator(".widget-readout")
    image = box.locator("img:visible")
    assert image.count() == 1, "exactly one frame of the stack should be visible"
    before_label = readout.inner_text().strip()
    before_src = image.get_attribute("src")
    before_shot = image.screenshot(path=str(SHOTS / f"{shot_prefix}_before.png"))
    handle = box.locator(".noUi-handle").first
    handle.focus()
    for _ in range(3):
        page.keyboard.press("ArrowRight")
    page.wait_for_function("([el, old]) => el.innerText.trim() !== old", arg=[readout.element_handle(), before_label],
                           timeout=5_000)
    # The Stack swaps its child asynchronously: wait for another frame to show.
    page.wait_for_function("([box, old]) => { const im = Array.from(box.querySelectorAll('img'))"
                           ".filter(i => i.offsetParent !== null); return im.length === 1 && im[0].src !== old; }",
                           arg=[box.element_handle(), before_src], timeout=5_000)
    after_shot = box.locator("img:visible").screenshot(path=str(SHOTS / f"{shot_prefix}_after.png"))
    assert after_shot != before_shot, "moving the slider must show another picture"
    box.screenshot(path=str(SHOTS / f"{shot_prefix}_box.png"))
    return before_label, readout.inner_text().strip()


@pytest.mark.parametrize("chapter", _chapters_with_scrubbers())
def test_scrubbers_change_image_without_kernel(server, browser, chapter):
    blocked: list[str] = []
    page, errors = _open(browser, f"{server}/book/{chapter}.html", blocked)
    boxes = _scrubbers(page)
    n = boxes.count()
    assert n >= 1, f"{chapter}: no scrubber rendered"
    SHOTS.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        before, after = _check_scrubber(page, boxes.nth(i), f"{chapter}_{i}")
        assert before != after
    assert not errors, errors


def test_scrubber_play_button_animates(server, browser):
    blocked: list[str] = []
    page, errors = _open(browser, f"{server}/book/02_forward_process.html", blocked)
    box = _scrubbers(page).first
    box.scroll_into_view_if_needed()
    readout = box.locator(".widget-readout")
    assert readout.inner_text().strip() == "t=0"
    box.locator(".widget-play button").first.click()
    page.wait_for_function("(el) => el.innerText.trim() === 't=50'", arg=readout.element_handle(), timeout=10_000)
    assert not errors, errors


def test_math_renders(server, browser):
    blocked: list[str] = []
    page, errors = _open(browser, f"{server}/book/02_forward_process.html", blocked)
    page.wait_for_selector("mjx-container", state="attached", timeout=30_000)
    assert page.locator("mjx-container").count() > 20
    assert not errors, errors


# ---------------------------------------------------------------------------------------------------------------
# Readable on the page (issue 23): display equations are never clipped, code fits the column, the Chinese terms
# render with the self-hosted Noto Sans SC. Every page of the table of contents, at three window widths.
# ---------------------------------------------------------------------------------------------------------------

WIDTHS = (1280, 800, 390)
# Code cells (input) that may need horizontal scrolling at 1280 px and 800 px on one page. The notebooks are formatted
# to the column's width (about 80 code characters at 1280 px, measured below), so none should; a few is slack for a
# line that cannot be broken (a long URL).
# Measured after formatting to 77 characters: 0 blocks scroll at 800 px; at 1280 px 0-4 per chapter, all collapsed
# solution cells whose toggle container is a little narrower than the column (7-15 px over).
MAX_SCROLLING_CODE_BLOCKS = 5
# Pages whose code is not formatted to the column yet (issue 23's notebook pass); their check is an expected failure,
# strict, so a page that starts to pass must leave this set.
CODE_NOT_YET_FORMATTED: set[str] = set()   # every chapter is formatted (tests/test_code_format.py keeps it so)
CJK = re.compile("[\u2e80-\u2fdf\u3000-\u33ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\ufe30-\ufe4f\uff00-\uffef]")


def _toc_pages() -> list[str]:
    import yaml

    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]] + [c["file"] for part in toc.get("parts", []) for c in part.get("chapters", [])]
    return [Path(f).name for f in files]


PAGES = _toc_pages()

# The measurements, made in the page once MathJax has typeset and the fonts have loaded.
#  clipped(el): the first ancestor that hides part of `el` for good (overflow hidden/clip, or a scroll container
#  whose scroll range does not reach it, or the page's left edge), with the pixels lost on each side; null if every
#  pixel of `el` can be seen, scrolling allowed.
_MEASURE_JS = r"""
() => {
  const art = document.querySelector('article.bd-article') || document.querySelector('main') || document.body;
  const name = (a) => a.tagName.toLowerCase() + (a.id ? '#' + a.id : '') +
      (a.classList.length ? '.' + Array.from(a.classList).slice(0, 3).join('.') : '');
  function clipped(el, rect) {
    const r = rect || el.getBoundingClientRect();
    if (r.width === 0 && r.height === 0) return null;
    let left = r.left, right = r.right;
    for (let a = el.parentElement; a && a !== document.documentElement; a = a.parentElement) {
      const cs = getComputedStyle(a);
      const ox = cs.overflowX;
      if (ox === 'visible') continue;
      const ar = a.getBoundingClientRect();
      const inL = ar.left + parseFloat(cs.borderLeftWidth), inR = ar.right - parseFloat(cs.borderRightWidth);
      if (ox === 'auto' || ox === 'scroll') {
        const originL = inL - a.scrollLeft, extentR = originL + a.scrollWidth;
        if (left < originL - 1 || right > extentR + 1)
          return {by: name(a), lost_left: Math.max(0, originL - left), lost_right: Math.max(0, right - extentR)};
        left = ar.left; right = ar.right;    // all of el can be scrolled into the container's box
      } else if (left < inL - 1 || right > inR + 1) {
        return {by: name(a), lost_left: Math.max(0, inL - left), lost_right: Math.max(0, right - inR)};
      }
    }
    if (left + window.scrollX < -1) return {by: 'page', lost_left: -(left + window.scrollX), lost_right: 0};
    return null;
  }
  const cs = getComputedStyle(art);
  const column = art.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight);
  const tex = new Map();
  const typeset = window.MathJax && MathJax.startup && MathJax.startup.document;
  for (const item of ((typeset && typeset.math) || [])) {
    if (item.typesetRoot) tex.set(item.typesetRoot, item.math);
  }
  // A display equation's drawn extent: its mjx-math and the tables inside (a numbered equation's tag sits in a
  // labels table that may stick out of mjx-math); its width is at least the min-width MathJax asked for.
  const extent = (m) => {
    let l = Infinity, r = -Infinity, t = Infinity, b = -Infinity;
    for (const e of [m, ...m.querySelectorAll(':scope > *, mjx-itable, mjx-labels, mjx-mtable')]) {
      const q = e.getBoundingClientRect();
      if (q.width === 0) continue;
      l = Math.min(l, q.left); r = Math.max(r, q.right); t = Math.min(t, q.top); b = Math.max(b, q.bottom);
    }
    return {left: l, right: r, top: t, bottom: b, width: r - l, height: b - t};
  };
  const equations = Array.from(art.querySelectorAll('mjx-container[display="true"]')).map((c, i) => {
    const m = c.querySelector(':scope > mjx-math') || c;
    const src = tex.get(c) || '';
    const tag = (src.match(/\\tag\*?\{([^}]*)\}/) || [])[1] || null;
    const sec = c.closest('section[id]');
    const ext = extent(m);
    const asked = c.style.minWidth.endsWith('em') ? parseFloat(c.style.minWidth) *
        parseFloat(getComputedStyle(c).fontSize) : 0;
    return {i, tag, section: sec ? sec.id : null, tex: src.replace(/\s+/g, ' ').trim().slice(0, 90),
            width: Math.max(ext.width, asked), room: c.clientWidth, column, clipped: clipped(m, ext)};
  });
  const blocks = (sel) => Array.from(art.querySelectorAll(sel)).map((p) => ({
      scrolls: p.scrollWidth > p.clientWidth + 1, over: p.scrollWidth - p.clientWidth, clipped: clipped(p),
      first: (p.innerText.split('\n')[0] || '').slice(0, 60)}));
  const code = blocks('div.cell_input pre');
  const outputs = blocks('div.cell_output pre');
  const other_code = blocks('div.highlight pre').filter((_, k) => !art.querySelectorAll('div.highlight pre')[k]
      .closest('div.cell_input, div.cell_output'));
  // the code column in characters of the code font
  let code_chars = null;
  const pre = art.querySelector('div.cell_input pre') || art.querySelector('div.highlight pre');
  if (pre) {
    const probe = document.createElement('span');
    probe.textContent = '0'.repeat(100);
    pre.appendChild(probe);
    const ch = probe.getBoundingClientRect().width / 100;
    probe.remove();
    const ps = getComputedStyle(pre);
    code_chars = (pre.clientWidth - parseFloat(ps.paddingLeft) - parseFloat(ps.paddingRight)) / ch;
  }
  // everything else that can be too wide: pictures, tables, widget boxes, outputs
  const wide = Array.from(art.querySelectorAll(
      'img, svg, table, iframe, video, div.cell_output > div, .jupyter-widgets, section > p, div.math'))
      .map((e) => ({what: name(e), clipped: clipped(e)})).filter((e) => e.clipped);
  // inline maths: a formula wider than its line must scroll, not be cut (the theme hides span.math's overflow)
  const inline = Array.from(art.querySelectorAll('mjx-container:not([display="true"]) > mjx-math'))
      .map((m) => ({tex: (tex.get(m.parentElement) || '').slice(0, 60), clipped: clipped(m)}))
      .filter((e) => e.clipped);
  // maths MathJax could not typeset (e.g. \\tag inside the split that Sphinx wraps around a source with \\\\)
  const math_errors = Array.from(art.querySelectorAll('mjx-merror'))
      .map((e) => (e.getAttribute('data-mjx-error') || e.textContent || '').slice(0, 80));
  return {column, code_chars, equations, code, outputs, other_code, wide, inline, math_errors,
          page_scrolls: document.documentElement.scrollWidth > window.innerWidth + 1};
}
"""

# The element holding the page's first Chinese term (the title where it has one), marked for CDP.
_CJK_PROBE_JS = r"""
(re) => {
  const cjk = new RegExp(re);
  const art = document.querySelector('article.bd-article') || document.body;
  const walker = document.createTreeWalker(art, NodeFilter.SHOW_TEXT);
  for (let t = walker.nextNode(); t; t = walker.nextNode()) {
    const m = t.data.match(cjk);
    if (m && t.parentElement.offsetParent !== null && !t.parentElement.closest('mjx-container, script, style')) {
      t.parentElement.setAttribute('data-cjk-probe', '1');
      return {term: t.data.match(new RegExp(re + '+'))[0], text: t.data.trim().slice(0, 80)};
    }
  }
  return null;
}
"""


def _settle(page):
    """Wait for MathJax's first typeset (on pages with maths) and for every font the page asked for."""
    if page.evaluate("() => !!document.querySelector('script[src*=\"mathjax\"]')"):
        page.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise", timeout=60_000)
        page.evaluate("() => MathJax.startup.promise")
    page.evaluate("() => document.fonts.ready.then(() => true)")


def _fonts_used(page, selector: str) -> dict[str, int]:
    """The platform fonts Chromium drew `selector`'s text with (CDP), as {family: glyph count}."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("DOM.enable")
    cdp.send("CSS.enable")
    root = cdp.send("DOM.getDocument", {"depth": -1})["root"]["nodeId"]
    node = cdp.send("DOM.querySelector", {"nodeId": root, "selector": selector})["nodeId"]
    fonts = cdp.send("CSS.getPlatformFontsForNode", {"nodeId": node})["fonts"]
    cdp.detach()
    return {f["familyName"]: f["glyphCount"] for f in fonts}


# Each page is opened once; both tests below read its measurements.
_MEASURED: dict[str, dict] = {}


def _measure(server, browser, name: str) -> dict:
    """Open a page, measure it at every width (screenshots included), find its Chinese term's font."""
    if name in _MEASURED:
        return _MEASURED[name]
    import json

    blocked: list[str] = []
    requested: list[str] = []
    page, errors = _open(browser, f"{server}/book/{name}.html", blocked, requested)
    _settle(page)
    report: dict = {"errors": errors, "requested": requested}
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        page.wait_for_timeout(300)  # the theme's layout (sidebars) reacts to the resize
        report[width] = page.evaluate(_MEASURE_JS)
        _shoot(page, f"{name}_{width}", report[width]["equations"])
    probe = page.evaluate(_CJK_PROBE_JS, CJK.pattern)
    if probe is not None:
        probe["fonts"] = _fonts_used(page, "[data-cjk-probe]")
        probe["checked"] = page.evaluate("(t) => document.fonts.check('16px \"Noto Sans SC\"', t)", probe["term"])
    report["cjk"] = probe
    page.close()
    _MEASURED[name] = report
    out = SHOTS / "readable.json"
    old = json.loads(out.read_text()) if out.exists() else {}
    old[name] = {str(k): v for k, v in report.items()}
    out.write_text(json.dumps(old, indent=1, ensure_ascii=False))
    return report


def _font_bytes(requested: list[str]) -> int:
    """Bytes of the self-hosted Noto Sans SC chunks a page downloaded."""
    total = 0
    for u in dict.fromkeys(requested):
        if u.startswith("http://127.0.0.1") and "noto-sans-sc" in u and u.split("?")[0].endswith(".woff2"):
            total += (HTML / u.split("/", 3)[3].split("?")[0]).stat().st_size
    return total


# A page downloads only the Noto Sans SC chunks holding its own characters (the sidebar's titles included).
FONT_BYTES_MAX_PER_PAGE = 600_000


def _shoot(page, name: str, equations: list[dict]):
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.evaluate("() => window.scrollTo(0, 0)")
    page.screenshot(path=str(SHOTS / f"{name}_top.png"))
    if equations:
        widest = max(equations, key=lambda e: e["width"])
        page.evaluate("(i) => document.querySelectorAll('article mjx-container[display=\"true\"]')[i]"
                      ".scrollIntoView({block: 'center'})", widest["i"])
        page.screenshot(path=str(SHOTS / f"{name}_widest_equation.png"))


@pytest.mark.parametrize("name", PAGES)
def test_page_is_readable_at_every_width(server, browser, name):
    """No display equation or other content is clipped at 1280, 800 and 390 px (scrolling inside its box allowed, the
    whole page scrolling sideways not); the Chinese terms use the self-hosted Noto Sans SC.

    Writes ``_build/browser/<page>_<width>_top.png`` (and the view of its widest equation) and the measurements to
    ``_build/browser/readable.json`` (``python scripts/readable_report.py`` summarises them).
    """
    report = _measure(server, browser, name)
    problems = []
    for width in WIDTHS:
        m = report[width]
        for e in m["equations"]:
            if e["clipped"]:
                problems.append(f"{width}px: equation {e['tag'] or e['tex'][:40]!r} clipped: {e['clipped']}")
        for kind in ("code", "outputs", "other_code"):
            for b in m[kind]:
                if b["clipped"]:
                    problems.append(f"{width}px: {kind} block {b['first']!r} clipped: {b['clipped']}")
        for w in m["wide"]:
            problems.append(f"{width}px: {w['what']} clipped: {w['clipped']}")
        for e in m["inline"]:
            problems.append(f"{width}px: inline maths {e['tex']!r} clipped: {e['clipped']}")
        for err in m["math_errors"]:
            problems.append(f"{width}px: MathJax error {err!r} (end aligned rows with \\cr, not \\\\, in tagged maths)")
        if m["page_scrolls"]:
            problems.append(f"{width}px: the whole page scrolls sideways (something is wider than the window)")
    probe = report["cjk"]
    if probe is not None:
        # the chunks' name table calls the family "Noto Sans SC Thin" (fontsource cuts them from the variable font)
        ours = sum(g for family, g in probe["fonts"].items() if family.startswith("Noto Sans SC"))
        if not probe["checked"] or ours < len(CJK.findall(probe["term"])):
            problems.append(f"Chinese term {probe['term']!r} ({probe['text']!r}) drawn with {probe['fonts']}, "
                            f"document.fonts.check={probe['checked']}")
    elif name.startswith(("0", "appendix_errata")):
        problems.append("no Chinese term found on the page")
    fonts = _font_bytes(report["requested"])
    if fonts > FONT_BYTES_MAX_PER_PAGE:
        problems.append(f"the page downloads {fonts:,} bytes of Noto Sans SC (at most {FONT_BYTES_MAX_PER_PAGE:,})")
    assert not report["errors"], report["errors"]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.xfail(n in CODE_NOT_YET_FORMATTED, strict=True,
                                            reason="code not formatted to the column yet (issue 23)"))
    for n in PAGES])
def test_code_fits_the_column(server, browser, name):
    """At most MAX_SCROLLING_CODE_BLOCKS code cells need horizontal scrolling at 1280 px and at 800 px."""
    report = _measure(server, browser, name)
    counts = {w: (sum(b["scrolls"] for b in report[w]["code"]), len(report[w]["code"]),
                  round(report[w]["code_chars"] or 0)) for w in (1280, 800)}
    print(f"{name}: code cells needing horizontal scrolling (of all; column in code characters) {counts}")
    assert all(n <= MAX_SCROLLING_CODE_BLOCKS for n, _, _ in counts.values()), counts


LAYOUT_JS = """(box) => {
    const track = box.querySelector('.widget-hslider .slider-container') || box.querySelector('.noUi-target');
    const captions = Array.from(box.querySelectorAll('.widget-html b'));
    const icons = Array.from(box.querySelectorAll('.widget-play i'));
    return {
        track: track ? track.getBoundingClientRect().width : 0,
        // an inline element has one client rect per line it spans
        lines: captions.map((b) => b.getClientRects().length),
        icons: icons.map((i) => ({svg: !!i.querySelector('svg'),
                                  before: getComputedStyle(i, '::before').content})),
    };
}"""


@pytest.mark.parametrize("chapter", _chapters_with_scrubbers())
def test_scrubber_layout(server, browser, chapter):
    """One layout for every scrubber (diffusion_lab.widgets): the caption on one line, a track of at least 300 px,
    and Play icons drawn by the theme's Font Awesome (an <svg>), with no Font Awesome 4 glyph beside them (a
    missing-glyph box on these pages). Chapters pick the layout up when they are re-executed."""
    blocked: list[str] = []
    page, errors = _open(browser, f"{server}/book/{chapter}.html", blocked)
    boxes = _scrubbers(page)
    page.wait_for_selector(".widget-play i svg", state="attached", timeout=30_000)
    for i in range(boxes.count()):
        box = boxes.nth(i)
        box.scroll_into_view_if_needed()
        got = box.evaluate(LAYOUT_JS)
        assert got["track"] >= 300, f"{chapter} scrubber {i}: slider track {got['track']:.0f} px < 300 px"
        assert all(n == 1 for n in got["lines"]), f"{chapter} scrubber {i}: caption wraps ({got['lines']} lines)"
        for icon in got["icons"]:
            assert icon["svg"] and icon["before"] in ("none", "normal"), f"{chapter} scrubber {i}: icon {icon}"
    assert not errors, errors
