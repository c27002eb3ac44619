"""The live sampler (``diffusion_lab/web/live.js``) in a real browser, offline.

1. Same numbers as Python: the page's DDPM / DDIM with classifier-free guidance, run with onnxruntime-web on the
   shipped ONNX export and fed the noise Python draws (x_T, then every z in the order the Python sampler draws
   them), equal ``ddpm_sample`` / ``ddim_sample`` on the torch model within 1e-4.
2. The built pages: clicking "sample" draws digits that change with the digit, w and the seed, with no console
   error and no request leaving the machine (onnxruntime-web and its wasm are served from ``.offline``, like the
   widget manager in test_book_browser.py).

Needs chromium, playwright and ``bash scripts/fetch_offline_assets.sh`` (part 2 also the built book). Skipped with a
message when a piece is missing, except under CI, where a missing piece is a failure.
"""
from __future__ import annotations

import functools
import http.server
import json
import os
import re
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from diffusion_lab import export, pretrained
from diffusion_lab.guidance import ClassifierFreeGuidance
from diffusion_lab.sampling import ddim_sample, ddim_timesteps, ddpm_sample

from test_book_browser import CHROMIUM, HTML, NODE_MODULES, ROOT, _local_asset, CONTENT_TYPES  # noqa: E402

WEB = export.web_dir()
ORT = NODE_MODULES / "onnxruntime-web" / "dist" / "ort.wasm.min.mjs"
TOL = 1e-4


def _missing(need_book: bool) -> str | None:
    if not Path(CHROMIUM).exists():
        return "chromium not found: `apt-get install chromium`"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright not installed: `pip install playwright`"
    if not ORT.exists() or not (NODE_MODULES / "anywidget" / "dist" / "index.js").exists():
        return "offline JavaScript missing: `bash scripts/fetch_offline_assets.sh`"
    if need_book and not (HTML / "book" / "02_forward_process.html").exists():
        return "the book is not built: run `jupyter-book build . -W --keep-going`"
    return None


def _require(need_book=False):
    why = _missing(need_book)
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"browser test cannot run under CI: {why}")
        pytest.skip(why)


def _serve(directory):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, ".js": "application/javascript",
                          ".onnx": "application/octet-stream"}

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(directory)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}"


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


