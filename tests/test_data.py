from __future__ import annotations

import shutil
from collections import Counter

import pytest

from vgg_deploy.data import build_split, class_weights, scan_image_folder
from vgg_deploy.errors import DataError


def _copy(tiny_data, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(tiny_data, root)
    return root


def test_hidden_folders_and_non_images_are_ignored(tiny_data, tmp_path):
    root = _copy(tiny_data, tmp_path)
    (root / ".ipynb_checkpoints").mkdir()
    (root / ".ipynb_checkpoints" / "x.png").write_bytes(b"")
    (root / "circle" / ".hidden.png").write_bytes(b"")
    (root / "circle" / "notes.txt").write_text("not an image")
    (root / "circle" / ".DS_Store").write_bytes(b"\0")
    classes, samples = scan_image_folder(root)
    assert classes == ["circle", "square", "triangle"]
    assert len(samples) == 24


@pytest.mark.parametrize(
    "arrange,message",
    [
        (lambda r: r / "missing", "does not exist"),
        (lambda r: (r / "circle" / "circle_0000.png"), "is a file"),
    ],
)
def test_missing_or_file_data(tiny_data, tmp_path, arrange, message):
    root = _copy(tiny_data, tmp_path)
    with pytest.raises(DataError, match=message):
        build_split(arrange(root), val_fraction=0.2, seed=0, skip_bad_images=False)


def test_empty_class_folder_is_named(tiny_data, tmp_path):
    root = _copy(tiny_data, tmp_path)
    (root / "empty_class").mkdir()
    with pytest.raises(DataError, match="empty_class has no images"):
        build_split(root, val_fraction=0.2, seed=0, skip_bad_images=False)


def test_single_class_is_refused(tiny_data, tmp_path):
    root = tmp_path / "one"
    shutil.copytree(tiny_data / "circle", root / "circle")
    with pytest.raises(DataError, match="only 1 class folder"):
        build_split(root, val_fraction=0.2, seed=0, skip_bad_images=False)


def test_split_is_stratified_and_seeded(tiny_data):
    a = build_split(tiny_data, val_fraction=0.25, test_fraction=0.25, seed=1, skip_bad_images=False)
    b = build_split(tiny_data, val_fraction=0.25, test_fraction=0.25, seed=1, skip_bad_images=False)
    c = build_split(tiny_data, val_fraction=0.25, test_fraction=0.25, seed=2, skip_bad_images=False)
    assert a.to_dict() == b.to_dict() and a.val != c.val
    assert Counter(y for _, y in a.val) == {0: 2, 1: 2, 2: 2}
    assert Counter(y for _, y in a.test) == {0: 2, 1: 2, 2: 2}
    assert not set(a.train) & set(a.val) and not set(a.train) & set(a.test) and not set(a.val) & set(a.test)
    assert len(a.train) + len(a.val) + len(a.test) == 24
    assert a.to_dict()["test"] == [list(item) for item in a.test]


def test_tiny_classes_give_each_held_out_part_one_image(tiny_data, tmp_path):
    root = _copy(tiny_data, tmp_path)
    for f in sorted((root / "circle").iterdir())[3:]:
        f.unlink()  # circle keeps 3 images: one each for train, val and test
    split = build_split(root, val_fraction=0.2, test_fraction=0.2, seed=0, skip_bad_images=False)
    assert [sum(y == 0 for _, y in part) for part in (split.train, split.val, split.test)] == [1, 1, 1]
    (sorted((root / "circle").iterdir())[0]).unlink()
    with pytest.raises(DataError, match="'circle' has 2 usable image"):
        build_split(root, val_fraction=0.2, test_fraction=0.2, seed=0, skip_bad_images=False)
    with pytest.raises(DataError, match="together must stay below 1"):
        build_split(tiny_data, val_fraction=0.5, test_fraction=0.5, seed=0, skip_bad_images=False)


def test_train_and_val_folders_are_the_split(tiny_data, tmp_path):
    root = tmp_path / "presplit"
    for part in ("train", "val"):
        for cls in ("circle", "square"):
            (root / part / cls).mkdir(parents=True)
    for cls in ("circle", "square"):
        files = sorted((tiny_data / cls).iterdir())
        for f in files[:6]:
            shutil.copy(f, root / "train" / cls / f.name)
        for f in files[6:]:
            shutil.copy(f, root / "val" / cls / f.name)
    split = build_split(root, val_fraction=0.2, test_fraction=0.2, seed=0, skip_bad_images=False)
    # No test/: a stratified test split is held out of train/, val/ stays as the user made it.
    assert split.source == "folders, test held out of train/"
    assert len(split.train) == 10 and len(split.val) == 4 and len(split.test) == 2
    assert all(p.startswith("val/") for p, _ in split.val) and all(p.startswith("train/") for p, _ in split.test)
    for cls in ("circle", "square"):
        (root / "test" / cls).mkdir(parents=True)
        shutil.copy(sorted((tiny_data / cls).iterdir())[0], root / "test" / cls / "t.png")
    split = build_split(root, val_fraction=0.2, test_fraction=0.2, seed=0, skip_bad_images=False)
    assert split.source == "folders"
    assert len(split.train) == 12 and len(split.val) == 4 and [p for p, _ in split.test] == ["test/circle/t.png",
                                                                                             "test/square/t.png"]


def test_bad_images_stop_with_a_list_or_are_skipped(tiny_data, tmp_path):
    root = _copy(tiny_data, tmp_path)
    (root / "circle" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (root / "square" / "zero.jpg").write_bytes(b"")
    with pytest.raises(DataError) as err:
        build_split(root, val_fraction=0.2, seed=0, skip_bad_images=False)
    text = str(err.value)
    assert "2 bad image(s)" in text and "broken.png" in text and "zero.jpg: empty file" in text
    assert "\n" not in text
    split = build_split(root, val_fraction=0.2, seed=0, skip_bad_images=True)
    assert len(split.skipped) == 2
    assert len(split.train) + len(split.val) + len(split.test) == 24


def test_class_weights_favour_the_minority():
    weights = class_weights([90, 10])
    assert weights[1] > weights[0] * 8
    assert abs(float(weights.mean()) - 1.0) < 1e-6
