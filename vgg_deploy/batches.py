"""Images -> preprocessed NCHW float32 batches, decoded once up front (so no timing includes decoding)."""

from __future__ import annotations

import functools
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from vgg_deploy.errors import DataError
from vgg_deploy.imaging import load_rgb
from vgg_deploy.preprocessing import Preprocessing


def stratified_sample(items: Sequence[tuple[Path, int]], n: int | None, *, seed: int) -> list[tuple[Path, int]]:
    """Up to n items, classes taking turns so each is represented; all items when n is None."""
    if n is None or n >= len(items):
        return list(items)
    rng = random.Random(seed)
    by_class: dict[int, list[tuple[Path, int]]] = {}
    for item in items:
        by_class.setdefault(item[1], []).append(item)
    for group in by_class.values():
        rng.shuffle(group)
    picked: list[tuple[Path, int]] = []
    while len(picked) < n:
        for label in sorted(by_class):
            if by_class[label] and len(picked) < n:
                picked.append(by_class[label].pop())
    return picked


def load_batches(
    items: Sequence[tuple[Path, int]], preprocessing: Preprocessing, *, batch_size: int
) -> tuple[list[np.ndarray], np.ndarray]:
    transform = preprocessing.eval_transform()
    tensors, labels = [], []
    for path, label in items:
        try:
            tensors.append(transform(load_rgb(path)))
        except (OSError, SyntaxError, ValueError) as err:
            raise DataError(f"cannot read {path}: {err}") from None
        labels.append(label)
    if not tensors:
        return [], np.zeros(0, dtype=np.int64)
    stacked = torch.stack(tensors).numpy()
    batches = [stacked[i : i + batch_size] for i in range(0, len(stacked), batch_size)]
    return batches, np.asarray(labels, dtype=np.int64)


# Evaluation sets whose uint8 crops need more than this are decoded again on every pass, batch by batch.
EVAL_MEMORY_MB = 2048


class _Batches(Sequence):
    """Reads like a list of normalised float32 batches; subclasses say where a batch's uint8 crops come from."""

    def __init__(self, count: int, preprocessing: Preprocessing, batch_size: int):
        self.count, self.batch_size = count, batch_size
        self._normalize = preprocessing.normalize()

    def __len__(self) -> int:
        return -(-self.count // self.batch_size)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        start = index * self.batch_size
        return self._normalize(torch.from_numpy(self._crops(start, min(start + self.batch_size, self.count)))).numpy()

    def _crops(self, start: int, stop: int) -> np.ndarray:
        raise NotImplementedError


class Uint8Batches(_Batches):
    """Images kept as their uint8 crops and normalised one batch at a time, when read: a quarter of the
    memory of float32 batches (ImageNet-val at 224 px: 7.5 GB instead of 30)."""

    streamed = False

    def __init__(self, crops: np.ndarray, preprocessing: Preprocessing, batch_size: int):
        super().__init__(len(crops), preprocessing, batch_size)
        self.crops = crops

    def _crops(self, start: int, stop: int) -> np.ndarray:
        return self.crops[start:stop]


class StreamedBatches(_Batches):
    """Each read decodes its batch's files: memory stays one batch whatever the number of images, for the
    price of decoding once per pass. Same crops, same normalisation, so the same numbers as Uint8Batches."""

    streamed = True
    # glibc raises its mmap threshold after the first large free, so later multi-MB batches come from the
    # heap, where freed blocks fragment and RSS crept up with the number of images (100k images at 224 px:
    # 1.2 GB -> 3.0 GB). Handing freed pages back every so often keeps it flat.
    TRIM_EVERY = 32

    def __init__(self, items: Sequence[tuple[Path, int]], preprocessing: Preprocessing, batch_size: int):
        super().__init__(len(items), preprocessing, batch_size)
        self.paths = [path for path, _ in items]
        self._crop = preprocessing.eval_crop()
        self._size = preprocessing.image_size
        self._reads = 0

    def _crops(self, start: int, stop: int) -> np.ndarray:
        self._reads += 1
        if self._reads % self.TRIM_EVERY == 0:
            release_freed_memory()
        crops = np.empty((stop - start, 3, self._size, self._size), dtype=np.uint8)
        for row, path in enumerate(self.paths[start:stop]):
            crops[row] = _decoded_crop(self._crop, path)
        return crops


def release_freed_memory() -> None:
    """glibc's malloc_trim: freed heap pages back to the OS. Elsewhere (macOS, musl) nothing to do."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


@functools.cache
def _glibc():
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def _decoded_crop(crop, path: Path) -> np.ndarray:
    try:
        return crop(load_rgb(path)).numpy()
    except (OSError, SyntaxError, ValueError) as err:
        raise DataError(f"cannot read {path}: {err}") from None


def crops_bytes(count: int, preprocessing: Preprocessing) -> int:
    return count * 3 * preprocessing.image_size**2


def load_uint8_batches(
    items: Sequence[tuple[Path, int]], preprocessing: Preprocessing, *, batch_size: int
) -> tuple[Uint8Batches, np.ndarray]:
    """load_batches' figures for large evaluation sets: decoded once, held as uint8, normalised per batch."""
    crop = preprocessing.eval_crop()
    size = preprocessing.image_size
    crops = np.empty((len(items), 3, size, size), dtype=np.uint8)
    for index, (path, _) in enumerate(items):
        crops[index] = _decoded_crop(crop, path)
    return Uint8Batches(crops, preprocessing, batch_size), _labels(items)


def eval_batches(
    items: Sequence[tuple[Path, int]], preprocessing: Preprocessing, *, batch_size: int,
    memory_mb: float = EVAL_MEMORY_MB,
) -> tuple[Uint8Batches | StreamedBatches, np.ndarray]:
    """Held in memory as uint8 crops when they fit in memory_mb, streamed from disk when they do not."""
    if crops_bytes(len(items), preprocessing) <= memory_mb * 2**20:
        return load_uint8_batches(items, preprocessing, batch_size=batch_size)
    return StreamedBatches(items, preprocessing, batch_size), _labels(items)


def _labels(items: Sequence[tuple[Path, int]]) -> np.ndarray:
    return np.asarray([label for _, label in items], dtype=np.int64)


def first_images(batches: Sequence[np.ndarray], count: int) -> np.ndarray:
    """The first `count` images, concatenating only the batches that hold them."""
    taken, total = [], 0
    for batch in batches:
        taken.append(batch)
        total += len(batch)
        if total >= count:
            break
    return np.concatenate(taken)[:count]


def run_batches(runner, batches: Sequence[np.ndarray]) -> np.ndarray:
    return np.concatenate([runner.infer(b) for b in batches]) if batches else np.zeros((0, 0), np.float32)