def open_page(browser, url):
    """A page whose CDN requests are answered from .offline and whose other outside requests are blocked and
    recorded; returns (page, errors, blocked)."""
    page = browser.new_page(viewport={"width": 1280, "height": 1600})
    blocked, errors = [], []

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
    requests = []
    page.on("request", lambda r: requests.append(r.url))
    page.requested = requests
    page.on("pageerror", lambda e: None if "THEBE_JS_URL" in str(e) else errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" and not _known(m.text) else None)
    # A failed load shows in the console without its URL: the responses say which file it was.
    page.on("response", lambda r: errors.append(f"HTTP {r.status}: {r.url}")
            if r.status >= 400 and not KNOWN_404.search(r.url) else None)
    page.goto(url, wait_until="load")
    return page, errors, blocked


# Known and harmless, on every page with widgets, before this widget existed: the widget manager's stylesheet
# (html-manager 1.0.6) names Font Awesome 5's font files by wrong relative URLs (book/@jupyter-widgets/...),
# unused since book/_ext/widget_fontawesome.py lets the theme draw the icons; and pydata-sphinx-theme logs an
# error for an unset theme mode. Any other failed request or console error fails the test.
KNOWN_404 = re.compile(r"/@jupyter-widgets/(html-manager/dist/)?[0-9a-f]{20}\.(woff2?|ttf|eot|svg)$")


def _known(text: str) -> bool:
    return text.startswith("Failed to load resource") or text.startswith("Got invalid theme mode")


@pytest.fixture(scope="module")
def sampler_page(browser):
    """A blank page on a server of diffusion_lab/web, with live.js imported and both exports loaded."""
    httpd, url = _serve(WEB)
    page, errors, blocked = open_page(browser, url + "/")
    page.evaluate("""async () => {
        const L = await import('/live.js');
        window.L = L;
        window.models = {};
        for (const name of ['digits-cond', 'digits-uncond']) {
            const meta = await (await fetch(`/${name}.onnx.json`)).json();
            const bytes = new Uint8Array(await (await fetch(`/${name}.onnx`)).arrayBuffer());
            window.models[name] = {model: await L.onnxModel(bytes, meta), schedule: new L.Schedule(meta.schedule.betas)};
        }
    }""")
    yield page, errors, blocked
    page.close()
    httpd.shutdown()


def _noise_stream(seed, shape, draws):
    """The normals a seeded torch.Generator gives a sampler: x_T, then one z of ``shape`` per noisy step."""
    g = torch.Generator().manual_seed(seed)
    return torch.cat([torch.randn(shape, generator=g).reshape(-1) for _ in range(draws)])


def _js_sample(page, name, sampler, opts, noise):
    return np.asarray(page.evaluate("""async ([name, sampler, opts, noise]) => {
        const {model, schedule} = window.models[name];
        const run = sampler === 'ddim' ? window.L.ddimSample : window.L.ddpmSample;
        const out = await run(model, schedule, {...opts, noise: window.L.fedNoise(noise)});
        return Array.from(out.x);
    }""", [name, sampler, opts, noise.tolist()]), dtype=np.float32)


CASES = [  # (name, sampler, w, interval, extra)
    ("digits-cond", "ddpm", 2.0, None, {"variance": "beta"}),
    ("digits-cond", "ddpm", 3.0, (0, 300), {"variance": "beta_tilde"}),
    ("digits-cond", "ddim", 2.0, None, {"steps": 50, "eta": 0.0}),
    ("digits-cond", "ddim", 4.0, (0, 300), {"steps": 20, "eta": 0.0}),
    ("digits-cond", "ddim", 2.0, None, {"steps": 20, "eta": 1.0}),
    ("digits-cond", "ddim", 1.5, (100, 600), {"steps": 37, "eta": 1.0}),
    ("digits-cond", "ddim", 0.0, None, {"steps": 10, "eta": 0.5}),
    ("digits-uncond", "ddim", 0.0, None, {"steps": 25, "eta": 1.0}),
    ("digits-uncond", "ddpm", 0.0, None, {"variance": "beta"}),
]


@pytest.mark.parametrize("name, sampler, w, interval, extra", CASES,
                         ids=[f"{c[0]}-{c[1]}-w{c[2]}-{'iv' if c[3] else 'all'}-{'-'.join(map(str, c[4].values()))}"
                              for c in CASES])
def test_same_numbers_as_python(sampler_page, name, sampler, w, interval, extra):
    page, errors, blocked = sampler_page
    torch.manual_seed(0)
    model, schedule = pretrained.load(name)
    B, shape, seed = 4, (4, 1, 8, 8), 7
    conditional = name == "digits-cond"
    y = torch.tensor([0, 3, 7, 9]) if conditional else None
    guidance = ClassifierFreeGuidance(w, interval=interval) if conditional else None
    g = torch.Generator().manual_seed(seed)
    if sampler == "ddpm":
        want = ddpm_sample(model, schedule, shape, y=y, guidance=guidance, generator=g, progress=False, **extra)
        draws = schedule.T                      # x_T and T − 1 z's
    else:
        want = ddim_sample(model, schedule, shape, y=y, guidance=guidance, generator=g, progress=False, **extra)
        draws = 1 + (len(ddim_timesteps(schedule.T, extra["steps"])) - 1 if extra["eta"] > 0 else 0)
    noise = _noise_stream(seed, shape, draws)
    opts = {"batch": B, "y": y.tolist() if conditional else None, "w": w,
            "interval": list(interval) if interval else None, **extra}
    got = _js_sample(page, name, sampler, opts, noise)
    diff = float(np.abs(got - want.reshape(-1).numpy()).max())
    print(f"{name} {sampler} w={w} interval={interval} {extra}: max |Δ| = {diff:.2e}")
    assert diff <= TOL, f"the page's sampler differs from Python's by {diff:.3g} > {TOL}"
    assert float(want.abs().max()) > 0.5        # real samples, not zeros
    assert not errors and not blocked, (errors, blocked)


def test_ddim_timesteps_match(sampler_page):
    page, _, _ = sampler_page
    for T, S in [(1000, 1), (1000, 2), (1000, 3), (1000, 20), (1000, 50), (1000, 333), (1000, 1000), (7, 4)]:
        js = page.evaluate("([T, S]) => new window.L.Schedule(new Array(T).fill(0.01)).ddimTimesteps(S)", [T, S])
        assert js == ddim_timesteps(T, S).tolist(), (T, S)


def test_js_rejects_bad_input(sampler_page):
    page, _, _ = sampler_page
    msg = page.evaluate("""async () => {
        const {model, schedule} = window.models['digits-cond'];
        try { await window.L.ddimSample(model, schedule, {batch: 2, y: [1, 10], w: 1, steps: 5,
                                                           noise: window.L.gaussian(0)}); }
        catch (e) { return e.message; }
        return 'no error';
    }""")
    assert "labels must lie in 0" in msg


def test_seeded_prng_is_reproducible_and_normal(sampler_page):
    page, _, _ = sampler_page
    a, b, c = page.evaluate("""() => [1, 1, 2].map((s) => Array.from(window.L.gaussian(s)(20000)))""")
    assert a == b and a != c
    a = np.asarray(a)
    assert abs(a.mean()) < 4 / np.sqrt(a.size) and abs(a.std() - 1) < 0.03


# ----------------------------------------------------------------------------- the built pages
def _chapters_with_live_sampler() -> list[str]:
    names = []
    for nb in sorted((ROOT / "book").glob("[0-9][0-9]_*.ipynb")):
        state = json.loads(nb.read_text()).get("metadata", {}).get("widgets", {})
        state = state.get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
        if any(v.get("model_name") == "AnyModel" and "dl-live" in str(v.get("state", {}).get("_esm", ""))
               for v in state.values()):
            names.append(nb.stem)
    return names


@pytest.fixture(scope="module")
def book_server():
    _require(need_book=True)
    httpd, url = _serve(HTML)
    yield url
    httpd.shutdown()


def _sample(page, box, **settings):
    """Set the controls, click "sample", wait for the result; return the samples' canvas as PNG bytes."""
    done = int(box.get_attribute("data-done") or 0)
    for label, value in settings.items():
        control = box.locator(f"[aria-label='{label}']")
        if label in ("digit", "sampler"):
            control.select_option(str(value))
        else:
            control.fill(str(value))
            control.dispatch_event("input")
    box.locator("button.dl-go").click()
    page.wait_for_function("([el, n]) => +(el.dataset.done || 0) > n || el.dataset.error",
                           arg=[box.element_handle(), done], timeout=120_000)
    assert not box.get_attribute("data-error"), box.get_attribute("data-error")
    return box.locator("canvas[aria-label='x_t']").screenshot()


@pytest.mark.parametrize("chapter", _chapters_with_live_sampler())
def test_live_sampler_on_built_page(book_server, browser, chapter):
    page, errors, blocked = open_page(browser, f"{book_server}/book/{chapter}.html")
    page.wait_for_selector(".dl-live", timeout=60_000)
    box = page.locator(".dl-live").first
    box.scroll_into_view_if_needed()
    # lazy: nothing of the runtime or the model is loaded before the first click
    heavy = [u for u in page.requested if "onnxruntime-web" in u or u.split("?")[0].endswith(".onnx")]
    assert not heavy, f"loaded before any click: {heavy}"
    first = _sample(page, box, sampler="ddim", seed=1, **{"DDIM steps": 20})
    again = _sample(page, box, seed=1)
    assert again == first, "the same settings and seed must draw the same samples"
    assert _sample(page, box, seed=2) != first, "another seed must draw other samples"
    if box.locator("[aria-label='digit']").count():
        a = _sample(page, box, seed=1, digit=3)
        assert _sample(page, box, seed=1, digit=7) != a, "another digit must draw other samples"
        assert _sample(page, box, seed=1, digit=7, **{"guidance w": 6}) != a
    assert any(u.endswith("/_static/live/digits-cond.onnx") for u in page.requested)
    assert not errors, errors
    assert not blocked, f"requests left the machine: {blocked}"


def test_widget_samples_the_model_a_kernel_sends(sampler_page):
    """The front end with a stand-in for the kernel (anywidget's model API: get, set, on, off, send): on hello the
    "kernel" answers with its own model's bytes and metadata, and the click samples that model, not the page's."""
    page, errors, blocked = sampler_page
    meta = export.read_metadata(WEB / "digits-cond.onnx")
    got = page.evaluate("""async (meta) => {
        const handlers = {}, state = {meta, model_name: 'digits-cond', model_url: 'nowhere/missing.onnx', digit: 3,
            w: 2, interval: null, sampler: 'ddim', steps: 5, eta: 0, seed: 1, batch: 4, caption: 'static caption',
            kernel_model: true};
        const yours = await (await fetch('/digits-cond.onnx')).arrayBuffer();
        const fake = {get: (k) => state[k], set: (k, v) => { state[k] = v; }, save_changes: () => {},
            on: (ev, f) => { handlers[ev] = f; }, off: () => {},
            send: (msg) => { if (msg.type === 'hello') setTimeout(() => handlers['msg:custom'](
                {type: 'model', meta: {...meta, name: 'yours'}, caption: 'your model'}, [new DataView(yours)]), 10); }};
        const host = document.createElement('div');
        document.body.append(host);
        window.L.default.render({model: fake, el: host});
        await new Promise((r) => setTimeout(r, 200));
        host.querySelector('button.dl-go').click();
        const root = host.querySelector('.dl-live');
        for (let i = 0; i < 600 && !root.dataset.done && !root.dataset.error; i++) await new Promise((r) => setTimeout(r, 100));
        return {done: root.dataset.done, error: root.dataset.error || null, text: root.textContent};
    }""", meta)
    assert got["error"] is None and got["done"] == "1", got
    assert "your model" in got["text"] and "static caption" not in got["text"]
    assert not errors and not blocked, (errors, blocked)
