"""The built book in a real browser: the kernel-free scrubbers change the image, and the maths renders.

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


def _open(browser, url, blocked):
    page = browser.new_page(viewport={"width": 1280, "height": 1600})

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
