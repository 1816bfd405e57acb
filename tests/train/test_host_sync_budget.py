"""The host-synchronisation budget of the training loop (issue 14): in the steady state of
every recipe, at most one device-to-host transfer per logging interval.

Counted with the CuPy stand-in's transfer counter (tests/cupy_standin.py: every ``.get()``,
``.item()``, ``float()``, ``bool()``, ``int()``, ``.tolist()`` and print of a device array,
and every data-dependent shape, ``nonzero``, boolean-mask indexing and the like, for which
CuPy reads a count back to size the result: kind ``"size_from_data"``), so these tests run in
the cuda half: ``pytest --cupy-standin -m gpu``. Each recipe's tiny preset trains through
``train()`` itself (the loop, its logging and its checks included); the counter is read when
``train_step`` is entered, so the window of K steps after W warm-up steps holds exactly those
steps' work and the loop's reads after each of them. The window must also hold no
data-dependent shape at all (masked dense computations instead), whatever the budget;
``test_an_injected_data_dependent_shape_breaks_the_budget`` shows both checks fail when one
is put into a step.

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



def standin() -> Any:
    """The CuPy stand-in module, or None when the cuda half runs elsewhere (or not at all)."""
    cp = mt.backend.cupy()
    return cp if getattr(cp, "IS_STANDIN", False) else None


def count_steps(case: str, out_dir: Any, save_and_eval: bool = False,
                recipe: Any = None) -> dict[str, Any]:
    """Train ``case`` (or ``recipe``, made for it) for W + K + 1 steps on the stand-in,
    logging every L steps; return the transfers made from entering step W to entering step
    W + K (``window``), those made inside checkpoint saves and evaluations in that window
    (``excluded``), the window's transfers by kind (``kinds``) and its data-dependent shapes
    (``shapes``: the ``"size_from_data"`` reads among them)."""
    cp = standin()
    if recipe is None:
        recipe = make_recipe_for(case)
    marks: dict[int, int] = {}
    excluded = {"save": 0, "evaluate": 0}
    kinds: dict[str, int] = {}
    inner_step = recipe.train_step

    def in_window() -> bool:
        return len(marks) - 1 in range(W, W + K)

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
    try:
        cp.reset_transfers()
        train(recipe, out_dir, log_every=L, progress=False,
              save_every=L if save_and_eval else 0, eval_every=L if save_and_eval else 0)
    finally:
        loop._save = save
    window = marks[W + K] - marks[W]
    kinds = {k: v for k, v in kinds.items() if v}
    return {"window": window, "excluded": excluded, "kinds": kinds,
            "shapes": kinds.get("size_from_data", 0)}


def make_recipe_for(case: str) -> Any:
    """``case``'s recipe on the cuda device, for W + K + 1 steps."""
    preset, overrides = CASES[case]
    return make_recipe(case.split("-")[0], preset=preset, device="cuda", steps=W + K + 1,
                       **overrides)


@pytest.mark.parametrize("case", list(CASES))
def test_budget_per_logging_interval(case, device, tmp_path):
    """K steps logged every L: at most K / L device-to-host transfers (one per interval)."""
    if device != "cuda" or standin() is None:
        pytest.skip("counted on the CuPy stand-in (pytest --cupy-standin)")
    res = count_steps(case, tmp_path)
    assert res["window"] <= K // L, (
        f"{case}: {res['window']} device-to-host transfers in {K} steps logged every {L} "
        f"(budget {K // L}); by kind: {res['kinds']}")
    assert res["shapes"] == 0, f"{case}: data-dependent shapes on the device: {res['kinds']}"


# what a step must not do: a boolean-mask assignment (gradients above a bound zeroed in place)
# and a one-argument where (the indices of the masked entries)
INJECTED = {
    "mask-assignment": lambda xp, g: g.__setitem__(g > 1e30, 0),
    "where-indices": lambda xp, g: xp.where(g > 0)[0],
}


@pytest.mark.parametrize("inject", list(INJECTED))
def test_an_injected_data_dependent_shape_breaks_the_budget(inject, device, tmp_path,
                                                             monkeypatch):
    """Both checks of ``test_budget_per_logging_interval`` can fail: one data-dependent shape
    per parameter, put into the supervised recipe's optimizer step, is counted by the
    stand-in (one read each, although no mask entry is True for ``_g > 1e30``) and takes the
    window far over its budget."""
    if device != "cuda" or standin() is None:
        pytest.skip("counted on the CuPy stand-in (pytest --cupy-standin)")
    recipe = make_recipe_for("supervised")
    inner = recipe.optimizer_step
    params = [p for g in recipe.optimizer.param_groups for p in g["params"]]

    def optimizer_step(loss: Any, step: int, before_step: Any = None, **kwargs: Any) -> Any:
        def before() -> None:  # after backward and clipping, before the AdamW update
            for p in params:
                _g = p.grad  # a device array
                INJECTED[inject](mt.backend.get_array_module(_g), _g)
            if before_step is not None:
                before_step()

        return inner(loss, step, before_step=before, **kwargs)

    monkeypatch.setattr(recipe, "optimizer_step", optimizer_step)
    res = count_steps("supervised", tmp_path, recipe=recipe)
    assert res["shapes"] == K * len(params), res["kinds"]
    assert res["window"] > K // L, res


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
    from ..bench_scripts import load_bench

    bench = load_bench("host_sync")
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
              f"  data-dependent shapes: {r['shapes']}")
