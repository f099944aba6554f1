from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from vgg_deploy.imaging import check_image, load_rgb


def _save(img: Image.Image, path, **kw):
    img.save(path, **kw)
    return path


@pytest.mark.parametrize(
    "mode,fmt",
    [("RGBA", "PNG"), ("LA", "PNG"), ("P", "PNG"), ("L", "PNG"), ("CMYK", "JPEG"), ("1", "PNG"), ("I;16", "PNG")],
)
def test_every_pillow_mode_becomes_rgb(tmp_path, mode, fmt):
    img = Image.new("RGB", (20, 10), (200, 30, 40)).convert(mode)
    path = _save(img, tmp_path / f"x.{fmt.lower()}", format=fmt)
    assert check_image(path) is None
    out = load_rgb(path)
    assert out.mode == "RGB" and out.size == (20, 10)


def test_16_bit_grey_is_rescaled_not_clipped(tmp_path):
    arr = np.full((8, 8), 32768, dtype=np.uint16)  # mid-grey in 16 bits
    path = _save(Image.fromarray(arr), tmp_path / "g16.png")
    value = np.asarray(load_rgb(path))[0, 0, 0]
    assert 120 <= value <= 135  # Pillow's plain convert would give 255


def test_transparent_pixels_composite_on_white(tmp_path):
    img = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    path = _save(img, tmp_path / "t.png")
    assert np.asarray(load_rgb(path)).min() == 255


def test_exif_rotation_is_applied(tmp_path):
    img = Image.new("RGB", (30, 10), (10, 200, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    path = _save(img, tmp_path / "r.jpg", exif=exif.tobytes())
    assert load_rgb(path).size == (10, 30)


def test_bad_files_are_named_with_a_reason(tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"this is not a jpeg at all" * 10)
    good = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(good, format="PNG")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.getvalue()[: len(good.getvalue()) // 2])
    reasons = {p.name: check_image(p) for p in (empty, garbage, truncated)}
    assert reasons["empty.png"].reason == "empty file"
    assert reasons["garbage.jpg"].reason == "not a readable image"
    assert "truncated" in reasons["truncated.png"].reason


def test_decompression_bomb_is_refused(tmp_path, monkeypatch):
    import vgg_deploy.imaging as imaging

    path = _save(Image.new("L", (200, 200)), tmp_path / "big.png")
    monkeypatch.setattr(imaging, "MAX_IMAGE_PIXELS", 100 * 100)
    bad = check_image(path)
    assert bad is not None and "decompression bomb" in bad.reason
