"""Images -> preprocessed NCHW float32 batches, decoded once up front (so no timing includes decoding)."""

from __future__ import annotations

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


def run_batches(runner, batches: Sequence[np.ndarray]) -> np.ndarray:
    return np.concatenate([runner.infer(b) for b in batches]) if batches else np.zeros((0, 0), np.float32)
