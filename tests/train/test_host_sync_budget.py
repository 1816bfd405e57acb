"""The host-synchronisation budget of the training loop (issue 14): in the steady state of
every recipe, at most one device-to-host transfer per logging interval.

Counted with the CuPy stand-in's transfer counter (tests/cupy_standin.py: every ``.get()``,
``.item()``, ``float()``, ``bool()``, ``int()``, ``.tolist()`` and print of a device array),
so these tests run in the cuda half: ``pytest --cupy-standin -k cuda``. Each recipe's tiny
preset trains through ``train()`` itself (the loop, its logging and its checks included);
the counter is read when ``train_step`` is entered, so the window of K steps after W warm-up
steps holds exactly those steps' work and the loop's reads after each of them.

Data-dependent shapes (``nonzero``, boolean-mask indexing, ...) are synchronisations too on a
GPU (CuPy reads the result's size back), which the counter cannot see: the window is also
watched for them, and must have none.

Checkpoints and evaluations: ``test_budget_per_logging_interval`` runs without them (no
``save_every``, no ``eval_every``; the final save and evaluation come after the window);
``test_budget_with_checkpoints_and_evaluations`` saves and evaluates every L steps and counts
the transfers made inside ``_save`` (the state copied to the host to be written) and inside
``evaluate`` separately: they are excluded from the budget, which the rest still meets.
"""

from __future__ import annotations

from typing import Any

import pytest

import minitransformer as mt
from minitransformer.train import loop, make_recipe, train

# recipe -> (preset, overrides): the tiny presets, and both MIM targets
CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "supervised": ("tiny", {}),
    "mlm": ("tiny", {}),
    "mim-pixel": ("tiny", {"target": "pixel"}),
    "mim-token": ("tiny", {"target": "token", "mask": "block"}),
    "clip": ("tiny", {}),
    "dino": ("tiny", {}),
    "dinov2": ("tiny", {}),
}
W, K, L = 3, 6, 3  # warm-up steps, counted steps, logging interval (W and K multiples of L)

# Calls whose result's shape depends on the data: CuPy must read a count back to the host to
# allocate it (an implicit synchronisation the stand-in's transfer counter does not see, since
# NumPy computes it in place). Boolean-mask indexing is one too.
SIZE_FROM_DATA = ("nonzero", "flatnonzero", "argwhere", "unique", "compress", "extract")


def standin() -> Any:
    """The CuPy stand-in module, or None when the cuda half runs elsewhere (or not at all)."""
    cp = mt.backend.cupy()
    return cp if getattr(cp, "IS_STANDIN", False) else None


