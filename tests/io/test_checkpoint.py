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


# ------------------------------------------------------------------ the sidecar is checked
def _edit_sidecar(path, change):
    """Rewrite the sidecar of ``path`` as another valid JSON: ``change(record)`` edits the
    parsed record in place (as a user with a text editor would)."""
    side = sidecar_path(path)
    record = json.loads(side.read_text())
    change(record)
    side.write_text(json.dumps(record, indent=1))


def _saved(tmp_path, name="c", step=6):
    meta = {"step": step, "recipe": "dino", "lr": 0.001, "config": {"dim": 16, "depth": 2},
            "rng": np.random.default_rng(0).bit_generator.state,
            "optimizer": {"state": {"0": {"step": step}}}}
    return save_checkpoint(tmp_path / f"{name}.safetensors", {"w": np.ones((2, 3))}, meta)


@pytest.mark.parametrize("verify", [True, False])
@pytest.mark.parametrize("edit", [
    pytest.param(lambda r: r["metadata"].update(step=3), id="step"),
    pytest.param(lambda r: r["metadata"].update(lr=0.5), id="lr"),
    pytest.param(lambda r: r["metadata"]["rng"]["state"].update(state=12345), id="rng state"),
    pytest.param(lambda r: r["metadata"]["config"].update(dim=60000), id="config dim"),
    pytest.param(lambda r: r["metadata"].update(step=6.0), id="step as float"),
    pytest.param(lambda r: r["metadata"].pop("lr"), id="key removed"),
    pytest.param(lambda r: r["metadata"].update(extra=1), id="key added"),
    pytest.param(lambda r: r["metadata"]["optimizer"]["state"]["0"].update(step="6"),
                 id="nested type"),
    pytest.param(lambda r: r.update(num_bytes=r["num_bytes"] + 0), id="nothing (control)"),
])
def test_edited_sidecar_is_refused(tmp_path, edit, verify, request):
    path = _saved(tmp_path)
    _edit_sidecar(path, edit)
    if "control" in request.node.callspec.id:
        assert load_checkpoint(path, verify=verify)[1]["step"] == 6
        return
    with pytest.raises(CheckpointError, match=r"c\.json was edited after it was saved") as e:
        load_checkpoint(path, verify=verify)
    assert "c.safetensors" in str(e.value) and "metadata_sha256" in str(e.value)
    if request.node.callspec.id.startswith("step-"):
        assert "(step 3)" in str(e.value)  # the value the edited sidecar claims


def test_edited_sidecar_without_step_says_so(tmp_path):
    path = _saved(tmp_path)
    _edit_sidecar(path, lambda r: r["metadata"].pop("step"))
    with pytest.raises(CheckpointError, match=r"\(no step; keys \[\"config\",\"lr\""):
        load_checkpoint(path)


def test_metadata_moved_beside_other_weights_is_refused(tmp_path):
    # Two saves with the same metadata: the digest binds each sidecar to its own weights,
    # so copying the sha256/num_bytes of one into the other's sidecar is caught too.
    a = save_checkpoint(tmp_path / "a.safetensors", {"w": np.ones(3)}, {"step": 1})
    b = save_checkpoint(tmp_path / "b.safetensors", {"w": np.zeros(3)}, {"step": 1})
    rec_b = json.loads(sidecar_path(b).read_text())
    _edit_sidecar(a, lambda r: r.update(sha256=rec_b["sha256"]))
    with pytest.raises(CheckpointError, match="a.json was edited"):
        load_checkpoint(a, verify=False)


def test_edit_that_keeps_the_json_equal_is_accepted(tmp_path):
    # Reformatting (indentation, key order) changes no value: still the same checkpoint.
    path = _saved(tmp_path)
    side = sidecar_path(path)
    record = json.loads(side.read_text())
    side.write_text(json.dumps(dict(reversed(list(record.items())))))
    assert load_checkpoint(path)[1]["step"] == 6


def test_downgrading_the_sidecar_to_version_1_does_not_skip_the_check(tmp_path):
    path = _saved(tmp_path)
    _edit_sidecar(path, lambda r: (r.update(version=1), r["metadata"].update(step=3)))
    with pytest.raises(CheckpointError, match="was edited after it was saved"):
        load_checkpoint(path)


def _save_v1(path, tensors, metadata):
    """A pair exactly as the version-1 writer made it (no header record, sidecar v1)."""
    import hashlib

    from safetensors.numpy import save_file

    save_file(tensors, str(path))
    record = {"format": "minitransformer-checkpoint", "version": 1, "weights": path.name,
              "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
              "num_bytes": path.stat().st_size, "metadata": metadata}
    sidecar_path(path).write_text(json.dumps(record, indent=1))


