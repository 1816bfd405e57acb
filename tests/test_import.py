"""``import minitransformer`` stays light: no plotting, scikit-learn, SciPy, Numba or CuPy
until used.

Checked in a fresh interpreter, because this test session has long since imported them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("matplotlib", "sklearn", "scipy", "cupy", "cupyx", "numba", "llvmlite")

_PROBE = """
import json, sys
import minitransformer as mt
from minitransformer import models, nn
after_import = sorted(sys.modules)
import scipy.special  # a heavy import on purpose: the probe must see it
print(json.dumps([after_import, sorted(sys.modules)]))
"""


@pytest.fixture(scope="module")
def loaded_modules():
    """(modules after `import minitransformer`, modules after also importing scipy)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.pop("MINITRANSFORMER_DEVICE", None)
    out = subprocess.run([sys.executable, "-c", _PROBE], env=env, cwd=ROOT, check=True,
                         capture_output=True, text=True, timeout=120).stdout
    after_import, after_scipy = json.loads(out.strip().splitlines()[-1])
    return set(after_import), set(after_scipy)


def test_import_does_not_pull_in_heavy_libraries(loaded_modules):
    after_import, _ = loaded_modules
    assert "minitransformer" in after_import
    heavy = sorted(m for m in after_import if m.split(".")[0] in HEAVY)
    assert not heavy, f"importing minitransformer loaded {heavy}"


def test_the_probe_sees_a_heavy_import(loaded_modules):
    _, after_scipy = loaded_modules
    assert "scipy" in after_scipy
