"""Checkpoints without pickle: arrays in safetensors, everything else in a JSON sidecar.

A checkpoint ``run/step100.safetensors`` is two files:

- ``run/step100.safetensors``: the named arrays (weights, optimiser moments, buffers), a
  plain safetensors file;
- ``run/step100.json``: the metadata (step, config, optimiser scalars, rng state, ...), the
  SHA-256 and byte size of the ``.safetensors`` file it belongs to, and ``metadata_sha256``:
  the SHA-256 of the weights file's SHA-256, its size and the metadata's canonical JSON.

Integrity. ``sha256`` covers the weights file; ``metadata_sha256`` covers the metadata and
binds it to those weights. A flipped byte or a truncated weights file fails the first; a
sidecar edited into another valid JSON (a changed step, learning rate or rng state) fails the
second, and so does a sidecar moved beside other weights. Reformatting the sidecar (indent,
key order) changes no value and is accepted. This detects damage and careless edits, not a
deliberate forgery (anyone can recompute a SHA-256): it is an integrity check, not a
signature. The weights file does not depend on the metadata: the same arrays saved twice with
different metadata are the same bytes (``pretrained`` cards rely on that).

Atomicity. Each file is written to a temporary file in the same directory, flushed and
fsync'ed, then renamed over the target with ``os.replace`` (atomic on POSIX and Windows), so a
crash never leaves a half-written file under the final name. The arrays go first and the
sidecar second: the sidecar is the commit record. A crash between the two renames leaves a
pair whose checksums disagree, which ``load_checkpoint`` reports instead of loading mixed
state; a training loop that must always have a loadable checkpoint keeps the previous pair
until the new one is complete (distinct file names per step). Both files get the mode a
normally created file gets (``0o666`` minus the umask, e.g. 0644), never the temporary
file's owner-only mode.

What is validated here, and what is not. ``load_checkpoint`` checks the *format*: the sidecar
is a UTF-8 JSON object of at most ``MAX_SIDECAR_BYTES`` and ``MAX_DEPTH`` levels of nesting
(no RecursionError escapes), with its fields of the right types; the weights file is no
larger than ``max_bytes`` (default ``MAX_CHECKPOINT_BYTES``, 8 GiB) and its safetensors header
is consistent (each array's shape times its item size is its byte range, the ranges fill the
file): all of this BEFORE the file is hashed or any array is allocated. Then the checksums.
Every failure is a ``CheckpointError`` (a missing file is ``FileNotFoundError``), so a caller
such as ``train.load_latest`` treats a malformed pair like a corrupt one and falls back to the
previous pair. The *meaning* of the metadata (which keys a recipe needs, the rng state, the
configuration's ranges) belongs to the caller: ``required={"step": int, ...}`` makes a
missing key or a wrong type a ``CheckpointError`` too; values beyond key and type (a
generator state NumPy refuses, a width too large to build) are the loop's and the recipe's to
check before they allocate. Their sidecar being covered by ``metadata_sha256``, such values
can only come from the code that saved them, not from an edit.

Versions. Version 2 (this one) writes ``metadata_sha256``; version-1 sidecars (written before
it, e.g. older runs) still load, with the weights file's checksum only: their metadata is not
covered. A sidecar that has ``metadata_sha256`` is always checked, whatever version it claims.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import secrets
import struct
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .. import backend
from ..autograd import Tensor
from ..nn import StateDictError

__all__ = [
    "MAX_CHECKPOINT_BYTES",
    "MAX_DEPTH",
    "MAX_SIDECAR_BYTES",
    "CheckpointError",
    "load_checkpoint",
    "load_model",
    "save_checkpoint",
    "save_model",
    "sidecar_path",
]

FORMAT = "minitransformer-checkpoint"
VERSION = 2
READABLE_VERSIONS = (1, 2)

MAX_CHECKPOINT_BYTES = 8 * 2**30  # the default ``max_bytes`` of load_checkpoint
MAX_SIDECAR_BYTES = 64 * 2**20
MAX_HEADER_BYTES = 100 * 2**20  # safetensors' own limit on its JSON header
MAX_DEPTH = 64  # nesting levels of the sidecar's JSON, the object itself being level 1

# Bytes per element of the safetensors dtypes with a whole number of bytes.
_ITEMSIZE = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2,
             "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
             "C64": 8, "C128": 16}


class CheckpointError(ValueError):
    """A checkpoint file is corrupt, truncated, malformed, or does not match its sidecar."""


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


def _canonical(meta: Any) -> str:
    """The one JSON text of ``meta`` that ``metadata_sha256`` covers (sorted keys, no
    spaces), so reformatting a sidecar changes no digest."""
    return json.dumps(meta, sort_keys=True, separators=(",", ":"), allow_nan=True)


def _metadata_digest(weights_sha256: str, num_bytes: int, meta: Any) -> str:
    """``metadata_sha256``: the SHA-256 of the weights file's SHA-256, its size and the
    metadata's canonical JSON, so the metadata is bound to the weights it was saved with."""
    text = f"{FORMAT}\n{weights_sha256}\n{num_bytes}\n{_canonical(meta)}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (not possible, nor needed, on Windows); the
    training loop's atomic writes use it too."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def _atomic_target(final: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``final`` (``.{name}.XXXXXXXX.tmp``); on success fsync
    it and rename it over ``final``; on any error delete it and leave ``final`` as it was.

    The temporary file is created with mode ``0o666`` minus the umask, as ``open`` creates
    any file, and that mode is set again after the writer ran (a writer may replace the
    file, e.g. with an owner-only one), so the final file has an ordinary file's mode."""
    while True:
        tmp = final.parent / f".{final.name}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileExistsError:
            continue
    try:
        mode = os.fstat(fd).st_mode & 0o7777
    finally:
        os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, mode)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(final.parent)