def test_version_1_files_still_load(tmp_path):
    path = tmp_path / "old.safetensors"
    _save_v1(path, {"w": np.arange(6.0).reshape(2, 3)}, {"step": 4, "rng": {"a": [1, 2]}})
    tensors, meta = load_checkpoint(path, required={"step": int})
    np.testing.assert_array_equal(tensors["w"], np.arange(6.0).reshape(2, 3))
    assert meta == {"step": 4, "rng": {"a": [1, 2]}}
    # their weights are still checked against the sidecar
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_checkpoint(path)


def test_version_2_sidecar_without_its_digest_is_refused(tmp_path):
    path = _saved(tmp_path)
    _edit_sidecar(path, lambda r: r.pop("metadata_sha256"))
    with pytest.raises(CheckpointError, match=r"c\.json has metadata_sha256 null, not 64 "
                                              "lower-case hex digits"):
        load_checkpoint(path)


def test_weights_do_not_depend_on_the_metadata(tmp_path):
    # pretrained cards compare the checksums of two exports of the same arrays
    a = save_checkpoint(tmp_path / "a.safetensors", {"w": np.ones(3)}, {"step": 1})
    b = save_checkpoint(tmp_path / "b.safetensors", {"w": np.ones(3)}, {"step": 2})
    assert a.read_bytes() == b.read_bytes()


def _nested(depth):
    return "[" * depth + "]" * depth


# Each replaces the sidecar's text; every one must be a CheckpointError (never a KeyError,
# TypeError, RecursionError, UnicodeDecodeError) so load_latest falls back to the previous pair.
MALFORMED = {
    "truncated": lambda t: t[: len(t) // 2],
    "empty": lambda t: "",
    "not JSON": lambda t: "step = 6\n",
    "not UTF-8": lambda t: b"\xff\xfe{}".decode("latin-1"),
    "a list": lambda t: "[1, 2]",
    "a string": lambda t: '"minitransformer-checkpoint"',
    "null": lambda t: "null",
    "nested 100000 deep": lambda t: _nested(100_000),
    "metadata nested 100000 deep": lambda t: t.replace('"metadata": {', '"metadata": {"x": '
                                                       + _nested(100_000) + ", ", 1),
    "metadata nested 70 deep": lambda t: t.replace('"metadata": {', '"metadata": {"x": '
                                                   + _nested(70) + ", ", 1),
}
FIELD_EDITS = {
    "no format": lambda r: r.pop("format"),
    "other format": lambda r: r.update(format="pytorch"),
    "no version": lambda r: r.pop("version"),
    "newer version": lambda r: r.update(version=99),
    "version as text": lambda r: r.update(version="2"),
    "no sha256": lambda r: r.pop("sha256"),
    "sha256 a number": lambda r: r.update(sha256=12),
    "sha256 short": lambda r: r.update(sha256="abc"),
    "no num_bytes": lambda r: r.pop("num_bytes"),
    "num_bytes text": lambda r: r.update(num_bytes="123"),
    "num_bytes true": lambda r: r.update(num_bytes=True),
    "num_bytes negative": lambda r: r.update(num_bytes=-1),
    "num_bytes 40 GiB": lambda r: r.update(num_bytes=40 * 2**30),
    "no metadata": lambda r: r.pop("metadata"),
    "digest a number": lambda r: r.update(metadata_sha256=7),
    "metadata a list": lambda r: r.update(metadata=[1]),
    "metadata null": lambda r: r.update(metadata=None),
    "garbage rng state": lambda r: r["metadata"].update(rng="garbage"),
    "no step": lambda r: r["metadata"].pop("step"),
    "step as text": lambda r: r["metadata"].update(step="6"),
}


def _malform(path, how):
    side = sidecar_path(path)
    if how in MALFORMED:
        side.write_bytes(MALFORMED[how](side.read_text()).encode("latin-1"))
    else:
        _edit_sidecar(path, FIELD_EDITS[how])


@pytest.mark.parametrize("how", [*MALFORMED, *FIELD_EDITS])
def test_malformed_sidecar_is_a_checkpoint_error(tmp_path, how):
    path = _saved(tmp_path)
    _malform(path, how)
    with pytest.raises(CheckpointError, match=r"c\.(json|safetensors)"):
        load_checkpoint(path)


@pytest.mark.parametrize("how", ["truncated", "nested 100000 deep", "no step", "no sha256",
                                 "garbage rng state", "metadata a list", "num_bytes 40 GiB"])
def test_load_latest_falls_back_over_a_malformed_sidecar(tmp_path, how):
    from minitransformer.train.loop import checkpoint_path, load_latest

    _saved(tmp_path, checkpoint_path(tmp_path, 3).stem, step=3)
    newest = _saved(tmp_path, checkpoint_path(tmp_path, 6).stem, step=6)
    _malform(newest, how)
    with pytest.warns(RuntimeWarning, match=r"(?s)skipped unreadable.*ckpt-00000006"):
        _, meta, path = load_latest(tmp_path)
    assert meta["step"] == 3 and path.name == "ckpt-00000003.safetensors"


def test_required_keys_and_types(tmp_path):
    path = save_checkpoint(tmp_path / "c.safetensors", {}, {"step": 2, "flag": True, "rng": {}})
    need = {"step": int, "rng": dict}
    assert load_checkpoint(path, required=need)[1]["step"] == 2
    with pytest.raises(CheckpointError, match=r"c\.json has no 'recipe' in its metadata"):
        load_checkpoint(path, required={**need, "recipe": str})
    with pytest.raises(CheckpointError, match=r"metadata\['flag'\] is a bool \(true\), "
                                              "expected int"):
        load_checkpoint(path, required={"flag": int})
    with pytest.raises(CheckpointError, match=r"metadata\['rng'\] is a dict .*expected str or "
                                              "int"):
        load_checkpoint(path, required={"rng": (str, int)})


def test_too_deep_metadata_is_refused_when_saving(tmp_path):
    deep: list = []
    node = deep
    for _ in range(ckpt_mod.MAX_DEPTH):
        node.append([])
        node = node[0]
    with pytest.raises(ValueError, match=r"metadata\['x'\]\[0\].* nested more than"):
        save_checkpoint(tmp_path / "c.safetensors", {}, {"x": deep})
    cycle: dict = {}
    cycle["self"] = cycle
    with pytest.raises(ValueError, match="a cycle"):
        save_checkpoint(tmp_path / "c.safetensors", {}, {"c": cycle})
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="__metadata__"):
        save_checkpoint(tmp_path / "c.safetensors", {"__metadata__": np.ones(1)})


