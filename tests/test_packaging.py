"""The install keeps working: the package metadata follows the current packaging rules (PEP 639 licence fields),
and building the package prints no deprecation notice, so the next one fails CI the day it appears instead of
breaking every reader's `pip install` on the date it announces (setuptools' `project.license` table: 2027-02-18)."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_license_is_an_spdx_expression_with_its_file():
    project = PYPROJECT["project"]
    assert isinstance(project["license"], str), "license must be an SPDX expression string (PEP 639), not a table"
    assert project["license"] == "MIT"
    for name in project["license-files"]:
        assert (ROOT / name).is_file(), f"license-files names {name}, which is missing"
    assert "MIT License" in (ROOT / "LICENSE").read_text()
    # PEP 639: a licence classifier beside an SPDX `license` is an error for current build backends
    assert not [c for c in project.get("classifiers", []) if c.startswith("License ::")]


def test_build_system_understands_the_license_fields():
    requires = PYPROJECT["build-system"]["requires"]
    st = [r for r in requires if re.match(r"setuptools\b", r)]
    assert st, "build-system.requires must name setuptools"
    m = re.search(r">=\s*(\d+)", st[0])
    assert m and int(m.group(1)) >= 77, f"setuptools >= 77 reads an SPDX `license` and `license-files`, got {st[0]!r}"


def deprecations(build_log: str) -> list[str]:
    """Lines of a build log that announce a deprecation (setuptools' notices, Python's DeprecationWarnings)."""
    return [line.strip() for line in build_log.splitlines() if re.search(r"deprecat", line, re.I)]


def test_deprecation_scan_catches_setuptools_notice():
    old = ("  .../setuptools/config/_apply_pyprojecttoml.py:82: BuildBackendWarning: `project.license` as a TOML "
           "table is deprecated\n  By 2027-Feb-18, you need to update your project and remove deprecated calls\n"
           "  warning: build_py: byte-compiling is disabled, skipping.\n")
    assert len(deprecations(old)) == 2
    assert deprecations("Successfully built diffusion-lab\n") == []


def test_wheel_builds_without_deprecation_notices(tmp_path):
    """A fresh, isolated build (the newest setuptools from the index, as a new reader's `pip install` gets it)."""
    src = tmp_path / "src"                # a copy: setuptools writes build/ and *.egg-info beside the sources
    shutil.copytree(ROOT / "diffusion_lab", src / "diffusion_lab", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    out = tmp_path / "wheel"
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "-v", "-w", str(out),
                           "--disable-pip-version-check"], capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"pip wheel failed:\n{log[-3000:]}"
    wheels = list(out.glob("diffusion_lab-*.whl"))
    assert wheels, "no wheel was built"
    found = deprecations(log)
    assert not found, "the build prints deprecation notices:\n" + "\n".join(found)
    import zipfile
    names = zipfile.ZipFile(wheels[0]).namelist()
    assert any(n.endswith("licenses/LICENSE") for n in names), "the wheel must carry LICENSE (license-files)"
    meta = zipfile.ZipFile(wheels[0]).read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert "License-Expression: MIT" in meta
