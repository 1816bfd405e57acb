"""The layering of design §2, enforced by parsing every module's imports with ``ast``.

1. Only ``backend.py`` imports ``cupy`` / ``cupyx``.
2. Each package imports only from packages above it in ``LAYERS`` (and from itself).
3. The one exception: ``autograd/tensor.py`` imports ``functional`` inside a function, so
   that the Tensor operators can call the ops (documented in that module's docstring).
4. No module inside a package imports the top-level ``minitransformer`` namespace (it
   imports everything, so that would be an import from every layer at once).
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "minitransformer"

# Design §2 lists the packages top to bottom. The listing puts train/ above eval/, io/ and
# viz/, but train is the composition root (the loop saves checkpoints with io/, monitors
# k-NN accuracy with eval/, plots with viz/), so it moves to the bottom; io/ (checkpoints,
# weight import onto models/) sits above eval/ (which may load weights) and viz/. Every
# other package keeps the design's order. `testing.py` re-exports autograd's gradcheck.
# The teaching layers sit below it all: `pretrained` rebuilds the recipes' models from their
# shipped checkpoints, and `exercises` compares a learner's answers with any of the library.
# `distributed` (the MPI collectives, issue 16) sits right below autograd: its all-reduce and
# all-gather are differentiable (autograd Functions), and the objectives (CLIP's gathered
# features, DINO's center, Sinkhorn-Knopp) and models (synchronised BatchNorm) call it.
LAYERS = [
    "backend", "autograd", "distributed", "testing", "functional", "nn", "models", "objectives",
    "optim", "data", "io", "eval", "viz", "train", "pretrained", "exercises",
]
RANK = {name: i for i, name in enumerate(LAYERS)}

# (module, imported layer) pairs allowed against the order, each with its reason.
DEFERRED = {
    # Tensor.__add__ & co. call the ops; imported on first use (see autograd/tensor.py).
    ("autograd/tensor.py", "functional"),
}


def _modules():
    return sorted(p for p in PACKAGE_DIR.rglob("*.py") if "__pycache__" not in p.parts)


def _layer_of(path: Path) -> str | None:
    """The layer a source file belongs to; None for the root's __init__/__main__."""
    rel = path.relative_to(PACKAGE_DIR)
    if len(rel.parts) == 1:
        return None if rel.stem in ("__init__", "__main__") else rel.stem
    return rel.parts[0]


@functools.cache
def _imports(path: Path) -> tuple[tuple[str, int], ...]:
    """(absolute module name, line) for every import statement in a file of the package."""
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    package = parts[:-1]  # the file's own package (for __init__.py: the package it starts)
    return tuple(_imports_in(path.read_text(encoding="utf-8"), package))


def _imports_in(source: str, package: list[str]):
    """(absolute module name, line) for every import in ``source``, a module of ``package``
    (a list like ["minitransformer", "nn"]); imports inside functions count too."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: level 1 is the package itself, 2 its parent, ...
                base = package[: len(package) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            if node.module is None or prefix == "minitransformer":
                # `from .. import backend, functional`: each name may be a module
                for alias in node.names:
                    yield f"{prefix}.{alias.name}", node.lineno
            else:
                yield prefix, node.lineno


def _target_layer(module: str) -> str | None:
    """The layer an import of ``minitransformer.X...`` reaches; "<root>" for the namespace."""
    parts = module.split(".")
    if parts[0] != "minitransformer":
        return None
    if len(parts) == 1:
        return "<root>"
    name = parts[1]
    if (PACKAGE_DIR / name).is_dir() or (PACKAGE_DIR / f"{name}.py").is_file():
        return name
    return "<root>"  # `from minitransformer import tensor`: a name of the root namespace


def test_every_package_has_a_layer():
    packages = {p.name for p in PACKAGE_DIR.iterdir() if (p / "__init__.py").is_file()}
    top_modules = {p.stem for p in PACKAGE_DIR.glob("*.py")} - {"__init__", "__main__"}
    assert packages | top_modules <= set(LAYERS), sorted((packages | top_modules) - set(LAYERS))


def test_only_backend_imports_cupy():
    offenders = [
        f"{path.relative_to(PACKAGE_DIR)}:{line} imports {module}"
        for path in _modules()
        if path.name != "backend.py" or path.parent != PACKAGE_DIR
        for module, line in _imports(path)
        if module.split(".")[0] in ("cupy", "cupyx")
    ]
    assert not offenders, "\n".join(offenders)


def test_packages_import_only_upward():
    offenders = []
    for path in _modules():
        layer = _layer_of(path)
        if layer is None:
            continue
        rel = str(path.relative_to(PACKAGE_DIR))
        for module, line in _imports(path):
            target = _target_layer(module)
            if target is None or target == layer:
                continue
            if target == "<root>":
                offenders.append(f"{rel}:{line} imports the root namespace ({module})")
            elif RANK[target] > RANK[layer] and (rel, target) not in DEFERRED:
                offenders.append(f"{rel}:{line} ({layer}) imports {module} from below ({target})")
    assert not offenders, "\n".join(offenders)


def test_the_deferred_functional_import_is_inside_a_function_and_documented():
    path = PACKAGE_DIR / "autograd" / "tensor.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top_level = {id(n) for n in tree.body}
    found = False
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and any(a.name == "functional" for a in node.names):
            assert id(node) not in top_level, "functional must be imported lazily in tensor.py"
            found = True
    assert found
    assert "functional" in (ast.get_docstring(tree) or "")


@pytest.mark.parametrize("source, expected", [
    ("from .. import backend", {"minitransformer.backend"}),
    ("from ..autograd import Tensor", {"minitransformer.autograd"}),
    ("from . import linear", {"minitransformer.nn.linear"}),
    ("from .module import Module", {"minitransformer.nn.module"}),
    ("import minitransformer.functional as F", {"minitransformer.functional"}),
    ("from minitransformer import tensor", {"minitransformer.tensor"}),
    ("def f():\n    import cupy", {"cupy"}),
])
def test_the_import_parser_itself(source, expected):
    # as if the source were a module of minitransformer/nn/
    assert {module for module, _ in _imports_in(source, ["minitransformer", "nn"])} == expected
    assert _target_layer("minitransformer.tensor") == "<root>"
    assert _target_layer("minitransformer.nn.linear") == "nn"