def count_steps(case: str, out_dir: Any, save_and_eval: bool = False) -> dict[str, Any]:
    """Train ``case`` for W + K + 1 steps on the stand-in, logging every L steps; return the
    transfers made from entering step W to entering step W + K (``window``), those made
    inside checkpoint saves and evaluations in that window (``excluded``) and their kinds."""
    cp = standin()
    name = case.split("-")[0]
    preset, overrides = CASES[case]
    recipe = make_recipe(name, preset=preset, device="cuda", steps=W + K + 1, **overrides)
    marks: dict[int, int] = {}
    excluded = {"save": 0, "evaluate": 0}
    kinds: dict[str, int] = {}
    shapes: list[str] = []  # data-dependent shapes met inside the window
    inner_step = recipe.train_step
    call, getitem = cp._call, cp.ndarray.__getitem__

    def in_window() -> bool:
        return len(marks) - 1 in range(W, W + K)

    def watched_call(func: Any, args: tuple, kwargs: dict, where: str) -> Any:
        if in_window() and where.rsplit(".", 1)[-1] in SIZE_FROM_DATA:
            shapes.append(where)
        return call(func, args, kwargs, where)

    def watched_getitem(self: Any, key: Any) -> Any:
        parts = key if isinstance(key, tuple) else (key,)
        if in_window() and any(getattr(getattr(k, "dtype", None), "kind", "") == "b"
                               and getattr(k, "ndim", 0) > 0 for k in parts):
            shapes.append("boolean-mask indexing")
        return getitem(self, key)

    def train_step(step: int) -> Any:
        marks[step] = cp.transfers()
        if step == W:
            kinds.update(cp.transfer_counts())
        if step == W + K:
            counts = cp.transfer_counts()
            kinds.update({k: counts.get(k, 0) - kinds.get(k, 0) for k in counts})
        return inner_step(step)

    def counted(what: str, fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            before = cp.transfers()
            try:
                return fn(*args, **kwargs)
            finally:
                if in_window():
                    excluded[what] += cp.transfers() - before
        return wrapper

    recipe.train_step = train_step
    save = loop._save
    if save_and_eval:
        recipe.evaluate = counted("evaluate", recipe.evaluate)
        loop._save = counted("save", save)
    cp._call, cp.ndarray.__getitem__ = watched_call, watched_getitem
    try:
        cp.reset_transfers()
        train(recipe, out_dir, log_every=L, progress=False,
              save_every=L if save_and_eval else 0, eval_every=L if save_and_eval else 0)
    finally:
        loop._save = save
        cp._call, cp.ndarray.__getitem__ = call, getitem
    window = marks[W + K] - marks[W]
    return {"window": window, "excluded": excluded, "shapes": shapes,
            "kinds": {k: v for k, v in kinds.items() if v}}


@pytest.mark.parametrize("case", list(CASES))
def test_budget_per_logging_interval(case, device, tmp_path):
    """K steps logged every L: at most K / L device-to-host transfers (one per interval)."""
    if device != "cuda" or standin() is None:
        pytest.skip("counted on the CuPy stand-in (pytest --cupy-standin)")
    res = count_steps(case, tmp_path)
    assert res["window"] <= K // L, (
        f"{case}: {res['window']} device-to-host transfers in {K} steps logged every {L} "
        f"(budget {K // L}); by kind: {res['kinds']}")
    assert res["shapes"] == [], f"{case}: data-dependent shapes on the device: {res['shapes']}"


@pytest.mark.parametrize("case", list(CASES))
def test_budget_with_checkpoints_and_evaluations(case, device, tmp_path):
    """Saving and evaluating every L steps: outside ``_save`` and ``evaluate`` (which copy the
    state and the features to the host, and are counted apart), still K / L at most."""
    if device != "cuda" or standin() is None:
        pytest.skip("counted on the CuPy stand-in (pytest --cupy-standin)")
    res = count_steps(case, tmp_path, save_and_eval=True)
    assert res["excluded"]["save"] > 0  # the saves were counted apart, not missed
    rest = res["window"] - res["excluded"]["save"] - res["excluded"]["evaluate"]
    assert rest <= K // L, (
        f"{case}: {rest} device-to-host transfers outside saves and evaluations in {K} steps "
        f"(budget {K // L}); excluded: {res['excluded']}")


def test_bench_reports_the_transfers_per_step(device):
    """bench/host_sync.py's row: ms per step beside transfers per step, one read per
    logging interval (the same count as the test above, through the bench's own code)."""
    if device != "cuda" or standin() is None:
        pytest.skip("counted on the CuPy stand-in (pytest --cupy-standin)")
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "bench" / "host_sync.py"
    spec = importlib.util.spec_from_file_location("host_sync_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    for L in (1, 2):
        row = bench.measure("supervised", "tiny", "cuda", warmup=2, steps=4, log_every=L)
        assert row["steps"] == 4 and row["ms_per_step"] > 0
        assert row["transfers_per_step"] == row["budget_per_step"] == 1 / L
        assert row["to_device_per_step"] >= 2  # the images and the labels of each step


if __name__ == "__main__":  # the counts, for a report: python -m tests.train.test_host_sync_budget
    import os
    import tempfile

    os.environ.setdefault(mt.backend.STANDIN_VARIABLE, "tests.cupy_standin")
    for c in CASES:
        with tempfile.TemporaryDirectory() as d:
            r = count_steps(c, d)
        print(f"{c:11s} {r['window']:4d} transfers in {K} steps (budget {K // L})  {r['kinds']}"
              f"  data-dependent shapes: {len(r['shapes'])}")
