"""Every figure in the book's prose comes from a cell (GUIDE §4, issue 18).

A number that a cell measures or derives (a metric, a ratio, a percentage, a z-score, a time) is pasted into the
text with myst-nb's glue, ``{glue:text}`key:.3f``` (or ``{glue:text}`other.ipynb::key:.3f``` from another page), so
re-executing a chapter updates its prose. This test reads the markdown of every chapter, the intro and the
appendices, takes out what is not a figure (glue roles, code, links, equation and section numbers, versions) and
fails on any decimal number, percentage or "N×" ratio left over that is not one of the definitional constants
allowlisted below. Integers (T = 1000, batch 64, 48,000 images) are constants one chooses and are not scanned.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
PAGES = sorted(BOOK.glob("[0-9][0-9]_*.ipynb")) + sorted(BOOK.glob("*.md"))

# ---------------------------------------------------------------------------------------------------------------
# What is not a figure: removed before the scan (structure, not values).
STRUCTURE = [
    r"\{glue(?::\w+)?\}`[^`]*`",                       # a glued value (the point of the test)
    r"\{(?:eq|numref|ref|doc|download|term|math:numref)\}`[^`]*`",   # cross-references
    r"`[^`]*[A-Za-z_=(\[][^`]*`",                      # inline code (an argument value is code, not prose)
    r"\]\([^)]*\)",                                    # link targets
    r"<https?://[^>]*>|https?://\S+",                  # bare URLs
    r"^\([\w-]+\)=\s*$",                               # MyST labels
    r"\\tag\{\d+\.\d+\}",                              # equation tags
    r"\\label\{[^}]*\}",
    r"(?<![\d.])\(\d\.\d{1,2}[a-z]?\)(?:\s*[–-]\s*\(\d\.\d{1,2}[a-z]?\))?",   # equation references: (5.2), (5.5)–(5.7)
    r"(?i)(?:\b(?:sections?|chapters?|eqs?\.|equations?|figure|table|algorithm|appendix)|§§?)\s*\d+\.\d+"
    r"(?:\s*(?:,|and|–|-|to)\s*\d+\.\d+)*",            # section and equation numbers named in words
    r"^#+\s+\d+\.\d+",                                 # numbered headings
    r"(?<![\d.])\d+\.\d+\.\d+(?:\.\w+)?",              # versions (torch 2.13.0)
    r"(?:==|>=|<=|≥|~=)\s*\d+(?:\.\d+)+",              # version requirements
    r"(?<![\d.])\d+\s*(?:×|\\times)\s*\d+(?![\d.])",      # sizes: 8×8 images, 28 \times 28
]

# ---------------------------------------------------------------------------------------------------------------
# Definitional constants: values one chooses (or a paper chose), never measured here. Keep this list short; each
# entry says why the number may be typed.
CONSTANTS = [
    (r"0\.0001|10\^\{-4\}", "β_1 of the seed's linear schedule"),
    (r"0\.02\b", "β_T of the seed's linear schedule"),
    (r"0\.008\b", "the cosine schedule's offset s (Nichol & Dhariwal)"),
]
# Constants of one page: {page name: [(regex, reason)]}
PAGE_CONSTANTS: dict[str, list[tuple[str, str]]] = {
    "01_generative_models.ipynb": [
        (r"(?<=standard deviation )0\.1", "the 8 Gaussians' blob standard deviation (make_toy, chosen)"),
        (r"(?<=radius )1\.5", "the radius of the 8 Gaussians' circle (make_toy, chosen)"),
        (r"(?<=bandwidths )0\.05", "the smallest MMD kernel bandwidth (baselines.mmd2, chosen)"),
        (r"(?<=3\\sigma = )0\.3", "a mode's radius, three blob standard deviations (mode_coverage, chosen)"),
        (r"1\.2(?=\^2)", "the standard deviation of the frozen 'generator' of the discriminator check (chosen)"),
        (r"(?<=\\beta = )0\.05", "the smallest β of the β-VAE experiment (chosen)"),
    ],
    "02_forward_process.ipynb": [
        (r"0\.999", "the cosine schedule's clip on β_t (Nichol & Dhariwal; cited)"),
    ],
    "03_reverse_process.ipynb": [
        (r"0\.3", "mean of chapter 3's toy data N(0.3, 0.4²) and N(0.3, 0.02²)"),
        (r"0\.4", "standard deviation of chapter 3's toy data N(0.3, 0.4²)"),
    ],
    "05_training.ipynb": [
        (r"3\.17", "DDPM's CIFAR-10 FID with L_simple (Ho et al. 2020, table 1; cited)"),
        (r"13\.51", "DDPM's FID with the true bound and fixed variances (table 1; cited)"),
        (r"3\.75", "DDPM's CIFAR-10 NLL bound with L_simple, bits/dim (table 1; cited)"),
        (r"3\.70", "DDPM's NLL bound with the true bound (table 1; cited)"),
        (r"0\.9999", "DDPM's EMA decay (cited)"),
        (r"0\.999", "EMA decay of the shipped recipe and of exercise 3 (chosen)"),
        (r"0\.995", "EMA decay of the chapter's 2-D loop fit() (chosen)"),
        (r"0\.9", "EMA decay of exercise 3 (chosen)"),
        (r"95 %", "the accuracy target of benchmarks/RESULTS.md's time-to-quality runs (chosen)"),
        (r"1\.5×", "the distance target there: FD within 1.5× the real train-vs-test value (chosen)"),
        (r"4\.43", "benchmarks/RESULTS.md ablation: FD of the ε recipe (R4) at 80,000 images"),
        (r"2\.45", "benchmarks/RESULTS.md ablation: FD of the v recipe (R5) at 80,000 images"),
    ],
    "appendix_run.md": [
        (r"95 %", "the accuracy target that benchmarks/gpu_check.py times (a goal, not a measurement)"),
    ],
    "08_classifier_free_guidance.ipynb": [
        (r"0\.1–0\.2", "the label-dropout range the CFG paper recommends (cited)"),
        (r"7\.5", "diffusers' default guidance_scale (cited)"),
        (r"6\.5", "that default written as w = guidance_scale − 1"),
    ],
}

INTEGER = r"\d{1,3}(?:,\d{3})+|\d+"       # 48,000 or 48000
NUMBER = re.compile(
    rf"(?<![\w.])(?:{INTEGER})?\.\d+(?:\s*(?:%|\\%|×|\\times(?!\s*10)|times\b|-?fold\b))?"   # a decimal (and its unit)
    rf"|(?<![\w.])(?:{INTEGER})\s*(?:%|\\%|×|times\b|-?fold\b)"                     # an integer percentage or ratio
)


def _markdown(page: Path) -> list[tuple[str, str]]:
    """[(where, markdown text)] of a page: each markdown cell of a notebook, or the whole .md file."""
    if page.suffix == ".md":
        return [(page.name, page.read_text())]
    nb = json.loads(page.read_text())
    return [(f"{page.name} cell {i}", "".join(c["source"])) for i, c in enumerate(nb["cells"])
            if c["cell_type"] == "markdown"]


# Fenced blocks whose body is code or a pasted value, not prose: dropped whole. Every other directive (dropdown,
# note, admonition, math …) is prose: its fence lines and options go, its body is scanned.
CODE_FENCES = re.compile(r"(?:code-cell|code-block|code|sourcecode|literalinclude|glue(?::\w+)?|raw|mermaid)")
FENCE = re.compile(r"^\s*(`{3,}|~{3,}|:{3,})\s*(?:\{([^}]*)\})?(.*)$")


def strip_fences(text: str) -> str:
    """``text`` with code fences removed and directive fences unwrapped (their bodies kept as prose), line by line,
    so that the backticks of one fence never pair with those of the next."""
    out, stack = [], []          # stack of (fence marker, drop body?)
    skip_options = False
    for line in text.split("\n"):
        m = FENCE.match(line)
        if stack and m and m.group(1)[0] == stack[-1][0][0] and len(m.group(1)) >= len(stack[-1][0]) \
                and not m.group(2) and not m.group(3).strip():
            stack.pop()                                      # a closing fence
            skip_options = False
            continue
        if stack and stack[-1][1]:
            continue                                         # inside code
        if m and (m.group(2) is not None or m.group(1)[0] in "`~"):
            name = (m.group(2) or "").strip()
            is_code = m.group(2) is None or bool(CODE_FENCES.fullmatch(name))
            stack.append((m.group(1), is_code))
            if not is_code:
                out.append(m.group(3))                       # a directive's title is prose
                skip_options = True
            continue
        if skip_options and re.match(r"^\s*:[\w-]+:", line):
            continue                                         # a directive's options (:class: dropdown)
        skip_options = False
        out.append(line)
    return "\n".join(out)


def typed_figures(text: str, page: str) -> list[str]:
    """The decimal numbers, percentages and ratios of ``text`` that are neither glued nor allowlisted."""
    text = strip_fences(text)
    for pattern in STRUCTURE:
        text = re.sub(pattern, " ", text, flags=re.S | re.M)
    for pattern, _why in CONSTANTS + PAGE_CONSTANTS.get(page, []):
        text = re.sub(rf"(?<![\w.])(?:{pattern})(?![\d])", " ", text)
    return [m.group(0).strip() for m in NUMBER.finditer(text)]


def test_scanner_finds_typed_figures_and_spares_structure():
    typed = "The shipped model scores 96.0 % and FD 10.64, 16× the images, 25% more, 25 times, 50-fold, 2480×."
    assert typed_figures(typed, "x.md") == ["96.0 %", "10.64", "16×", "25%", "25 times", "50-fold", "2480×"]
    spared = ("## 5.1 The bound\nBy (5.2) and (5.5)–(5.7), section 5.8 and eq. 4.9; {glue:text}`fd:.2f` and "
              "{glue:text}`05_training.ipynb::acc:.1%`; `ema_decay=0.999`; torch 2.13.0; $\\beta_T = 0.02$; 8×8 digits; §2.2.\n"
              "```python\nx = 0.5\n```\n$$\na = b\n\\tag{5.3}\n$$")
    assert typed_figures(spared, "x.md") == []
    # the body of a directive is prose, also between two directives (their backticks must not pair up)
    dropdowns = ("```{dropdown} Solution 1\n:color: info\nIt is 7 %.\n```\n\nBetween: 0.25.\n\n"
                 "```{dropdown} Solution 2\nAbout 3.5 units.\n```\n:::{note}\nA 2.0× gap.\n:::\n"
                 "```{code-cell} python\nx = 0.5\n```\n````{admonition} A\n```python\ny = 0.7\n```\n1.25\n````")
    assert typed_figures(dropdowns, "x.md") == ["7 %", "0.25", "3.5", "2.0×", "1.25"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_no_typed_figure_in_the_prose(page):
    found = [(where, n) for where, text in _markdown(page) for n in typed_figures(text, page.name)]
    assert not found, (
        f"{page.name}: {len(found)} figure(s) typed into the prose; glue them from the cell that computes them "
        "(myst_nb.glue(name, value, display=False) and {glue:text}`name:.3f`), or allowlist a definitional "
        "constant in tests/test_prose_numbers.py with its reason:\n"
        + "\n".join(f"  {where}: {n}" for where, n in found))
