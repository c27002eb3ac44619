"""The test run pins the cpu profile, whatever the machine or the caller's environment says."""
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook, new_output

ROOT = Path(__file__).resolve().parents[1]


def test_this_process_runs_in_the_cpu_profile():
    from diffusion_lab import get_profile

    assert os.environ["DIFFUSION_LAB_PROFILE"] == "cpu"
    assert get_profile() == "cpu"


def test_nbval_kernels_run_in_the_cpu_profile_even_when_the_caller_asks_for_gpu():
    """A notebook whose stored output says 'cpu' passes nbval although pytest is started with the gpu profile set
    (as on a CUDA machine): the repository's conftest overrides it for the kernels too."""
    cell = new_code_cell("import diffusion_lab\nprint(diffusion_lab.get_profile())")
    cell.outputs = [new_output("stream", name="stdout", text="cpu\n")]
    cell.execution_count = 1
    nb = new_notebook(cells=[cell])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    folder = ROOT / "_build" / "profile_probe"        # inside the repository, where its conftest applies
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "profile_probe.ipynb"
    nbformat.write(nb, path)
    env = dict(os.environ, DIFFUSION_LAB_PROFILE="gpu", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(ROOT),
                           "--nbval", str(path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "1 passed" in proc.stdout
