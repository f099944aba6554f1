"""ImageFolder scanning, image checks, the stratified split, and the torch Dataset."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import Dataset

from vgg_deploy.errors import DataError
from vgg_deploy.imaging import IMAGE_EXTENSIONS, BadImage, check_image, load_rgb


@dataclass
class Split:
    """Which images train and which validate; written to RUN/split.json so later steps reuse it."""

    root: str
    class_names: list[str]
    train: list[tuple[str, int]]  # (path relative to root, label)
    val: list[tuple[str, int]]
    source: str = "stratified"  # or "folders" when DATA had train/ and val/
    skipped: list[BadImage] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "root": self.root,
            "source": self.source,
            "class_names": self.class_names,
            "train": [list(item) for item in self.train],
            "val": [list(item) for item in self.val],
        }

    @classmethod
    def from_dict(cls, data: dict) -> Split:
        return cls(
            root=data["root"],
            class_names=list(data["class_names"]),
            train=[(str(p), int(y)) for p, y in data["train"]],
            val=[(str(p), int(y)) for p, y in data["val"]],
            source=data.get("source", "stratified"),
        )

    def absolute(self, items: list[tuple[str, int]]) -> list[tuple[Path, int]]:
        base = Path(self.root)
        return [(base / rel, label) for rel, label in items]

    def class_counts(self, items: list[tuple[str, int]]) -> list[int]:
        counts = Counter(label for _, label in items)
        return [counts.get(i, 0) for i in range(len(self.class_names))]


def _visible(path: Path) -> bool:
    return not path.name.startswith(".") and not path.name.startswith("__")


def scan_image_folder(root: Path, *, min_classes: int = 2) -> tuple[list[str], list[tuple[Path, int]]]:
    """Classes are the visible sub-folders; images are files with an image extension, at any depth."""
    if not root.exists():
        raise DataError(f"data folder {root} does not exist")
    if not root.is_dir():
        raise DataError(f"{root} is a file, not a folder of class sub-folders")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and _visible(p))
    if not class_dirs:
        raise DataError(f"{root} has no class sub-folders (expected one sub-folder of images per class)")
    samples: list[tuple[Path, int]] = []
    for label, class_dir in enumerate(class_dirs):
        files = sorted(
            f
            for f in class_dir.rglob("*")
            if f.is_file()
            and f.suffix.lower() in IMAGE_EXTENSIONS
            and all(_visible(Path(part)) for part in f.relative_to(class_dir).parts)
        )
        if not files:
            raise DataError(f"class folder {class_dir} has no images")
        samples += [(f, label) for f in files]
    if len(class_dirs) < min_classes:
        raise DataError(
            f"{root} has only {len(class_dirs)} class folder ({class_dirs[0].name}); a classifier needs at least {min_classes}"
        )
    return [d.name for d in class_dirs], samples


def check_images(paths: list[Path]) -> list[BadImage]:
    return [bad for p in paths if (bad := check_image(p)) is not None]


def has_predefined_split(root: Path) -> bool:
    return (root / "train").is_dir() and (root / "val").is_dir()


def stratified_split(
    samples: list[tuple[Path, int]], class_names: list[str], *, val_fraction: float, seed: int
) -> tuple[list[tuple[Path, int]], list[tuple[Path, int]]]:
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"--val-split must be between 0 and 1 (got {val_fraction})")
    rng = random.Random(seed)
    by_class: dict[int, list[Path]] = {}
    for path, label in samples:
        by_class.setdefault(label, []).append(path)
    train, val = [], []
    for label in sorted(by_class):
        paths = sorted(by_class[label])
        if len(paths) < 2:
            raise DataError(f"class '{class_names[label]}' has {len(paths)} usable image; a train/val split needs at least 2")
        rng.shuffle(paths)
        n_val = min(max(1, round(len(paths) * val_fraction)), len(paths) - 1)
        val += [(p, label) for p in paths[:n_val]]
        train += [(p, label) for p in paths[n_val:]]
    return train, val


def build_split(root: Path, *, val_fraction: float, seed: int, skip_bad_images: bool) -> Split:
    """Scan, check every image, and split. Bad images stop here with a list, unless skipped."""
    root = Path(root)
    if root.is_dir() and has_predefined_split(root):
        class_names, train_samples = scan_image_folder(root / "train")
        val_names, val_samples = scan_image_folder(root / "val", min_classes=1)
        if val_names != class_names:
            raise DataError(
                f"{root / 'val'} classes {val_names} differ from {root / 'train'} classes {class_names}"
            )
        all_samples = train_samples + val_samples
        source = "folders"
    else:
        class_names, all_samples = scan_image_folder(root)
        source = "stratified"

    bad = check_images([p for p, _ in all_samples])
    if bad and not skip_bad_images:
        listing = "; ".join(f"{b.path}: {b.reason}" for b in bad)
        raise DataError(f"{len(bad)} bad image(s) (use --skip-bad-images to leave them out): {listing}")
    bad_paths = {b.path for b in bad}

    def keep(items):
        return [(p, y) for p, y in items if str(p) not in bad_paths]

    if source == "folders":
        train, val = keep(train_samples), keep(val_samples)
        present = {y for _, y in train}
        missing = [name for i, name in enumerate(class_names) if i not in present]
        if missing:
            raise DataError(f"class folder(s) {missing} under {root / 'train'} have no usable images")
    else:
        kept = keep(all_samples)
        present = Counter(y for _, y in kept)
        empty = [class_names[i] for i in range(len(class_names)) if present.get(i, 0) == 0]
        if empty:
            raise DataError(f"class folder(s) {empty} have no usable images after skipping bad files")
        train, val = stratified_split(kept, class_names, val_fraction=val_fraction, seed=seed)

    def rel(items):
        return [(p.relative_to(root).as_posix(), y) for p, y in items]

    return Split(
        root=str(root.resolve()), class_names=class_names, train=rel(train), val=rel(val), source=source, skipped=bad
    )


def class_weights(counts: list[int]) -> torch.Tensor:
    """Inverse-frequency weights, normalised to mean 1, so the majority class cannot win by default."""
    counts_t = torch.tensor(counts, dtype=torch.float32).clamp(min=1)
    weights = counts_t.sum() / (len(counts) * counts_t)
    return weights / weights.mean()


class ImageDataset(Dataset):
    def __init__(self, items: list[tuple[Path, int]], transform):
        self.items = items
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        path, label = self.items[index]
        return self.transform(load_rgb(path)), label
