"""Checkpoints: round trips, atomic writes, and a clear error for every broken pair."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import minitransformer as mt
import minitransformer.io.checkpoint as ckpt_mod
from minitransformer import nn
from minitransformer.io import (
    CheckpointError,
    flatten_state,
    load_checkpoint,
    load_model,
    save_checkpoint,
    save_model,
    sidecar_path,
    unflatten_state,
)
from minitransformer.optim import AdamW


def _arrays(rng):
    return {
        "w32": rng.standard_normal((3, 4)).astype(np.float32),
        "w64": rng.standard_normal(5),
        "ids": rng.integers(-5, 5, size=(2, 3)),
        "i32": np.arange(4, dtype=np.int32),
        "mask": rng.random(6) > 0.5,
        "bytes": np.arange(7, dtype=np.uint8),
        "scalar": np.array(2.5, dtype=np.float32),
        "strided": rng.standard_normal((4, 6))[:, ::2],  # not contiguous
    }


def test_round_trip_arrays_and_metadata(tmp_path, rng):
    arrays = _arrays(rng)
    meta = {"step": np.int64(7), "loss": np.float32(0.5),
            "config": {"dim": 8, "betas": (0.9, 0.99)},
            "rng": np.random.default_rng(3).bit_generator.state, "note": None, "nan": float("nan")}
    path = save_checkpoint(tmp_path / "ckpt.safetensors", arrays, meta)
    assert path == tmp_path / "ckpt.safetensors" and sidecar_path(path) == tmp_path / "ckpt.json"
    tensors, loaded = load_checkpoint(path)
    assert set(tensors) == set(arrays)
    for k, v in arrays.items():
        assert tensors[k].dtype == v.dtype and tensors[k].shape == v.shape, k
        np.testing.assert_array_equal(tensors[k], v)
    assert loaded["step"] == 7 and isinstance(loaded["step"], int)
    assert loaded["loss"] == 0.5 and loaded["config"] == {"dim": 8, "betas": [0.9, 0.99]}
    assert loaded["rng"] == np.random.default_rng(3).bit_generator.state
    assert loaded["note"] is None and np.isnan(loaded["nan"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.json", "ckpt.safetensors"]


def test_suffix_is_appended(tmp_path):
    path = save_checkpoint(tmp_path / "run.step3", {"a": np.zeros(2)})
    assert path.name == "run.step3.safetensors" and sidecar_path(path).name == "run.step3.json"
    tensors, _ = load_checkpoint(tmp_path / "run.step3")
    np.testing.assert_array_equal(tensors["a"], np.zeros(2))


def test_device_arrays_are_saved(tmp_path, device, xp, rng):
    a = xp.asarray(rng.standard_normal(3))
    path = save_checkpoint(tmp_path / "d.safetensors", {"a": a, "t": mt.Tensor(a)})
    tensors, _ = load_checkpoint(path)
    np.testing.assert_array_equal(tensors["a"], mt.to_numpy(a))
    np.testing.assert_array_equal(tensors["t"], mt.to_numpy(a))


def test_metadata_must_be_json(tmp_path):
    with pytest.raises(TypeError, match=r"metadata\['opt'\]\['m'\].*arrays belong in `tensors`"):
        save_checkpoint(tmp_path / "x.safetensors", {}, {"opt": {"m": np.zeros(2)}})
    assert list(tmp_path.iterdir()) == []  # refused before anything was written
    with pytest.raises(TypeError, match="NumPy or CuPy array or Tensor"):
        save_checkpoint(tmp_path / "x.safetensors", {"a": [1.0]})


def _boom(*args, **kwargs):
    raise OSError("disk full (simulated)")


def test_writer_failure_leaves_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "c.safetensors", {"a": np.ones(3)}, {"step": 1})
    before = sorted(p.name for p in tmp_path.iterdir())

    import safetensors.numpy

    def partial_then_fail(tensors, filename, *args, **kwargs):
        with open(filename, "wb") as f:
            f.write(b"\x10\x00\x00\x00partial")  # half a file, then the writer dies
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(safetensors.numpy, "save_file", partial_then_fail)
    with pytest.raises(OSError, match="simulated"):
        save_checkpoint(path, {"a": np.zeros(3)}, {"step": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no temp file left behind
    tensors, meta = load_checkpoint(path)
    np.testing.assert_array_equal(tensors["a"], np.ones(3))
    assert meta == {"step": 1}


def test_failure_before_sidecar_is_detected_not_loaded(tmp_path, monkeypatch):
    # The arrays are renamed into place first; if the sidecar write dies, the stale sidecar
    # (or none) no longer matches, and loading says so instead of mixing two saves.
    path = save_checkpoint(tmp_path / "c.safetensors", {"a": np.ones(3)}, {"step": 1})
    monkeypatch.setattr(ckpt_mod.json, "dump", _boom)
    with pytest.raises(OSError, match="simulated"):
        save_checkpoint(path, {"a": np.zeros(4)}, {"step": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.json", "c.safetensors"]
    assert json.loads(sidecar_path(path).read_text())["metadata"] == {"step": 1}  # intact
    with pytest.raises(CheckpointError, match="c.safetensors"):
        load_checkpoint(path)

    fresh = tmp_path / "fresh.safetensors"
    with pytest.raises(OSError, match="simulated"):
        save_checkpoint(fresh, {"a": np.zeros(4)})
    with pytest.raises(FileNotFoundError, match=r"sidecar .*fresh\.json is missing"):
        load_checkpoint(fresh)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no checkpoint file .*nope\.safetensors"):
        load_checkpoint(tmp_path / "nope.safetensors")


def test_missing_sidecar(tmp_path):
    path = save_checkpoint(tmp_path / "c.safetensors", {"a": np.ones(3)})
    sidecar_path(path).unlink()
    with pytest.raises(FileNotFoundError, match=r"c\.json is missing"):
        load_checkpoint(path)


def test_truncated_file(tmp_path, rng):
    path = save_checkpoint(tmp_path / "c.safetensors", _arrays(rng))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"c\.safetensors has \d+ bytes.*truncated"):
        load_checkpoint(path)


def test_corrupt_file(tmp_path, rng):
    path = save_checkpoint(tmp_path / "c.safetensors", _arrays(rng))
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # one flipped byte, same size
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"checksum mismatch for .*c\.safetensors.*corrupt"):
        load_checkpoint(path)


def test_sidecar_from_another_save(tmp_path):
    a = save_checkpoint(tmp_path / "a.safetensors", {"x": np.ones(3)})
    b = save_checkpoint(tmp_path / "b.safetensors", {"x": np.zeros(3)})
    os.replace(sidecar_path(b), sidecar_path(a))
    with pytest.raises(CheckpointError, match="checksum mismatch.*different saves"):
        load_checkpoint(a)


def test_corrupt_sidecar(tmp_path):
    path = save_checkpoint(tmp_path / "c.safetensors", {"a": np.ones(3)})
    side = sidecar_path(path)
    side.write_text(side.read_text()[:20])
    with pytest.raises(CheckpointError, match=r"sidecar .*c\.json is not valid JSON"):
        load_checkpoint(path)


def test_unparseable_file_without_verification(tmp_path):
    path = save_checkpoint(tmp_path / "c.safetensors", {"a": np.ones(3)})
    path.write_bytes(b"\xff" * 64)
    with pytest.raises(CheckpointError, match=r"c\.safetensors is not a readable safetensors"):
        load_checkpoint(path, verify=False)


class _Net(nn.Module):
    def __init__(self, out=3):
        super().__init__()
        self.weight = nn.Parameter(mt.randn(4, out, rng=np.random.default_rng(0)))
        self.bias = nn.Parameter(mt.zeros(out))
        self.register_buffer("center", np.zeros((1, out), dtype=np.float32))


def test_save_and_load_model(tmp_path, device):
    src = _Net().to(device)
    src.register_buffer("center", src.center + 1)  # buffers travel too
    path = save_model(tmp_path / "m.safetensors", src, {"step": 5})
    dst = _Net().to(device)
    dst.weight.data[...] = 0
    assert load_model(path, dst) == {"step": 5}
    np.testing.assert_array_equal(dst.weight.numpy(), src.weight.numpy())
    np.testing.assert_array_equal(mt.to_numpy(dst.center), np.ones((1, 3)))
    assert dst.weight.device == mt.backend.as_device(device)


def test_load_model_mismatch_names_the_file(tmp_path):
    path = save_model(tmp_path / "m.safetensors", _Net(out=3))
    with pytest.raises(nn.StateDictError, match=r"(?s)m\.safetensors.*shape mismatches"):
        load_model(path, _Net(out=5))


def test_optimizer_resume_through_disk_continues_identically(tmp_path, device, xp, rng):
    """Save model + AdamW state mid-run, load into fresh objects, continue: same numbers."""
    grads = [rng.standard_normal((4, 3)) for _ in range(6)]

    def run(net, opt, gs):
        for g in gs:
            net.weight.grad = xp.asarray(g, dtype=np.float32)
            net.bias.grad = xp.asarray(g.sum(0), dtype=np.float32)
            opt.step()

    def make():
        net = _Net().to(device)
        return net, AdamW([{"params": [net.weight]}, {"params": [net.bias], "wd_mult": 0.0}],
                          lr=0.01, weight_decay=0.1)

    ref, ref_opt = make()
    run(ref, ref_opt, grads)

    net, opt = make()
    run(net, opt, grads[:3])
    opt_arrays, opt_meta = flatten_state(opt.state_dict(), "optimizer")
    save_checkpoint(tmp_path / "r.safetensors", {**net.state_dict(), **opt_arrays},
                    {"step": 3, "optimizer": opt_meta})

    tensors, meta = load_checkpoint(tmp_path / "r.safetensors")
    net2, opt2 = make()
    net2.load_state_dict({k: v for k, v in tensors.items() if not k.startswith("optimizer.")})
    opt2.load_state_dict(unflatten_state(meta["optimizer"], tensors))
    run(net2, opt2, grads[3:])
    np.testing.assert_array_equal(net2.weight.numpy(), ref.weight.numpy())
    np.testing.assert_array_equal(net2.bias.numpy(), ref.bias.numpy())


def test_flatten_state_round_trip():
    tree = {"state": {0: {"step": 2, "m": np.ones(2)}}, "groups": [{"betas": (0.9, 0.99)}]}
    arrays, skeleton = flatten_state(tree, "opt")
    assert list(arrays) == ["opt.state.0.m"]
    json.dumps(skeleton)  # the skeleton is plain JSON
    back = unflatten_state(json.loads(json.dumps(skeleton)), arrays)
    assert back["state"]["0"]["step"] == 2 and back["groups"] == [{"betas": [0.9, 0.99]}]
    np.testing.assert_array_equal(back["state"]["0"]["m"], np.ones(2))
    with pytest.raises(KeyError, match="opt.state.0.m"):
        unflatten_state(skeleton, {})
