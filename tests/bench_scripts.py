"""Loading and running the scripts of ``bench/`` from the tests: they are scripts, not a
package, so a test imports one from its path (its functions tested directly) or runs it as
a user would (a subprocess from the repository root)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def bench_path(name: str) -> Path:
    """``bench/<name>.py``."""
    return ROOT / "bench" / f"{name}.py"


def load_bench(name: str) -> ModuleType:
    """Import ``bench/<name>.py`` as a fresh module (its ``__main__`` block does not run)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", bench_path(name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_bench(name: str, *args: str, timeout: float = 600,
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python bench/<name>.py ARGS`` from the repository root, output captured as text."""
    return subprocess.run([sys.executable, str(bench_path(name)), *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=timeout, env=env)
