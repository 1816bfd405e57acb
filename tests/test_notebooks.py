"""Every notebook in notebooks/ executes top to bottom in tiny mode.

Each runs in a fresh Jupyter kernel with ``MINITRANSFORMER_TINY=1`` (small sizes) and
``MINITRANSFORMER_DEVICE`` unset (a notebook picks the GPU itself when there is one), from
the notebooks/ folder. The kernel is this interpreter: a kernelspec written to a temporary
folder names ``sys.executable``, so a ``python3`` kernelspec installed elsewhere on the
machine (another Python, another venv) cannot be picked up by mistake.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
KERNEL_NAME = "minitransformer-test"


@pytest.fixture
def kernel_env(tmp_path, monkeypatch):
    """A kernelspec for this interpreter, found first on JUPYTER_PATH, and the notebook env."""
    spec_dir = tmp_path / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "minitransformer tests",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    monkeypatch.setenv("JUPYTER_PATH", os.pathsep.join(
        filter(None, [str(tmp_path), os.environ.get("JUPYTER_PATH")])))
    monkeypatch.setenv("MINITRANSFORMER_TINY", "1")
    monkeypatch.delenv("MINITRANSFORMER_DEVICE", raising=False)
    # the kernel imports the package from this checkout whether or not it is pip-installed
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")


def test_there_are_notebooks():
    assert NOTEBOOKS, f"no notebooks in {NOTEBOOK_DIR}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_committed_without_outputs(path):
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(path, as_version=4)
    dirty = [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
             and (cell.get("outputs") or cell.get("execution_count") is not None)]
    assert not dirty, f"{path.name}: cells {dirty} have outputs; clear them before committing"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, kernel_env):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb, kernel_name=KERNEL_NAME, timeout=600,
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},  # cwd of the kernel
    )
    client.execute()  # raises CellExecutionError naming the cell and the traceback
