"""Keep the Jupyter widgets of the book's pages working next to the theme's Font Awesome.

pydata-sphinx-theme loads Font Awesome's JavaScript, which by default *replaces* every ``<i class="fa …">``
with an ``<svg>``. The ``Play`` widget's buttons are such ``<i>`` elements; once they are swapped out under
the widget manager, the page's ``jslink`` bindings stop working (found by tests/test_book_browser.py). In
"nest" mode Font Awesome puts the ``<svg>`` inside the ``<i>`` instead, which leaves the widgets intact and
the theme's icons unchanged. The setting must exist before Font Awesome runs; its script is deferred, so an
inline script in the page head is early enough.
"""


def setup(app):
    app.add_js_file(None, body='window.FontAwesomeConfig = {autoReplaceSvg: "nest"};', priority=100)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
