"""Opening user images: every mode Pillow reads becomes RGB, and bad files are named, never crashed on."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
)
# Pillow's own default (about 89 Mpx); above it a file is treated as a decompression bomb.
MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485


@dataclass(frozen=True)
class BadImage:
    path: str
    reason: str


def _to_rgb(img: Image.Image) -> Image.Image:
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # Pillow's convert("RGB") clips 16-bit and float grey to 255; rescale to 8 bits instead.
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or (img.mode == "I" and arr.max(initial=0) > 255) else 255.0
        if img.mode == "F":
            lo, hi = float(arr.min(initial=0)), float(arr.max(initial=1))
            arr = (arr - lo) / (hi - lo or 1.0) * 255.0
        else:
            arr = arr / top * 255.0
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB")


def load_rgb(path: str | Path) -> Image.Image:
    """Decode fully and return an RGB image. Raises the original Pillow/OS error on a bad file."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(path) as img:
            img.load()
            return _to_rgb(img)


def check_image(path: str | Path, *, decode: bool = True) -> BadImage | None:
    """None if the file decodes to a usable image, else why not. decode=False reads the header only
    (format, size, the bomb limit): it cannot see truncated or corrupt pixel data."""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            return BadImage(str(path), "empty file")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
                if width * height > MAX_IMAGE_PIXELS:
                    return BadImage(str(path), f"too large ({width}x{height} px; possible decompression bomb)")
                if width < 1 or height < 1:
                    return BadImage(str(path), "zero-sized image")
                if decode:
                    img.load()
                    _to_rgb(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        return BadImage(str(path), f"too large, possible decompression bomb ({err})")
    except UnidentifiedImageError:
        return BadImage(str(path), "not a readable image")
    except (OSError, SyntaxError, ValueError) as err:
        # Pillow reports truncation and corrupt streams as OSError/SyntaxError/ValueError.
        return BadImage(str(path), f"corrupt or truncated ({err})")
    return None