def test_deepest_metadata_that_saves_also_loads(tmp_path):
    deep: list = []
    node = deep
    for _ in range(ckpt_mod.MAX_DEPTH - 3):  # metadata -> "x" -> these lists
        node.append([])
        node = node[0]
    path = save_checkpoint(tmp_path / "c.safetensors", {}, {"x": deep})
    assert load_checkpoint(path)[1]["x"] == deep


# ------------------------------------------------------------------ sizes, before allocating
def _write_safetensors(path, header, data_bytes=0, sparse=False):
    """A weights file with the given header dict and ``data_bytes`` of zero data (a sparse
    file when ``sparse``), plus a sidecar that matches it, so only the header is wrong."""
    import hashlib

    text = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text)
        if sparse:
            f.truncate(8 + len(text) + data_bytes)
        else:
            f.write(bytes(data_bytes))
    digest = "0" * 64 if sparse else hashlib.sha256(path.read_bytes()).hexdigest()
    record = {"format": "minitransformer-checkpoint", "version": 1, "weights": path.name,
              "sha256": digest, "num_bytes": path.stat().st_size, "metadata": {"step": 1}}
    sidecar_path(path).write_text(json.dumps(record))


@pytest.fixture
def no_reading(monkeypatch):
    """Fail the test if the file is hashed or its arrays loaded."""
    import safetensors.numpy

    def forbidden(*args, **kwargs):
        raise AssertionError("the file was read before its sizes were checked")

    monkeypatch.setattr(ckpt_mod, "_sha256", forbidden)
    monkeypatch.setattr(safetensors.numpy, "load_file", forbidden)


def test_huge_file_is_refused_before_reading(tmp_path, no_reading):
    # dim=60000: a (60000, 60000) float32 array is 14.4 GB; a sparse file of that size
    # costs no disk, and is refused by its size alone, before it is hashed or mapped.
    path = tmp_path / "huge.safetensors"
    shape = [60000, 60000]
    nbytes = 60000 * 60000 * 4
    _write_safetensors(path, {"w": {"dtype": "F32", "shape": shape,
                                    "data_offsets": [0, nbytes]}}, nbytes, sparse=True)
    limit = ckpt_mod.MAX_CHECKPOINT_BYTES
    with pytest.raises(CheckpointError, match=rf"huge\.safetensors has \d+ bytes, more than "
                                              rf"the limit max_bytes={limit}"):
        load_checkpoint(path)


def test_header_declaring_a_huge_shape_is_refused_before_reading(tmp_path, no_reading):
    path = tmp_path / "h.safetensors"
    _write_safetensors(path, {"w": {"dtype": "F32", "shape": [60000, 60000, 10],
                                    "data_offsets": [0, 16]}}, 16)
    with pytest.raises(CheckpointError, match=r"declares array 'w' of shape \(60000, 60000, "
                                              r"10\) F32, 144000000000 bytes, more than"):
        load_checkpoint(path, verify=False)


