"""The bundled sample data set, drawn procedurally and deterministically: no download.

Shapes and textures with random colour, position, scale, rotation, background and noise:
learnable by a CNN, but not by a single colour statistic.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

CLASSES = ("circle", "square", "triangle", "cross", "stripes", "checker")


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
    draw: ImageDraw.ImageDraw, name: str, size: int, rng: np.random.Generator, color, radius_range=(0.18, 0.36)
) -> None:
    radius = size * rng.uniform(*radius_range)
    cx = rng.uniform(radius, size - radius)
    cy = rng.uniform(radius, size - radius)
    angle = rng.uniform(0, 2 * math.pi)
    if name == "circle":
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=color)
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


def draw_sample(class_name: str, index: int, *, size: int = 96, seed: int = 0) -> Image.Image:
    """One image of `class_name`; the same arguments always give the same pixels."""
    rng = np.random.default_rng([seed, CLASSES.index(class_name), index])
    background = _random_color(rng)
    foreground = _contrasting_color(rng, background)
    if class_name in ("stripes", "checker"):
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
        _draw_shape(ImageDraw.Draw(img), class_name, size, rng, foreground)
    # Distractor: a small blob of a random third colour, so colour alone does not identify the class.
    draw = ImageDraw.Draw(img)
    r = size * rng.uniform(0.04, 0.1)
    x, y = rng.uniform(r, size - r, size=2)
    draw.ellipse([x - r, y - r, x + r, y + r], fill=_random_color(rng))
    arr = np.asarray(img, dtype=np.float32)
    arr += rng.normal(0, rng.uniform(4, 18), size=arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def write_sample_data(out: str | Path, *, images_per_class: int = 60, size: int = 96, seed: int = 0) -> Path:
    """Write an ImageFolder tree: OUT/<class>/<class>_<i>.png. Existing identical files are rewritten in place."""
    out = Path(out)
    for class_name in CLASSES:
        class_dir = out / class_name
        class_dir.mkdir(parents=True, exist_ok=True)
        for i in range(images_per_class):
            draw_sample(class_name, i, size=size, seed=seed).save(class_dir / f"{class_name}_{i:04d}.png")
    return out
