"""The GitHub Actions workflows are valid and call the README's commands.

They cannot run here, so their syntax is checked against the GitHub-workflow JSON schema that check-jsonschema
vendors (``--builtin-schema vendor.github-workflows``: offline, no download), and their content against the README.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"
BUILD = "jupyter-book build . -W --keep-going"


def _check(*files: Path) -> subprocess.CompletedProcess:
    pytest.importorskip("check_jsonschema", reason="pip install check-jsonschema (in requirements.txt)")
    env = dict(os.environ, HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9",
               http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9")   # prove it works offline
    return subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows",
                           *map(str, files)], capture_output=True, text=True, env=env, timeout=120)


def test_both_workflows_exist():
    assert (WORKFLOWS / "book.yml").is_file() and (WORKFLOWS / "tests.yml").is_file()


@pytest.mark.parametrize("name", ["book.yml", "tests.yml"])
def test_workflow_matches_the_github_schema_offline(name):
    r = _check(WORKFLOWS / name)
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_schema_check_can_fail(tmp_path):
    bad = tmp_path / "bad.yml"
    text = (WORKFLOWS / "tests.yml").read_text()
    bad.write_text(text.replace("runs-on: ubuntu-latest", "runs_on: ubuntu-latest"))   # a misspelt key
    r = _check(bad)
    assert r.returncode != 0, "a workflow without runs-on must fail the schema"


def _readme_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    return re.findall(r"^pip install -r requirements\.txt && .+$", readme, re.M)


def test_readme_still_has_the_two_commands():
    cmds = _readme_commands()
    assert any(c.endswith(BUILD) for c in cmds) and any(c.endswith("&& pytest") for c in cmds), cmds


def test_book_workflow_builds_with_the_readme_command_and_deploys_to_pages():
    text = (WORKFLOWS / "book.yml").read_text()
    build = [c for c in _readme_commands() if c.endswith(BUILD)][0]
    assert build in text
    assert "actions/upload-pages-artifact@" in text and "path: _build/html" in text
    assert "actions/deploy-pages@" in text and "pages: write" in text and "id-token: write" in text
    assert "download.pytorch.org/whl/cpu" in text, "install the CPU build of torch first"


def test_tests_workflow_runs_the_readme_commands_on_push_and_pull_request():
    text = (WORKFLOWS / "tests.yml").read_text()
    for cmd in _readme_commands():
        assert cmd in text, f"tests.yml must run the README's command: {cmd}"
    assert re.search(r"^on:\s*\n(\s+.*\n)*?\s+push:", text, re.M) and "pull_request:" in text
    assert "download.pytorch.org/whl/cpu" in text, "install the CPU build of torch first"
    assert "chromium" in text and "playwright" in text and "bash scripts/fetch_offline_assets.sh" in text
    assert text.index("download.pytorch.org") < text.index(BUILD), "torch (CPU) before requirements.txt"