def test_max_bytes_is_the_callers_limit(tmp_path):
    path = save_checkpoint(tmp_path / "c.safetensors", {"w": np.zeros(1000)})
    with pytest.raises(CheckpointError, match=r"has \d+ bytes, more than the limit "
                                              "max_bytes=4000"):
        load_checkpoint(path, max_bytes=4000)
    assert load_checkpoint(path, max_bytes=9000)[0]["w"].shape == (1000,)


def test_oversized_sidecar_is_refused_before_parsing(tmp_path, monkeypatch):
    path = _saved(tmp_path)
    monkeypatch.setattr(ckpt_mod, "MAX_SIDECAR_BYTES", 100)
    monkeypatch.setattr(ckpt_mod.json, "loads", _boom)
    with pytest.raises(CheckpointError, match=r"c\.json has \d+ bytes, more than the 100"):
        load_checkpoint(path)


@pytest.mark.parametrize("header, data, expected", [
    ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 16]}}, 16,
     r"shape \(2,\) F32 needs 8 bytes but data_offsets \[0, 16\] span 16"),
    ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, 16,
     "declares 8 bytes of arrays but the file holds 16"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
      "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, 12, "overlap or leave"),
    ({"w": {"dtype": "Q4", "shape": [2], "data_offsets": [0, 8]}}, 8, "unknown dtype 'Q4'"),
    ({"w": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, 8, "non-negative"),
    ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}, 8, "begin <= end"),
    ({"w": [1, 2]}, 0, "entry is not an object"),
    ({"__metadata__": {"format": 1}}, 0, "__metadata__ is not an object of strings"),
])
def test_inconsistent_header_is_refused_before_reading(tmp_path, no_reading, header, data,
                                                       expected):
    path = tmp_path / "h.safetensors"
    _write_safetensors(path, header, data)
    with pytest.raises(CheckpointError, match=r"h\.safetensors is not a readable safetensors "
                                              rf"file \(.*{expected}"):
        load_checkpoint(path, verify=False)


@pytest.mark.parametrize("raw, expected", [
    (b"\x05\x00", "shorter than the 8-byte header length"),
    ((2**62).to_bytes(8, "little") + b"{}", "header length field says"),
    (b"\x04\x00\x00\x00\x00\x00\x00\x00\xff\xfe{}", "not UTF-8"),
    (b"\x04\x00\x00\x00\x00\x00\x00\x00[1,2", "not valid JSON"),
    (len(_nested(100_000)).to_bytes(8, "little") + _nested(100_000).encode(), "nested"),
])
def test_malformed_header_is_refused(tmp_path, no_reading, raw, expected):
    path = tmp_path / "h.safetensors"
    path.write_bytes(raw)
    _write_safetensors(tmp_path / "other.safetensors", {})
    os.replace(sidecar_path(tmp_path / "other.safetensors"), sidecar_path(path))
    with pytest.raises(CheckpointError, match=rf"h\.safetensors is not a readable.*{expected}"):
        load_checkpoint(path, verify=False)


# ------------------------------------------------------------------ permissions
@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_weights_and_sidecar_get_an_ordinary_files_mode(tmp_path, umask):
    old = os.umask(umask)
    try:
        path = save_checkpoint(tmp_path / "c.safetensors", {"w": np.ones(3)}, {"step": 1})
        (tmp_path / "plain.txt").write_text("x")  # what any file created here gets
    finally:
        os.umask(old)
    mode = lambda p: oct(p.stat().st_mode & 0o7777)  # noqa: E731
    assert mode(path) == mode(sidecar_path(path)) == mode(tmp_path / "plain.txt") \
        == oct(0o666 & ~umask)


# ------------------------------------------------------------------ killed while writing
_WRITER = """
import sys, numpy as np
from minitransformer.io import save_checkpoint
out = sys.argv[1]
rng = np.random.default_rng(0)
print("ready", flush=True)
for step in range(1, 10**6):
    save_checkpoint(f"{out}/ckpt-{step:08d}.safetensors",
                    {"w": rng.standard_normal((64, 256))}, {"step": step, "pad": "x" * 5000})
"""


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL")
@pytest.mark.parametrize("delay", [0.05, 0.13, 0.31])
def test_killed_writer_leaves_only_loadable_or_refused_pairs(tmp_path, delay):
    """SIGKILL a process that saves in a loop: every pair left is either loadable (and
    consistent: the step in the name is the step inside) or refused with CheckpointError /
    FileNotFoundError (the interrupted one), never another exception or mixed state."""
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 30
        while not list(tmp_path.glob("ckpt-*.json")) and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(delay)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    loaded = 0
    for path in sorted(tmp_path.glob("ckpt-*.safetensors")):
        try:
            _, meta = load_checkpoint(path, required={"step": int})
        except (CheckpointError, FileNotFoundError):
            continue
        assert meta["step"] == int(path.stem.split("-")[1])
        loaded += 1
    assert loaded >= 1
