"""Evaluation batches held as uint8 crops, or streamed from disk, read exactly as the float batches they
replace."""

from __future__ import annotations

import numpy as np
import pytest

from vgg_deploy.batches import StreamedBatches, eval_batches, first_images, load_batches, load_uint8_batches
from vgg_deploy.data import scan_image_folder
from vgg_deploy.preprocessing import Preprocessing


def test_uint8_batches_equal_float_batches_and_are_a_quarter_of_the_size(tiny_data):
    _, items = scan_image_folder(tiny_data)
    items = items[:11]
    pp = Preprocessing.for_image_size(32)
    floats, labels = load_batches(items, pp, batch_size=4)
    crops, crop_labels = load_uint8_batches(items, pp, batch_size=4)
    assert len(crops) == len(floats) == 3 and np.array_equal(labels, crop_labels)
    for expected, got in zip(floats, crops, strict=True):
        assert got.dtype == np.float32 and np.array_equal(expected, got)
    assert [b.shape[0] for b in crops[:2]] == [4, 4] and np.array_equal(crops[-1], floats[-1])
    with pytest.raises(IndexError):
        crops[3]
    assert crops.crops.nbytes * 4 == sum(b.nbytes for b in floats)


def test_streamed_batches_equal_held_ones_and_hold_no_crops(tiny_data, monkeypatch):
    _, items = scan_image_folder(tiny_data)
    items = items[:11]
    pp = Preprocessing.for_image_size(32)
    floats, labels = load_batches(items, pp, batch_size=4)
    held, _ = eval_batches(items, pp, batch_size=4)
    streamed, streamed_labels = eval_batches(items, pp, batch_size=4, memory_mb=11 * 3 * 32 * 32 / 2**20 * 0.99)
    assert not held.streamed and isinstance(streamed, StreamedBatches) and streamed.streamed
    assert np.array_equal(streamed_labels, labels) and len(streamed) == 3
    for expected, a, b in zip(floats, held, streamed, strict=True):
        assert np.array_equal(expected, a) and np.array_equal(expected, b)
    assert np.array_equal(streamed[-1], floats[-1]) and [len(b) for b in streamed[1:]] == [4, 3]
    assert not hasattr(streamed, "crops")

    decoded = []
    import vgg_deploy.batches as batches_module

    real = batches_module.load_rgb
    monkeypatch.setattr(batches_module, "load_rgb", lambda path: decoded.append(path) or real(path))
    streamed[1]
    streamed[1]
    assert decoded == [p for p, _ in items[4:8]] * 2  # one batch per read, decoded again on each pass


def test_first_images_reads_only_the_batches_it_needs():
    reads = []

    class Counting(list):
        def __iter__(self):
            for batch in list.__iter__(self):
                reads.append(len(batch))
                yield batch

    batches = Counting([np.full((4, 1), i, np.float32) for i in range(5)])
    pool = first_images(batches, 6)
    assert pool.shape == (6, 1) and pool[:, 0].tolist() == [0, 0, 0, 0, 1, 1] and reads == [4, 4]
