"""Directives for the appendices, generated from files in the repository at build time.

``{chapter-times}``  the table of each chapter's measured execution time, read from ``book/chapter_times.json``
                     (written by ``scripts/execute_notebooks.py``), so the page never goes stale by hand.
``{package-api}``    an ``automodule`` section for every module of ``diffusion_lab`` (found with ``pkgutil``, so a new
                     module appears without editing the page); the docstrings come from the code.

Docstrings are written as reST-ish text with unicode maths. One that docutils cannot parse cleanly (a stray
indentation, an unmatched ``*``) is shown as a literal block instead of failing the ``-W`` build.
"""
from __future__ import annotations

import importlib
import io
import json
import pkgutil
import re
from pathlib import Path

from docutils import nodes
from docutils.core import publish_doctree
from docutils.statemachine import StringList
from docutils.parsers.rst import Directive, directives
from sphinx.util.nodes import nested_parse_with_titles

CHAPTER_TITLES = {
    "01_generative_models": "1. Generative models",
    "02_forward_process": "2. The forward process",
    "03_reverse_process": "3. The reverse process",
    "04_elbo": "4. The variational bound",
    "05_training": "5. Training",
    "06_sampling": "6. Sampling",
    "07_classifier_guidance": "7. Classifier guidance",
    "08_classifier_free_guidance": "8. Classifier-free guidance",
    "09_beyond": "9. Beyond the source: ODE solvers and flow matching",
}


def _fmt(entry: dict | None) -> str:
    if not entry:
        return "not measured yet"
    load = entry.get("load_1min")
    where = f"{entry.get('cpus', '?')} CPUs" + (f", load {load:.1f}" if load is not None else "")
    if entry.get("device"):
        where = entry["device"]
    cpu = entry.get("kernel_cpu_s")
    cpu = f"; {cpu:.0f} s of CPU" if cpu and not entry.get("device") else ""
    return f"{entry['execute_s']:.0f} s ({where}{cpu}, {entry.get('date', '?')})"


def _table(header: list[str], rows: list[list[str]]) -> nodes.table:
    """A plain docutils table (built as nodes, so it works in MyST and reST pages alike)."""
    table = nodes.table()
    group = nodes.tgroup(cols=len(header))
    table += group
    for _ in header:
        group += nodes.colspec(colwidth=1)
    def row(cells, strong=False):
        r = nodes.row()
        for c in cells:
            para = nodes.paragraph()
            para += nodes.strong(text=c) if strong else nodes.Text(c)
            entry = nodes.entry()
            entry += para
            r += entry
        return r
    thead = nodes.thead()
    thead += row(header)
    group += thead
    body = nodes.tbody()
    for i, cells in enumerate(rows):
        body += row(cells, strong=(i == len(rows) - 1))
    group += body
    return table


class ChapterTimes(Directive):
    has_content = False
    option_spec = {"file": directives.unchanged}

    def run(self):
        env = self.state.document.settings.env
        path = Path(env.srcdir) / self.options.get("file", "book/chapter_times.json")
        env.note_dependency(str(path))
        data = json.loads(path.read_text()) if path.exists() else {}
        rows = []
        total = {"cpu": 0.0, "gpu": 0.0}
        complete = {"cpu": True, "gpu": True}
        for stem, title in CHAPTER_TITLES.items():
            rec = data.get(stem, {})
            cells = [title]
            for prof in ("cpu", "gpu"):
                e = rec.get(prof)
                cells.append(_fmt(e))
                if e:
                    total[prof] += e["execute_s"]
                else:
                    complete[prof] = False
            rows.append(cells)
        rows.append(["whole book"] + [f"{total[p]:.0f} s" + ("" if complete[p] else " (chapters measured so far)")
                                      for p in ("cpu", "gpu")])
        return [_table(["chapter", "cpu profile", "gpu profile"], rows)]


class PackageApi(Directive):
    has_content = True

    def run(self):
        names = [n.strip() for n in self.content if n.strip()]
        if not names:
            pkg = importlib.import_module("diffusion_lab")
            names = sorted(m.name for m in pkgutil.walk_packages(pkg.__path__, "diffusion_lab.")
                           if not m.name.rsplit(".", 1)[-1].startswith("_") and m.name != "diffusion_lab.__main__")
        lines = []
        for name in names:
            lines += [f"``{name}``", "-" * (len(name) + 4), "", f".. automodule:: {name}", "   :members:", ""]
        node = nodes.section()
        nested_parse_with_titles(self.state, StringList(lines, source="package-api"), node)
        return node.children


def _safe_docstring(app, what, name, obj, options, lines):
    """Show a docstring that docutils cannot parse cleanly as a literal block instead of failing the build."""
    if not lines:
        return
    text = "\n".join(lines)
    # Sphinx's roles (:func:, :class:) need a build environment; for this check they are plain literals.
    check = re.sub(r"(?<![`\w]):[\w:.-]+:`([^`]*)`", r"``\1``", text)
    stream = io.StringIO()
    try:
        publish_doctree(check, settings_overrides={"report_level": 2, "halt_level": 5, "warning_stream": stream,
                                                   "file_insertion_enabled": False, "raw_enabled": False})
    except Exception:  # noqa: BLE001 - a directive that needs Sphinx: leave the docstring to Sphinx
        return
    problems = [l for l in stream.getvalue().splitlines() if "ERROR" in l or "WARNING" in l or "SEVERE" in l]
    if problems:
        lines[:] = ["::", ""] + ["    " + l for l in text.splitlines()] + [""]


def setup(app):
    app.add_directive("chapter-times", ChapterTimes)
    app.add_directive("package-api", PackageApi)
    app.connect("autodoc-process-docstring", _safe_docstring)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
