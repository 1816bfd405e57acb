"""Mini-batches over in-memory arrays, shuffled with an explicit generator, sent to a device."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from minitransformer.backend import Device, default_rng, get_array_module, to_device, to_numpy

__all__ = ["DataLoader"]


def _is_array(a: Any) -> bool:
    return hasattr(a, "shape") and hasattr(a, "ndim")


def _permutation(rng: Any, n: int) -> np.ndarray:
    """A uniformly random order of ``range(n)``, as a NumPy array (the batches index with it on
    the host; each array's ``_take`` moves it to that array's device).

    A NumPy ``Generator`` (or ``RandomState``) draws ``rng.permutation(n)``, so seeded runs
    keep their batches. CuPy's ``Generator`` has no ``permutation``: there the order is the
    argsort of ``n`` uniform draws (``rng.random(n)``, which both have), copied to the host
    once per epoch; every order is equally likely (ties have probability about n^2 / 2^53).
    """
    if hasattr(rng, "permutation"):
        return to_numpy(rng.permutation(n))
    return np.argsort(to_numpy(rng.random(n)), kind="stable")


class DataLoader:
    """Iterate over aligned arrays in mini-batches.

    ``arrays`` is one array, a tuple of arrays, or a dict of them, all with the same first
    dimension; a batch has the same structure. A plain list (e.g. captions) is allowed too: its
    batch is a list, left on the host. Each epoch (each ``iter``) draws a fresh permutation from
    ``rng`` when ``shuffle`` is on (``rng=None`` uses ``backend.default_rng("cpu")``, seeded by
    ``mt.manual_seed``), so a seeded generator gives the same batches on every run; a CuPy
    generator (e.g. ``backend.default_rng("cuda")``) works too (see ``_permutation``). Each batch
    array is moved to ``device`` with ``backend.to_device`` (``None``: the default device).

    ``len(loader)`` is the number of batches: ``ceil(n / batch_size)``, or ``n // batch_size``
    with ``drop_last``.

    **Sharding** (data parallelism over W ranks): ``shard=(r, W)`` makes the loader yield
    rank r's part of every *global* batch: the same permutation as without it (every rank
    passes a generator in the same state), each global batch of ``batch_size`` indices cut
    into W contiguous parts (``np.array_split``: sizes differ by at most one) and part r kept.
    So the W ranks together see exactly the batches of one process, in its order; pass
    ``shard=(distributed.rank(), distributed.world_size())``. ``len(loader)`` is unchanged.
    Equal parts (``batch_size`` a multiple of W, and ``drop_last=True`` or n a multiple of
    ``batch_size``) make the mean of the ranks' mean losses the global batch's mean; a smaller
    last batch gives unequal parts.

    Shapes: arrays ``(n, ...)`` -> batches ``(batch_size, ...)`` (the last may be smaller);
    with ``shard=(r, W)``, rank r's part of each: about ``(batch_size / W, ...)``.
    """

    def __init__(
        self,
        arrays: Any,
        batch_size: int,
        shuffle: bool = True,
        drop_last: bool = False,
        rng: Any = None,
        device: str | Device | None = None,
        shard: tuple[int, int] | None = None,
    ):
        if isinstance(arrays, Mapping):
            self._keys: list[Any] | None = list(arrays.keys())
            items = list(arrays.values())
            self._kind = "dict"
        elif isinstance(arrays, tuple):
            self._keys, items, self._kind = None, list(arrays), "tuple"
        else:
            self._keys, items, self._kind = None, [arrays], "single"
        if not items:
            raise ValueError("DataLoader: no arrays given")
        names = self._keys if self._keys is not None else list(range(len(items)))
        lengths = {}
        for name, a in zip(names, items):
            if _is_array(a):
                if a.ndim == 0:
                    raise ValueError(f"DataLoader: array {name!r} is 0-d; it needs a first axis")
                lengths[name] = int(a.shape[0])
            elif isinstance(a, list):
                lengths[name] = len(a)
            else:
                raise TypeError(
                    f"DataLoader: {name!r} is a {type(a).__name__}, not an array or list"
                )
        if len(set(lengths.values())) > 1:
            raise ValueError(f"DataLoader: arrays have different first dimensions: {lengths}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer):
            raise ValueError(f"DataLoader: batch_size must be a positive int, got {batch_size!r}")
        if batch_size <= 0:
            raise ValueError(f"DataLoader: batch_size must be a positive int, got {batch_size}")
        if rng is not None and not (hasattr(rng, "permutation") or hasattr(rng, "random")):
            raise TypeError(
                f"DataLoader: rng must be a NumPy or CuPy random generator (with permutation or "
                f"random), got {type(rng).__name__}"
            )
        if shard is not None:
            try:
                index, count = (int(v) for v in shard)
            except (TypeError, ValueError):
                raise ValueError(f"DataLoader: shard must be (index, count), got {shard!r}"
                                 ) from None
            if count < 1 or not 0 <= index < count:
                raise ValueError(f"DataLoader: shard=({index}, {count}) needs count >= 1 and "
                                 f"0 <= index < count")
            shard = (index, count)
        self.shard = shard
        self._items = items
        self.n = next(iter(lengths.values()))
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.rng = rng
        self.device = device

    def __len__(self) -> int:
        if self.drop_last:
            return self.n // self.batch_size
        return -(-self.n // self.batch_size)

    def _take(self, a: Any, idx: np.ndarray) -> Any:
        if isinstance(a, list):
            return [a[i] for i in idx]
        xp = get_array_module(a)
        return to_device(a[xp.asarray(idx)], self.device)

    def __iter__(self) -> Iterator[Any]:
        if self.shuffle:
            rng = default_rng("cpu") if self.rng is None else self.rng
            order = _permutation(rng, self.n)
        else:
            order = np.arange(self.n)
        for k in range(len(self)):
            idx = order[k * self.batch_size : (k + 1) * self.batch_size]
            if self.shard is not None:  # this rank's contiguous part of the global batch
                idx = np.array_split(idx, self.shard[1])[self.shard[0]]
            batch = [self._take(a, idx) for a in self._items]
            if self._kind == "dict":
                yield dict(zip(self._keys, batch))
            elif self._kind == "tuple":
                yield tuple(batch)
            else:
                yield batch[0]