def _jsonable(value: Any, where: str, depth: int = 1) -> Any:
    """A JSON-safe copy of ``value`` (NumPy scalars become Python numbers, tuples lists);
    anything else is a TypeError naming where it sits. Nesting deeper than ``MAX_DEPTH - 1``
    (the sidecar wraps the metadata in one more level) is a ValueError: it would not load."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (dict, list, tuple)) and depth > MAX_DEPTH - 1:
        raise ValueError(f"save_checkpoint: metadata{where} is nested more than "
                         f"{MAX_DEPTH - 1} levels deep (a cycle?); load_checkpoint refuses that")
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"save_checkpoint: metadata key {where}[{k!r}] must be a str or "
                                f"int, got {type(k).__name__}")
            out[str(k)] = _jsonable(v, f"{where}[{k!r}]", depth + 1)
        return out
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]
    kind = type(value).__name__
    hint = " (arrays belong in `tensors`)" if hasattr(value, "shape") else ""
    raise TypeError(f"save_checkpoint: metadata{where} is a {kind}, which is not "
                    f"JSON-serialisable{hint}")


def save_checkpoint(path: str | os.PathLike, tensors: dict[str, Any],
                    metadata: dict[str, Any] | None = None) -> Path:
    """Write ``tensors`` to ``path`` (safetensors) and ``metadata`` to its JSON sidecar
    (with the digests that cover both), each atomically (temporary file, fsync, ``os.replace``).

    Args:
        path: the ``.safetensors`` file (the suffix is appended when missing).
        tensors: name -> NumPy or CuPy array or Tensor (copied to the host; any dtype
            safetensors stores: floats, ints, uint8, bool).
        metadata: JSON-serialisable dict (NumPy scalars are converted; arrays are refused;
            at most ``MAX_DEPTH - 1`` levels of nesting).

    Shapes: any per array. Returns the path of the ``.safetensors`` file.
    """
    from safetensors.numpy import save_file

    final = _weights_path(path)
    if not isinstance(tensors, dict):
        raise TypeError(f"save_checkpoint: tensors must be a dict, got {type(tensors).__name__}")
    if metadata is not None and not isinstance(metadata, dict):
        raise TypeError(f"save_checkpoint: metadata must be a dict, got "
                        f"{type(metadata).__name__}")
    arrays = {}
    for k, v in tensors.items():
        if not isinstance(k, str):
            raise TypeError(f"save_checkpoint: tensor names must be str, got {k!r}")
        if k == "__metadata__":
            raise ValueError("save_checkpoint: '__metadata__' is reserved by safetensors and "
                             "cannot name an array")
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
    _canonical(meta)

    final.parent.mkdir(parents=True, exist_ok=True)
    with _atomic_target(final) as tmp:
        save_file(arrays, str(tmp))
        digest, size = _sha256(tmp), tmp.stat().st_size
    sidecar = {
        "format": FORMAT, "version": VERSION, "weights": final.name,
        "sha256": digest, "num_bytes": size, "metadata": meta,
        "metadata_sha256": _metadata_digest(digest, size, meta),
    }
    with _atomic_target(sidecar_path(final)) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(sidecar, f, indent=1, allow_nan=True)
    return final


def _depth_exceeds(value: Any, limit: int) -> bool:
    """Whether ``value`` (parsed JSON) nests more than ``limit`` levels; iterative, so any
    depth is answered without recursion."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            if depth > limit:
                return True
            children = node.values() if isinstance(node, dict) else node
            stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return False


