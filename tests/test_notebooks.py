"""Every notebook in notebooks/ executes top to bottom in tiny mode, with each "your turn"
exercise cell filled by its reference solution, so that every exercise stays solvable.

Each runs in a fresh Jupyter kernel with ``MINITRANSFORMER_TINY=1`` (small sizes) and
``MINITRANSFORMER_DEVICE`` unset (a notebook picks the GPU itself when there is one), from
the notebooks/ folder. The kernel is this interpreter: a kernelspec written to a temporary
folder names ``sys.executable``, so a ``python3`` kernelspec installed elsewhere on the
machine (another Python, another venv) cannot be picked up by mistake.
"""

from __future__ import annotations

import ast
import json
import os
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
KERNEL_NAME = "minitransformer-test"
# an exercise cell (tagged "exercise") ends with `exercises.check("NAME", FUNCTION)`
CHECK_CALL = re.compile(r"""exercises\.check\(\s*["']([\w-]+)["']\s*,\s*(\w+)\s*\)""")
LESSONS = [p for p in NOTEBOOKS if p.name[:2].isdigit() and int(p.name[:2]) <= 9]


def exercise_cells(nb) -> list[tuple[int, str, str]]:
    """(cell index, exercise name, the learner's function name) of each exercise cell."""
    found = []
    for i, cell in enumerate(nb.cells):
        if "exercise" in cell.get("metadata", {}).get("tags", []):
            calls = CHECK_CALL.findall(cell.source)
            assert len(calls) == 1, f"exercise cell {i} must call exercises.check once"
            found.append((i, *calls[0]))
    return found


def fill_with_solutions(nb) -> None:
    """Replace each exercise cell by its reference solution and a check that must pass."""
    for i, name, fn in exercise_cells(nb):
        nb.cells[i].source = (f"{fn} = exercises.solution({name!r})\n"
                              f"assert exercises.check({name!r}, {fn})")


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
    fill_with_solutions(nb)
    client = nbclient.NotebookClient(
        nb, kernel_name=KERNEL_NAME, timeout=600,
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},  # cwd of the kernel
    )
    client.execute()  # raises CellExecutionError naming the cell and the traceback


# Five notebooks also run with the device set to cuda on the strict CuPy stand-in
# (tests/cupy_standin.py): the attention walkthrough, CLIP with a shipped checkpoint, DINO's
# training loops written by hand (their metrics are device scalars), the GPU walkthrough, and
# the real-model loaders.
ON_STANDIN = [NOTEBOOK_DIR / name for name in (
    "01_self_attention.ipynb", "07_clip.ipynb", "08_dino.ipynb", "10_training_on_gpu.ipynb",
    "11_real_models.ipynb")]


@pytest.mark.slow
@pytest.mark.parametrize("path", ON_STANDIN, ids=[p.name for p in ON_STANDIN])
def test_notebook_runs_with_device_cuda_on_the_cupy_standin(path, kernel_env, monkeypatch):
    """What a GPU user runs: MINITRANSFORMER_DEVICE=cuda, every array on the device. The
    stand-in refuses implicit host copies and NumPy operands as CuPy does (no GPU in CI)."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("MINITRANSFORMER_CUPY_STANDIN", "tests.cupy_standin")
    monkeypatch.setenv("MINITRANSFORMER_DEVICE", "cuda")
    nb = nbformat.read(path, as_version=4)
    fill_with_solutions(nb)
    nb.cells.append(nbformat.v4.new_code_cell(
        "assert device == 'cuda' and type(mt.backend.cupy()).__name__ == 'module', device"))
    nbclient.NotebookClient(nb, kernel_name=KERNEL_NAME, timeout=600,
                            resources={"metadata": {"path": str(NOTEBOOK_DIR)}}).execute()


@pytest.mark.parametrize("path", LESSONS, ids=[p.name for p in LESSONS])
def test_notebook_has_three_exercises_left_to_the_learner(path):
    nbformat = pytest.importorskip("nbformat")
    from minitransformer import exercises

    nb = nbformat.read(path, as_version=4)
    cells = exercise_cells(nb)
    assert len(cells) >= 3, f"{path.name}: {len(cells)} exercise cells (tag 'exercise'), want 3+"
    for i, name, fn in cells:
        assert name in exercises.names(), f"{path.name} cell {i}: unknown exercise {name!r}"
        source = nb.cells[i].source
        assert f"def {fn}(" in source, f"{path.name} cell {i}: no `def {fn}(` for the learner"
        assert "NotImplementedError" in source, (
            f"{path.name} cell {i}: the learner's function should start as a stub raising "
            "NotImplementedError, not as the solution")


def _names_read(source: str) -> set[str]:
    """The names a code cell reads (IPython magics and shell lines dropped)."""
    code = "\n".join(line for line in source.splitlines()
                     if not re.match(r"\s*(%{1,2}[A-Za-z]|!)", line))
    return {n.id for n in ast.walk(ast.parse(code))
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


@pytest.mark.parametrize("path", LESSONS, ids=[p.name for p in LESSONS])
def test_later_cells_do_not_need_the_learners_answers(path):
    """A learner who skips an exercise can still run the notebook to the end: no later cell
    reads the function the learner was asked to write (its stub raises NotImplementedError).
    The suite fills the exercises with solutions, so only this test sees such a cell."""
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(path, as_version=4)
    for i, _, fn in exercise_cells(nb):
        for j in range(i + 1, len(nb.cells)):
            cell = nb.cells[j]
            if cell.cell_type != "code" or "exercise" in cell.metadata.get("tags", []):
                continue
            assert fn not in _names_read(cell.source), (
                f"{path.name}: cell {j} uses {fn}, the learner's answer to the exercise in "
                f"cell {i}; use the library's function there")


def test_every_exercise_is_in_a_notebook():
    nbformat = pytest.importorskip("nbformat")
    from minitransformer import exercises

    used = {name for path in LESSONS
            for _, name, _ in exercise_cells(nbformat.read(path, as_version=4))}
    missing = sorted(set(exercises.names()) - used)
    assert not missing, f"exercises no notebook asks for: {missing}"
