"""Keep the Jupyter widgets of the book's pages working next to the theme's Font Awesome.

pydata-sphinx-theme loads Font Awesome's JavaScript, which by default *replaces* every ``<i class="fa …">``
with an ``<svg>``. The ``Play`` widget's buttons are such ``<i>`` elements; once they are swapped out under
the widget manager, the page's ``jslink`` bindings stop working (found by tests/test_book_browser.py). In
"nest" mode Font Awesome puts the ``<svg>`` inside the ``<i>`` instead, which leaves the widgets intact and
the theme's icons unchanged. The setting must exist before Font Awesome runs; its script is deferred, so an
inline script in the page head is early enough.

The widget manager's own stylesheet still gives every ``<i class="fa …">`` Font Awesome 4's ``::before`` glyph,
in a font it looks for beside the page (``book/@jupyter-widgets/html-manager/dist/*.woff2``, a wrong relative URL:
404s). The glyph then showed as a missing-glyph box next to the theme's icon in every Play button. The theme's
Font Awesome draws the icon (the nested ``<svg>``), so the stylesheet below drops the old glyph, and with it the
requests for the font.
"""


def setup(app):
    app.add_js_file(None, body='window.FontAwesomeConfig = {autoReplaceSvg: "nest"};', priority=100)
    app.add_css_file("widget_icons.css")
    app.connect("build-finished", _write_css)
    return {"parallel_read_safe": True, "parallel_write_safe": True}


CSS = """/* book/_ext/widget_fontawesome.py: the theme's Font Awesome draws widget icons; drop Font Awesome 4's glyph */
.jupyter-widgets i.fa::before, .widget-play i.fa::before { content: none !important; }
"""


def _write_css(app, exception):
    from pathlib import Path

    if exception is None and app.builder.format == "html":
        out = Path(app.outdir) / "_static" / "widget_icons.css"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(CSS)
