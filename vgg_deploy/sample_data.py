"""The bundled sample data sets, drawn procedurally and deterministically: no download.

Three families, each six classes, all with random colour, position, scale, rotation, background,
noise and a distractor blob (learnable by a CNN, not by a colour statistic):

- `shapes`: filled shapes and patterned patches (the default, and the demo's source task);
- `more-shapes`: other filled shapes in the same style: new classes of the *same* family, a
  "similar" transfer target for a model trained on `shapes`;
- `textures`: full-frame patterns told apart by their structure, not by an outline: a "different"
  transfer target.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

FAMILIES: dict[str, tuple[str, ...]] = {
    "shapes": ("circle", "square", "triangle", "cross", "stripes", "checker"),
    "more-shapes": ("pentagon", "hexagon", "star", "ring", "arrow", "crescent"),
    "textures": ("dots", "waves", "grid", "rings", "zigzag", "blobs"),
}
DEFAULT_FAMILY = "shapes"
CLASSES = FAMILIES[DEFAULT_FAMILY]


def _random_color(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(0, 256, size=3))


def _contrasting_color(rng: np.random.Generator, background: tuple[int, int, int]) -> tuple[int, int, int]:
    while True:
        color = _random_color(rng)
        if sum(abs(a - b) for a, b in zip(color, background)) > 180:
            return color


def _polygon(cx: float, cy: float, radius: float, sides: int, angle: float) -> list[tuple[float, float]]:
    return [
        (cx + radius * math.cos(angle + 2 * math.pi * k / sides), cy + radius * math.sin(angle + 2 * math.pi * k / sides))
        for k in range(sides)
    ]


def _draw_shape(
    draw: ImageDraw.ImageDraw, name: str, size: int, rng: np.random.Generator, color, radius_range=(0.18, 0.36),
    background=None,
) -> None:
    radius = size * rng.uniform(*radius_range)
    cx = rng.uniform(radius, size - radius)
    cy = rng.uniform(radius, size - radius)
    angle = rng.uniform(0, 2 * math.pi)
    if name == "circle":
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=color)
    elif name in ("pentagon", "hexagon"):
        draw.polygon(_polygon(cx, cy, radius, 5 if name == "pentagon" else 6, angle), fill=color)
    elif name == "star":
        outer = _polygon(cx, cy, radius, 5, angle)
        inner = _polygon(cx, cy, radius * 0.42, 5, angle + math.pi / 5)
        draw.polygon([p for pair in zip(outer, inner) for p in pair], fill=color)
    elif name == "ring":
        width = max(1.0, radius * 0.35)
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], outline=color, width=int(round(width)))
    elif name == "arrow":
        # A shaft and a head along a random direction.
        dx, dy = math.cos(angle), math.sin(angle)
        px, py = -dy, dx
        shaft = radius * 0.22
        tip, neck = radius, radius * 0.1
        draw.polygon([(cx - dx * radius + px * shaft, cy - dy * radius + py * shaft),
                      (cx + dx * neck + px * shaft, cy + dy * neck + py * shaft),
                      (cx + dx * neck - px * shaft, cy + dy * neck - py * shaft),
                      (cx - dx * radius - px * shaft, cy - dy * radius - py * shaft)], fill=color)
        draw.polygon([(cx + dx * tip, cy + dy * tip), (cx + dx * neck + px * radius * 0.6, cy + dy * neck + py * radius * 0.6),
                      (cx + dx * neck - px * radius * 0.6, cy + dy * neck - py * radius * 0.6)], fill=color)
    elif name == "crescent":
        # A disc with an offset disc of the background cut out of it.
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=color)
        ox, oy = cx + math.cos(angle) * radius * 0.5, cy + math.sin(angle) * radius * 0.5
        draw.ellipse([ox - radius * 0.85, oy - radius * 0.85, ox + radius * 0.85, oy + radius * 0.85], fill=background)
    elif name == "square":
        draw.polygon(_polygon(cx, cy, radius, 4, angle), fill=color)
    elif name == "triangle":
        draw.polygon(_polygon(cx, cy, radius, 3, angle), fill=color)
    elif name == "cross":
        width = radius * 0.45
        for theta in (angle, angle + math.pi / 2):
            dx, dy = math.cos(theta), math.sin(theta)
            px, py = -dy * width / 2, dx * width / 2
            draw.polygon(
                [
                    (cx - dx * radius + px, cy - dy * radius + py),
                    (cx + dx * radius + px, cy + dy * radius + py),
                    (cx + dx * radius - px, cy + dy * radius - py),
                    (cx - dx * radius - px, cy - dy * radius - py),
                ],
                fill=color,
            )


def _texture(name: str, size: int, rng: np.random.Generator, fg, bg) -> Image.Image:
    period = rng.uniform(size / 14, size / 7)
    theta = rng.uniform(0, math.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    u = xx * math.cos(theta) + yy * math.sin(theta)
    if name == "stripes":
        mask = (np.floor(u / period) % 2).astype(bool)
    else:
        v = -xx * math.sin(theta) + yy * math.cos(theta)
        mask = ((np.floor(u / period) + np.floor(v / period)) % 2).astype(bool)
    arr = np.where(mask[..., None], np.array(fg, np.uint8), np.array(bg, np.uint8))
    return Image.fromarray(arr.astype(np.uint8))


def _full_frame_texture(name: str, size: int, rng: np.random.Generator, fg, bg) -> Image.Image:
    """The `textures` family: the pattern fills the frame, so the class lives in its structure."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    theta = rng.uniform(0, math.pi)
    u = xx * math.cos(theta) + yy * math.sin(theta)
    v = -xx * math.sin(theta) + yy * math.cos(theta)
    freq = rng.uniform(5, 9)
    if name == "dots":
        mask = np.zeros((size, size), bool)
        radius = rng.uniform(0.025, 0.05)
        for cx, cy in rng.uniform(0, 1, size=(int(rng.integers(12, 30)), 2)):
            mask |= (xx - cx) ** 2 + (yy - cy) ** 2 < radius**2
    elif name == "waves":
        mask = np.sin(2 * math.pi * (freq * u + rng.uniform(0.6, 1.2) * np.sin(2 * math.pi * rng.uniform(1.5, 3) * v))) > 0
    elif name == "grid":
        width = rng.uniform(0.12, 0.22)
        mask = ((freq * u) % 1 < width) | ((freq * v) % 1 < width)
    elif name == "rings":
        cx, cy = rng.uniform(0.2, 0.8, size=2)
        mask = np.sin(2 * math.pi * freq * np.hypot(xx - cx, yy - cy)) > 0
    elif name == "zigzag":
        tri = 2 * np.abs((freq * 0.6 * v) % 1 - 0.5)  # a triangle wave across the stripes
        mask = np.sin(2 * math.pi * (freq * u + 0.8 * tri)) > 0
    else:  # blobs: smooth random field, thresholded
        coarse = rng.normal(size=(5, 5))
        field = np.asarray(Image.fromarray(coarse.astype(np.float32), mode="F").resize((size, size), Image.BICUBIC))
        mask = field > np.median(field)
    arr = np.where(mask[..., None], np.array(fg, np.uint8), np.array(bg, np.uint8))
    return Image.fromarray(arr.astype(np.uint8))


