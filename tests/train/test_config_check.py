"""Resume refuses a changed configuration: every difference listed, old and new, unless the
setting is safe to change and named in ``allow``."""

from __future__ import annotations

import json

import pytest

from minitransformer.train import make_recipe
from minitransformer.train.config_check import SAFE_CHANGES, ConfigMismatch, compare_config


def _cfg(**kw):
    return make_recipe("supervised", preset="tiny", **kw).config()


@pytest.fixture(scope="module")
def base():
    return _cfg()


def test_identical_and_json_round_tripped_configs_pass(base):
    compare_config(base, dict(base))
    saved = json.loads(json.dumps(base))  # what the sidecar holds: tuples are lists
    assert isinstance(saved["betas"], list) and isinstance(base["betas"], tuple)
    compare_config(saved, base)


def test_every_change_is_listed_with_old_and_new_values(base):
    now = dict(base, seed=5, lr=0.001, preset="cpu", betas=(0.9, 0.98))
    with pytest.raises(ConfigMismatch) as e:
        compare_config(json.loads(json.dumps(base)), now)
    msg = str(e.value)
    assert "4 setting(s) differ" in msg
    for part in ("seed 0 -> 5", "lr 0.003 -> 0.001", 'preset "tiny" -> "cpu"',
                 "betas [0.9, 0.999] -> [0.9, 0.98]"):
        assert part in msg, (part, msg)
    assert "--overwrite" in msg and "--allow-changes steps" in msg
    assert "\n" not in msg
    assert set(e.value.changes) == {"seed", "lr", "preset", "betas"}
    assert e.value.changes["seed"] == (0, 5)


def test_recipe_name_and_missing_settings_count_as_changes(base):
    with pytest.raises(ConfigMismatch, match=r'recipe "supervised" -> "dino"'):
        compare_config(dict(base, recipe="supervised"), dict(base, recipe="dino"))
    older = {k: v for k, v in base.items() if k != "crop_scale"}
    with pytest.raises(ConfigMismatch, match=r"crop_scale \(not set\) -> 0.8"):
        compare_config(older, base)


def test_bools_are_not_numbers(base):
    with pytest.raises(ConfigMismatch, match="augment false -> 0"):
        compare_config(dict(base, augment=False), dict(base, augment=0))


def test_steps_change_needs_allow_and_then_passes(base):
    longer = dict(base, steps=12, eval_size=10)
    with pytest.raises(ConfigMismatch, match=r"--allow-changes steps,eval_size") as e:
        compare_config(base, longer)
    assert "steps 6 -> 12" in str(e.value) and "eval_size 64 -> 10" in str(e.value)
    compare_config(base, longer, allow=("steps", "eval_size"))
    compare_config(base, longer, allow="steps,eval_size")  # the command line's form
    with pytest.raises(ConfigMismatch, match="eval_size 64 -> 10") as e:
        compare_config(base, longer, allow=["steps"])
    assert "steps 6" not in str(e.value)  # the allowed change is not listed


def test_an_allowed_safe_setting_does_not_excuse_another_change(base):
    with pytest.raises(ConfigMismatch, match="seed 0 -> 1") as e:
        compare_config(base, dict(base, steps=12, seed=1), allow=["steps"])
    assert "cannot change in a resumed run" in str(e.value)


@pytest.mark.parametrize("name", ["seed", "dim", "lr", "preset", "batch_size"])
def test_allowing_a_setting_that_is_never_safe_is_an_error(base, name):
    assert name not in SAFE_CHANGES
    with pytest.raises(ValueError, match=f"{name} can never change") as e:
        compare_config(base, base, allow=[name])
    assert not isinstance(e.value, ConfigMismatch)


def test_allowing_an_unknown_setting_is_an_error(base):
    with pytest.raises(ValueError, match=r"unknown setting\(s\) 'stpes'.*steps"):
        compare_config(base, dict(base, steps=12), allow=["stpes"])


def test_the_safe_settings_exist_in_some_recipe():
    import dataclasses

    from minitransformer.train import RECIPES, recipe_class

    fields = {f.name for n in RECIPES for f in dataclasses.fields(recipe_class(n).Config)}
    assert set(SAFE_CHANGES) <= fields