def _parse_json(text: str, what: str) -> Any:
    """``json.loads`` whose every failure (bad syntax, nesting beyond the interpreter's
    recursion limit or ``MAX_DEPTH``) is a CheckpointError naming ``what``."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"load_checkpoint: {what} is not valid JSON ({e}); the file is "
                              "corrupt or truncated") from e
    except RecursionError as e:
        raise CheckpointError(f"load_checkpoint: {what} is nested too deeply to parse (more "
                              f"than {MAX_DEPTH} levels allowed); the file is corrupt") from e
    if _depth_exceeds(value, MAX_DEPTH):
        raise CheckpointError(f"load_checkpoint: {what} is nested more than {MAX_DEPTH} levels "
                              "deep; the file is corrupt")
    return value


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_sha256(v: Any) -> bool:
    return isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v)


def _read_sidecar(weights: Path) -> dict[str, Any]:
    """The sidecar's record, its format checked: a JSON object of ``FORMAT``, a readable
    version, a hex SHA-256, a non-negative byte count, a metadata object and (version 2, or
    whenever present) a hex ``metadata_sha256``."""
    side = sidecar_path(weights)
    if not side.exists():
        raise FileNotFoundError(f"load_checkpoint: sidecar {side} is missing (a checkpoint is "
                                f"{weights.name} plus {side.name}; was the save interrupted?)")
    size = side.stat().st_size
    if size > MAX_SIDECAR_BYTES:
        raise CheckpointError(f"load_checkpoint: sidecar {side} has {size} bytes, more than "
                              f"the {MAX_SIDECAR_BYTES} a sidecar may have; it is not a sidecar "
                              "this library wrote")
    try:
        text = side.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise CheckpointError(f"load_checkpoint: sidecar {side} is not UTF-8 text ({e}); the "
                              "file is corrupt") from e
    record = _parse_json(text, f"sidecar {side}")
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        got = (f"a JSON {type(record).__name__}" if not isinstance(record, dict)
               else f"format {record.get('format')!r}")
        raise CheckpointError(f"load_checkpoint: {side} is not a {FORMAT} sidecar ({got})")
    version = record.get("version")
    if not _is_int(version) or version not in READABLE_VERSIONS:
        raise CheckpointError(f"load_checkpoint: sidecar {side} has version {version!r}; this "
                              f"library reads versions {list(READABLE_VERSIONS)} (a newer "
                              "minitransformer wrote it, or it is corrupt)")
    sha = record.get("sha256")
    if not _is_sha256(sha):
        raise CheckpointError(f"load_checkpoint: sidecar {side} has sha256 {sha!r}, not 64 "
                              "lower-case hex digits")
    num_bytes = record.get("num_bytes")
    if not _is_int(num_bytes) or num_bytes < 0:
        raise CheckpointError(f"load_checkpoint: sidecar {side} has num_bytes {num_bytes!r}, "
                              "not a non-negative integer")
    digest = record.get("metadata_sha256")
    if (digest is not None or version >= 2) and not _is_sha256(digest):
        raise CheckpointError(f"load_checkpoint: sidecar {side} has metadata_sha256 "
                              f"{_short(digest)}, not 64 lower-case hex digits (version "
                              f"{version} sidecars carry one)")
    if not isinstance(record.get("metadata"), dict):
        raise CheckpointError(f"load_checkpoint: sidecar {side} has metadata of type "
                              f"{type(record.get('metadata')).__name__}, not an object")
    return record


def _unreadable(weights: Path, why: str) -> CheckpointError:
    return CheckpointError(f"load_checkpoint: {weights} is not a readable safetensors file "
                           f"({why})")


def _read_header(weights: Path, file_size: int, max_bytes: int) -> None:
    """The safetensors header of ``weights``, checked before any array is read: its length,
    its JSON, and for every array a known dtype, a shape of non-negative ints whose element
    count times the item size is its byte range, ranges that tile the data exactly, and a
    total within ``max_bytes``; an optional ``__metadata__`` must map strings to strings."""
    with open(weights, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise _unreadable(weights, f"{file_size} bytes, shorter than the 8-byte header "
                                       "length")
        (n,) = struct.unpack("<Q", prefix)
        if n > min(MAX_HEADER_BYTES, file_size - 8):
            raise _unreadable(weights, f"the header length field says {n} bytes; the file has "
                                       f"{file_size - 8} after it (and a header may have at "
                                       f"most {MAX_HEADER_BYTES})")
        raw = f.read(n)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _unreadable(weights, f"header is not UTF-8: {e}") from e
    try:
        header = _parse_json(text, f"the safetensors header of {weights}")
    except CheckpointError as e:
        raise _unreadable(weights, str(e)) from e
    if not isinstance(header, dict):
        raise _unreadable(weights, f"header is a JSON {type(header).__name__}, not an object")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise _unreadable(weights, "header __metadata__ is not an object of strings")
    ranges = []
    for name, info in header.items():
        if not isinstance(info, dict):
            raise _unreadable(weights, f"array {name!r}: entry is not an object")
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if dtype not in _ITEMSIZE:
            raise _unreadable(weights, f"array {name!r}: unknown dtype {dtype!r}")
        if not (isinstance(shape, list) and all(_is_int(d) and d >= 0 for d in shape)):
            raise _unreadable(weights, f"array {name!r}: shape {shape!r} is not a list of "
                                       "non-negative integers")
        if not (isinstance(offsets, list) and len(offsets) == 2
                and all(_is_int(o) for o in offsets) and 0 <= offsets[0] <= offsets[1]):
            raise _unreadable(weights, f"array {name!r}: data_offsets {offsets!r} is not "
                                       "[begin, end] with 0 <= begin <= end")
        nbytes = math.prod(shape) * _ITEMSIZE[dtype]  # Python ints: no overflow
        if nbytes > max_bytes:
            raise CheckpointError(
                f"load_checkpoint: {weights} declares array {name!r} of shape {tuple(shape)} "
                f"{dtype}, {nbytes} bytes, more than the limit max_bytes={max_bytes}; refused "
                "before allocating (pass a larger max_bytes if the file is genuine)")
        if offsets[1] - offsets[0] != nbytes:
            raise _unreadable(weights, f"array {name!r}: shape {tuple(shape)} {dtype} needs "
                                       f"{nbytes} bytes but data_offsets {offsets} span "
                                       f"{offsets[1] - offsets[0]}")
        ranges.append((offsets[0], offsets[1], name))
    data = file_size - 8 - n
    end = 0
    for begin, stop, name in sorted(ranges):
        if begin != end:
            raise _unreadable(weights, f"array {name!r} starts at data byte {begin}, expected "
                                       f"{end} (arrays overlap or leave a gap)")
        end = stop
    if end != data:
        raise _unreadable(weights, f"the header declares {end} bytes of arrays but the file "
                                   f"holds {data} after the header: truncated or padded")


def _short(value: Any, limit: int = 60) -> str:
    text = _canonical(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_required(metadata: dict[str, Any], required: Mapping[str, Any], side: Path) -> None:
    for key, kind in required.items():
        if key not in metadata:
            raise CheckpointError(f"load_checkpoint: sidecar {side} has no {key!r} in its "
                                  f"metadata (keys: {sorted(metadata)})")
        value = metadata[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds:
            ok = False  # a JSON true is not an int step
        else:
            ok = isinstance(value, kinds)
        if not ok:
            names = " or ".join(k.__name__ for k in kinds)
            raise CheckpointError(f"load_checkpoint: sidecar {side}: metadata[{key!r}] is a "
                                  f"{type(value).__name__} ({_short(value)}), expected {names}")


def load_checkpoint(path: str | os.PathLike, verify: bool = True, *,
                    required: Mapping[str, type | tuple[type, ...]] | None = None,
                    max_bytes: int = MAX_CHECKPOINT_BYTES,
                    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a checkpoint written by ``save_checkpoint``, checking it before using it.

    Args:
        path: the ``.safetensors`` file (the suffix is appended when missing).
        verify: check the file's size and SHA-256 against the sidecar (default True). The
            format checks and ``metadata_sha256`` are always checked.
        required: metadata keys the caller needs, with their types (``{"step": int,
            "rng": dict}``; ``int`` does not accept ``true``); a missing key or another
            type is a CheckpointError.
        max_bytes: the most bytes the weights file (and any one array it declares) may
            have; larger is refused before the file is hashed or read (default
            ``MAX_CHECKPOINT_BYTES``, 8 GiB).

    Returns ``(tensors, metadata)``: name -> NumPy array, and the metadata dict.

    Order: the file's size against ``max_bytes``, the sidecar's format, the file's size
    against the sidecar's, the safetensors header (all before hashing or allocating), the
    SHA-256, ``metadata_sha256``, ``required``, and last the arrays.

    Raises:
        FileNotFoundError: the ``.safetensors`` file or its sidecar is missing.
        CheckpointError: a truncated file, a checksum mismatch (corrupt, or a pair from two
            different saves), a sidecar edited after it was saved (``metadata_sha256``), a
            malformed sidecar or header (not JSON, not an object, missing or mistyped
            fields, nested too deeply, too large), a file beyond ``max_bytes``, or a
            missing or mistyped ``required`` key.
    """
    from safetensors.numpy import load_file

    weights = _weights_path(path)
    if not weights.exists():
        raise FileNotFoundError(f"load_checkpoint: no checkpoint file {weights}")
    size = weights.stat().st_size
    if size > max_bytes:
        raise CheckpointError(
            f"load_checkpoint: {weights} has {size} bytes, more than the limit "
            f"max_bytes={max_bytes}; refused before reading (pass a larger max_bytes if the "
            "file is genuine)")
    record = _read_sidecar(weights)
    side = sidecar_path(weights)
    if verify and size != record["num_bytes"]:
        raise CheckpointError(
            f"load_checkpoint: {weights} has {size} bytes but its sidecar records "
            f"{record['num_bytes']}: the file is truncated or the pair comes from two "
            "different saves")
    _read_header(weights, size, max_bytes)
    if verify:
        digest = _sha256(weights)
        if digest != record["sha256"]:
            raise CheckpointError(
                f"load_checkpoint: checksum mismatch for {weights}: sha256 {digest[:16]}..., "
                f"sidecar records {record['sha256'][:16]}...; the file is corrupt or the "
                "pair comes from two different saves")
    metadata = record["metadata"]
    recorded = record.get("metadata_sha256")
    if recorded is not None:
        expected = _metadata_digest(record["sha256"], record["num_bytes"], metadata)
        if expected != recorded:
            step = (f"step {_short(metadata['step'])}" if "step" in metadata
                    else f"no step; keys {_short(sorted(metadata))}")
            raise CheckpointError(
                f"load_checkpoint: sidecar {side} was edited after it was saved: its "
                f"metadata_sha256 records {recorded[:16]}..., but its metadata ({step}) with "
                f"the sha256 and num_bytes of "
                f"{weights.name} digest to {expected[:16]}...; some value (step, lr, rng "
                "state, ...) is not the one saved with these weights, so the pair is refused")
    if required:
        _check_required(metadata, required, side)
    try:
        tensors = load_file(str(weights))
    except Exception as e:  # safetensors raises its own SafetensorError on a bad header
        raise _unreadable(weights, f"{type(e).__name__}: {e}") from e
    return dict(tensors), metadata


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
