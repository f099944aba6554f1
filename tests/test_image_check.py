"""The pre-training image check: parallel and serial agree, verdicts are cached by (path, size, mtime),
and a changed file is checked again."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

from vgg_deploy import image_check
from vgg_deploy.data import build_split
from vgg_deploy.errors import DataError
from vgg_deploy.image_check import VerdictCache, check_images


def _jpeg_bytes(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.effect_noise((64, 48), 40 + seed % 50).convert("RGB").save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def _truncated(data: bytes) -> bytes:
    return data[: len(data) * 2 // 3]  # header intact, pixel data cut short


@pytest.fixture
def planted(tmp_path) -> tuple[list[Path], set[str]]:
    """60 files, 4 of them bad in different ways, spread through the list."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    paths = []
    for i in range(60):
        path = folder / f"img_{i:03d}.jpg"
        path.write_bytes(_jpeg_bytes(i))
        paths.append(path)
    paths[3].write_bytes(b"")                          # empty
    paths[17].write_bytes(_truncated(_jpeg_bytes(17)))       # truncated
    paths[31].write_text("not an image at all")        # not an image
    paths[58].write_bytes(b"\x89PNG\r\n\x1a\n garbage")  # a broken header
    return paths, {str(paths[i]) for i in (3, 17, 31, 58)}


def _decodes(monkeypatch) -> list[int]:
    """Counts the files decoded in this process (the serial path)."""
    decoded: list[int] = []
    real = image_check._check_chunk

    def counting(paths):
        decoded.append(len(paths))
        return real(paths)

    monkeypatch.setattr(image_check, "_check_chunk", counting)
    return decoded


def test_parallel_and_serial_give_the_same_verdicts(planted, tmp_path, monkeypatch):
    paths, bad = planted
    monkeypatch.setattr(image_check, "PARALLEL_MIN_FILES", 1)
    monkeypatch.setattr(image_check, "CHUNK_FILES", 7)
    serial = check_images(paths, mode="full", workers=1, cache_path=tmp_path / "a.sqlite")
    parallel = check_images(paths, mode="full", workers=2, cache_path=tmp_path / "b.sqlite")
    assert {b.path for b in serial} == bad
    assert parallel == serial  # same files, same reasons, same order
    assert [b.path for b in serial] == sorted(bad)


def test_cached_verdicts_are_reused_until_size_or_mtime_change(planted, tmp_path, monkeypatch):
    paths, bad = planted
    cache = tmp_path / "cache.sqlite"
    decoded = _decodes(monkeypatch)
    first = check_images(paths, workers=1, cache_path=cache)
    assert sum(decoded) == 60 and {b.path for b in first} == bad

    decoded.clear()
    again = check_images(paths, workers=1, cache_path=cache)
    assert decoded == [] and again == first  # bad files come back from the cache too

    # A new mtime (same bytes) and a new size are each checked again; nothing else is.
    stat = os.stat(paths[5])
    os.utime(paths[5], ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    paths[9].write_bytes(_truncated(_jpeg_bytes(9)))  # now truncated: the cache must not say it is good
    paths[17].write_bytes(_jpeg_bytes(17))      # repaired
    decoded.clear()
    changed = check_images(paths, workers=1, cache_path=cache)
    assert sum(decoded) == 3
    assert {b.path for b in changed} == bad - {str(paths[17])} | {str(paths[9])}

    decoded.clear()
    check_images(paths, mode="full", workers=1, cache_path=cache)
    assert sum(decoded) == 60  # full ignores the cache


def test_verdicts_are_kept_per_rules(planted, tmp_path, monkeypatch):
    paths, _ = planted
    cache = tmp_path / "cache.sqlite"
    check_images(paths, workers=1, cache_path=cache)
    monkeypatch.setattr(image_check, "RULES", image_check.RULES + " changed")
    decoded = _decodes(monkeypatch)
    check_images(paths, workers=1, cache_path=cache)
    assert sum(decoded) == 60


def test_header_mode_reads_no_pixels(planted, tmp_path):
    paths, bad = planted
    found = {b.path for b in check_images(paths, mode="header", cache_path=tmp_path / "unused.sqlite")}
    assert found == bad - {str(paths[17])}  # the truncated JPEG has a good header
    assert not (tmp_path / "unused.sqlite").exists()


def test_an_unusable_cache_warns_and_still_checks(planted, tmp_path):
    paths, bad = planted
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    said: list[str] = []
    found = check_images(paths, workers=1, cache_path=blocker / "cache.sqlite", report=said.append)
    assert {b.path for b in found} == bad
    assert any("unusable" in line and str(blocker) in line for line in said)


def test_unknown_mode_is_refused(planted):
    with pytest.raises(DataError, match="--image-check must be one of"):
        check_images(planted[0], mode="quick")


def test_build_split_catches_a_file_broken_since_the_last_run(tiny_data, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(tiny_data, root)
    first = build_split(root, val_fraction=0.2, seed=0, skip_bad_images=False)
    assert build_split(root, val_fraction=0.2, seed=0, skip_bad_images=False).to_dict() == first.to_dict()
    victim = sorted((root / "circle").iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:-40])
    with pytest.raises(DataError, match=f"1 bad image.*{victim.name}"):
        build_split(root, val_fraction=0.2, seed=0, skip_bad_images=False)


def test_verdict_cache_range_scan_ignores_other_folders(tmp_path):
    cache = VerdictCache(tmp_path / "c.sqlite")
    cache.add([("/data/a/x.jpg", 10, 1, None), ("/data/ab/y.jpg", 10, 1, "bad"), ("/other/z.jpg", 10, 1, None)])
    cache.commit()
    assert cache.fresh({"/data/a/x.jpg": (10, 1), "/data/a/w.jpg": (5, 1)}) == {"/data/a/x.jpg": None}
    assert cache.fresh({"/data/a/x.jpg": (11, 1)}) == {}
    cache.close()
