"""Evaluation batches held as uint8 crops read exactly as the float batches they replace."""

from __future__ import annotations

import numpy as np
import pytest

from vgg_deploy.batches import first_images, load_batches, load_uint8_batches
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
