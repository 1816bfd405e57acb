"""The demo's training loop reads the losses once per logging interval, as ``train`` on the
command line does (issue 14: one device-to-host wait per interval, not per step), and what it
prints means the same whatever the interval."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from minitransformer.train import demo
from minitransformer.train.loop import default_log_every


class _Stop(Exception):
    pass


def test_the_demo_logs_at_the_command_lines_default_interval(tmp_path, monkeypatch):
    """The demo preset's 300 steps are logged every 3rd step (``train --log-every``'s
    default: steps // 100 in [1, 10]), not every step."""
    seen: dict[str, Any] = {}

    def fake_train(recipe: Any, out: Any, **kwargs: Any) -> Any:
        seen.update(kwargs, steps=recipe.steps)
        raise _Stop

    monkeypatch.setattr(demo, "train", fake_train)
    for steps in (300, 6, 5000):
        with pytest.raises(_Stop):
            demo.run_demo(tmp_path / str(steps), preset="tiny", steps=steps, progress=False,
                          quiet=True)
        assert seen["steps"] == steps and seen["log_every"] == default_log_every(steps)
    assert [default_log_every(s) for s in (300, 6, 5000)] == [3, 1, 10]


def _printed(text: str) -> str:
    """The demo's output without its wall time and its output folder."""
    return re.sub(r"in \d+ s", "in T s", text).replace("\\", "/")


@pytest.mark.slow
def test_what_the_demo_prints_is_the_same_whatever_the_logging_interval(tmp_path, capsys,
                                                                        monkeypatch):
    """8 steps logged every step and every 4th: the same training, so the same metrics,
    printed the same way; the metrics log holds one record per interval."""
    outputs, records = [], []
    for every in (1, 4):
        monkeypatch.setattr(demo, "default_log_every", lambda steps, every=every: every)
        out = tmp_path / "run"  # the same folder, so that the printed paths are the same
        res = demo.run_demo(out, preset="tiny", steps=8, progress=False)
        outputs.append((_printed(capsys.readouterr().out), res["trained"], res["baseline"]))
        lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        records.append([r["step"] for r in lines if "loss" in r])
    assert outputs[0] == outputs[1]
    assert "trained 8 steps in T s" in outputs[0][0] and "random init" in outputs[0][0]
    assert records == [[1, 2, 3, 4, 5, 6, 7, 8], [4, 8]]
