"""Checkpoints without pickle: arrays in safetensors, everything else in a JSON sidecar.

A checkpoint ``run/step100.safetensors`` is two files:

- ``run/step100.safetensors``: the named arrays (weights, optimiser moments, buffers);
- ``run/step100.json``: the metadata (step, config, optimiser scalars, rng state, ...) plus
  the SHA-256 and byte size of the ``.safetensors`` file it belongs to.

Each file is written to a temporary file in the same directory, flushed and fsync'ed, then
renamed over the target with ``os.replace`` (atomic on POSIX and Windows), so a crash never
leaves a half-written file under the final name. The arrays go first and the sidecar second:
the sidecar is the commit record. A crash between the two renames leaves a pair whose
checksums disagree, which ``load_checkpoint`` reports instead of loading mixed state; a
training loop that must always have a loadable checkpoint keeps the previous pair until the
new one is complete (distinct file names per step).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .. import backend
from ..autograd import Tensor
from ..nn import StateDictError

__all__ = [
    "CheckpointError",
    "load_checkpoint",
    "load_model",
    "save_checkpoint",
    "save_model",
    "sidecar_path",
]

FORMAT = "minitransformer-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file is corrupt, truncated, or does not match its sidecar."""


def _weights_path(path: str | os.PathLike) -> Path:
    """``x.safetensors`` stays; any other name gets ``.safetensors`` appended
    (``ckpt.step100`` -> ``ckpt.step100.safetensors``), so the sidecar never collides."""
    p = Path(path)
    return p if p.suffix == ".safetensors" else p.with_name(p.name + ".safetensors")