def family_of(class_name: str) -> str:
    for family, names in FAMILIES.items():
        if class_name in names:
            return family
    raise ValueError(f"unknown sample class {class_name!r}")


def draw_sample(class_name: str, index: int, *, size: int = 96, seed: int = 0) -> Image.Image:
    """One image of `class_name` (any family); the same arguments always give the same pixels."""
    family = family_of(class_name)
    class_index = FAMILIES[family].index(class_name)
    # The original family keeps its original seeding, so its images are unchanged.
    key = [seed, class_index, index] if family == DEFAULT_FAMILY else [seed, list(FAMILIES).index(family), class_index, index]
    rng = np.random.default_rng(key)
    background = _random_color(rng)
    foreground = _contrasting_color(rng, background)
    if family == "textures":
        img = _full_frame_texture(class_name, size, rng, foreground, background)
    elif class_name in ("stripes", "checker"):
        img = _texture(class_name, size, rng, foreground, background)
        # Textures cover part of the frame only, so position matters as it does for shapes.
        mask = Image.new("L", (size, size), 0)
        _draw_shape(
            ImageDraw.Draw(mask), "circle" if rng.random() < 0.5 else "square", size, rng, 255, (0.3, 0.45)
        )
        base = Image.new("RGB", (size, size), background)
        img = Image.composite(img, base, mask.filter(ImageFilter.GaussianBlur(1)))
    else:
        img = Image.new("RGB", (size, size), background)
        _draw_shape(ImageDraw.Draw(img), class_name, size, rng, foreground, background=background)
    # Distractor: a small blob of a random third colour, so colour alone does not identify the class.
    draw = ImageDraw.Draw(img)
    r = size * rng.uniform(0.04, 0.1)
    x, y = rng.uniform(r, size - r, size=2)
    draw.ellipse([x - r, y - r, x + r, y + r], fill=_random_color(rng))
    arr = np.asarray(img, dtype=np.float32)
    arr += rng.normal(0, rng.uniform(4, 18), size=arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def write_sample_data(
    out: str | Path, *, images_per_class: int = 60, size: int = 96, seed: int = 0, family: str = DEFAULT_FAMILY,
    first_index: int = 0,
) -> Path:
    """Write an ImageFolder tree: OUT/<class>/<class>_<i>.png. Existing files of the same name are rewritten.

    `first_index` draws a disjoint set of images of the same classes (for example a second, independent
    test set)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown sample family {family!r}; choose from {', '.join(FAMILIES)}")
    out = Path(out)
    for class_name in FAMILIES[family]:
        class_dir = out / class_name
        class_dir.mkdir(parents=True, exist_ok=True)
        for i in range(first_index, first_index + images_per_class):
            draw_sample(class_name, i, size=size, seed=seed).save(class_dir / f"{class_name}_{i:04d}.png")
    return out