def sidecar_path(path: str | os.PathLike) -> Path:
    """The JSON sidecar of a checkpoint: ``x.safetensors`` -> ``x.json``."""
    return _weights_path(path).with_suffix(".json")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; not possible (nor needed) on Windows.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def _atomic_target(final: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``final``; on success fsync it and rename it over
    ``final``; on any error delete it and leave ``final`` as it was."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; a checkpoint is an ordinary file
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(final.parent)


def _jsonable(value: Any, where: str) -> Any:
    """A JSON-safe copy of ``value`` (NumPy scalars become Python numbers, tuples lists);
    anything else is a TypeError naming where it sits."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"save_checkpoint: metadata key {where}[{k!r}] must be a str or "
                                f"int, got {type(k).__name__}")
            out[str(k)] = _jsonable(v, f"{where}[{k!r}]")
        return out
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    kind = type(value).__name__
    hint = " (arrays belong in `tensors`)" if hasattr(value, "shape") else ""
    raise TypeError(f"save_checkpoint: metadata{where} is a {kind}, which is not "
                    f"JSON-serialisable{hint}")


def save_checkpoint(path: str | os.PathLike, tensors: dict[str, Any],
                    metadata: dict[str, Any] | None = None) -> Path:
    """Write ``tensors`` to ``path`` (safetensors) and ``metadata`` to its JSON sidecar,
    each atomically (temporary file, fsync, ``os.replace``).

    Args:
        path: the ``.safetensors`` file (the suffix is appended when missing).
        tensors: name -> NumPy or CuPy array or Tensor (copied to the host; any dtype
            safetensors stores: floats, ints, uint8, bool).
        metadata: JSON-serialisable dict (NumPy scalars are converted; arrays are refused).

    Shapes: any per array. Returns the path of the ``.safetensors`` file.
    """
    from safetensors.numpy import save_file

    final = _weights_path(path)
    if not isinstance(tensors, dict):
        raise TypeError(f"save_checkpoint: tensors must be a dict, got {type(tensors).__name__}")
    arrays = {}
    for k, v in tensors.items():
        if not isinstance(k, str):
            raise TypeError(f"save_checkpoint: tensor names must be str, got {k!r}")
        if isinstance(v, Tensor):
            v = v.data
        if not (isinstance(v, np.ndarray) or type(v).__module__.startswith("cupy")):
            raise TypeError(f"save_checkpoint: tensors[{k!r}] is a {type(v).__name__}, "
                            "expected a NumPy or CuPy array or Tensor")
        a = backend.to_numpy(v)
        # Contiguous copy when needed; not np.ascontiguousarray, which turns 0-d into (1,).
        arrays[k] = a if a.flags.c_contiguous else np.array(a, order="C")
    meta = _jsonable(dict(metadata or {}), "")
    # Validate the JSON before touching the disk: a bad metadata value must not leave a
    # fresh .safetensors beside a stale sidecar.
    json.dumps(meta, allow_nan=True)

    final.parent.mkdir(parents=True, exist_ok=True)
    with _atomic_target(final) as tmp:
        save_file(arrays, str(tmp))
        digest, size = _sha256(tmp), tmp.stat().st_size
    sidecar = {
        "format": FORMAT, "version": VERSION, "weights": final.name,
        "sha256": digest, "num_bytes": size, "metadata": meta,
    }
    with _atomic_target(sidecar_path(final)) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(sidecar, f, indent=1, allow_nan=True)
    return final


def _read_sidecar(weights: Path) -> dict[str, Any]:
    side = sidecar_path(weights)
    if not side.exists():
        raise FileNotFoundError(f"load_checkpoint: sidecar {side} is missing (a checkpoint is "
                                f"{weights.name} plus {side.name}; was the save interrupted?)")
    try:
        record = json.loads(side.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"load_checkpoint: sidecar {side} is not valid JSON ({e}); "
                              "the file is corrupt or truncated") from e
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise CheckpointError(f"load_checkpoint: {side} is not a {FORMAT} sidecar")
    for key in ("sha256", "num_bytes", "metadata"):
        if key not in record:
            raise CheckpointError(f"load_checkpoint: sidecar {side} has no {key!r} field")
    return record


def load_checkpoint(path: str | os.PathLike, verify: bool = True
                    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a checkpoint written by ``save_checkpoint``.

    Args:
        path: the ``.safetensors`` file (the suffix is appended when missing).
        verify: check the file's size and SHA-256 against the sidecar (default True).

    Returns ``(tensors, metadata)``: name -> NumPy array, and the metadata dict.

    Raises:
        FileNotFoundError: the ``.safetensors`` file or its sidecar is missing.
        CheckpointError: a truncated file, a checksum mismatch (corrupt, or a pair from two
            different saves), an unreadable sidecar, or a file safetensors cannot parse.
    """
    from safetensors.numpy import load_file

    weights = _weights_path(path)
    if not weights.exists():
        raise FileNotFoundError(f"load_checkpoint: no checkpoint file {weights}")
    record = _read_sidecar(weights)
    if verify:
        size = weights.stat().st_size
        if size != record["num_bytes"]:
            raise CheckpointError(
                f"load_checkpoint: {weights} has {size} bytes but its sidecar records "
                f"{record['num_bytes']}: the file is truncated or the pair comes from two "
                "different saves")
        digest = _sha256(weights)
        if digest != record["sha256"]:
            raise CheckpointError(
                f"load_checkpoint: checksum mismatch for {weights}: sha256 {digest[:16]}..., "
                f"sidecar records {str(record['sha256'])[:16]}...; the file is corrupt or the "
                "pair comes from two different saves")
    try:
        tensors = load_file(str(weights))
    except Exception as e:  # safetensors raises its own SafetensorError on a bad header
        raise CheckpointError(f"load_checkpoint: {weights} is not a readable safetensors file "
                              f"({type(e).__name__}: {e})") from e
    return dict(tensors), record["metadata"]


def save_model(path: str | os.PathLike, module: Any,
               metadata: dict[str, Any] | None = None) -> Path:
    """``save_checkpoint(path, module.state_dict(), metadata)``: parameters and buffers."""
    return save_checkpoint(path, module.state_dict(), metadata)


def load_model(path: str | os.PathLike, module: Any, strict: bool = True) -> dict[str, Any]:
    """Load a checkpoint's arrays into ``module`` (``Module.load_state_dict``); returns the
    metadata. A key or shape mismatch raises ``StateDictError`` naming the file."""
    tensors, metadata = load_checkpoint(path)
    try:
        module.load_state_dict(tensors, strict=strict)
    except StateDictError as e:
        raise StateDictError(f"{_weights_path(path)}: {e}") from e
    return metadata
