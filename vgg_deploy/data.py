"""ImageFolder scanning, image checks, the stratified split, and the torch Dataset."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import Dataset

from vgg_deploy.errors import DataError
from vgg_deploy.image_check import check_images
from vgg_deploy.imaging import IMAGE_EXTENSIONS, BadImage, load_rgb


@dataclass
class Split:
    """Which images train, which validate and which test; written to RUN/split.json so later steps reuse it.

    train fits the weights; val chooses the checkpoint (and export's calibration decisions); test is only
    ever reported on (export's parity, the benchmark's accuracy), never used to decide anything."""

    root: str
    class_names: list[str]
    train: list[tuple[str, int]]  # (path relative to root, label)
    val: list[tuple[str, int]]
    test: list[tuple[str, int]] = field(default_factory=list)
    source: str = "stratified"  # "folders" (train/ val/ test/), "folders, test held out of train/", "stratified"
    skipped: list[BadImage] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "root": self.root,
            "source": self.source,
            "class_names": self.class_names,
            "train": [list(item) for item in self.train],
            "val": [list(item) for item in self.val],
            "test": [list(item) for item in self.test],
        }

    @classmethod
    def from_dict(cls, data: dict) -> Split:
        return cls(
            root=data["root"],
            class_names=list(data["class_names"]),
            train=[(str(p), int(y)) for p, y in data["train"]],
            val=[(str(p), int(y)) for p, y in data["val"]],
            # Runs written before the test split existed have none; later steps say so when they need it.
            test=[(str(p), int(y)) for p, y in data.get("test", [])],
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


def has_predefined_split(root: Path) -> bool:
    return (root / "train").is_dir() and (root / "val").is_dir()


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 < value < 1.0:
        raise DataError(f"{name} must be between 0 and 1 (got {value})")


def stratified_split(
    samples: list[tuple[Path, int]], class_names: list[str], *, fractions: dict[str, float], seed: int
) -> dict[str, list[tuple[Path, int]]]:
    """Split each class by `fractions` ({part: fraction}); what is left trains.

    Each part gets round(n * fraction) images of a class but at least one, and train keeps at least one,
    so a class needs 1 + len(fractions) images; tiny classes therefore give their held-out parts one
    image each before train gets more."""
    for name, value in fractions.items():
        _check_fraction(f"--{name}-split", value)
    if sum(fractions.values()) >= 1.0:
        raise DataError(f"--val-split and --test-split together must stay below 1 (got {sum(fractions.values()):.2f})")
    rng = random.Random(seed)
    by_class: dict[int, list[Path]] = {}
    for path, label in samples:
        by_class.setdefault(label, []).append(path)
    parts: dict[str, list[tuple[Path, int]]] = {"train": [], **{name: [] for name in fractions}}
    needed = 1 + len(fractions)
    for label in sorted(by_class):
        paths = sorted(by_class[label])
        if len(paths) < needed:
            raise DataError(f"class '{class_names[label]}' has {len(paths)} usable image(s); "
                            f"a split into train, {', '.join(fractions)} needs at least {needed}")
        rng.shuffle(paths)
        start = 0
        for name, fraction in fractions.items():
            left_for_others = len(paths) - start - (needed - 1 - list(fractions).index(name))
            count = min(max(1, round(len(paths) * fraction)), left_for_others)
            parts[name] += [(p, label) for p in paths[start : start + count]]
            start += count
        parts["train"] += [(p, label) for p in paths[start:]]
    return parts


def build_split(root: Path, *, val_fraction: float, test_fraction: float = 0.2, seed: int,
                skip_bad_images: bool, image_check: str = "cached", check_workers: int | None = None) -> Split:
    """Scan, check every image (image_check.check_images' modes), and split. Bad images stop here with a
    list, unless skipped.

    DATA/train, DATA/val (and DATA/test) are used as they are; without test/ a stratified test split is
    held out of train/; without any of them, val and test are both held out, stratified by class."""
    root = Path(root)
    folders: dict[str, list[tuple[Path, int]]] = {}
    if root.is_dir() and has_predefined_split(root):
        class_names, folders["train"] = scan_image_folder(root / "train")
        for part in ("val", "test"):
            if part == "test" and not (root / "test").is_dir():
                continue
            names, folders[part] = scan_image_folder(root / part, min_classes=1)
            if names != class_names:
                raise DataError(f"{root / part} classes {names} differ from {root / 'train'} classes {class_names}")
        all_samples = [item for items in folders.values() for item in items]
        source = "folders" if "test" in folders else "folders, test held out of train/"
    else:
        class_names, all_samples = scan_image_folder(root)
        source = "stratified"

    bad = _check_with_progress([p for p, _ in all_samples], mode=image_check, workers=check_workers)
    if bad and not skip_bad_images:
        listing = "; ".join(f"{b.path}: {b.reason}" for b in bad)
        raise DataError(f"{len(bad)} bad image(s) (use --skip-bad-images to leave them out): {listing}")
    bad_paths = {b.path for b in bad}

    def keep(items):
        return [(p, y) for p, y in items if str(p) not in bad_paths]

    if folders:
        parts = {name: keep(items) for name, items in folders.items()}
        if "test" not in parts:
            held = stratified_split(parts["train"], class_names, fractions={"test": test_fraction}, seed=seed)
            parts["train"], parts["test"] = held["train"], held["test"]
        present = {y for _, y in parts["train"]}
        missing = [name for i, name in enumerate(class_names) if i not in present]
        if missing:
            raise DataError(f"class folder(s) {missing} under {root / 'train'} have no usable images")
    else:
        kept = keep(all_samples)
        present = Counter(y for _, y in kept)
        empty = [class_names[i] for i in range(len(class_names)) if present.get(i, 0) == 0]
        if empty:
            raise DataError(f"class folder(s) {empty} have no usable images after skipping bad files")
        parts = stratified_split(kept, class_names, fractions={"val": val_fraction, "test": test_fraction}, seed=seed)

    def rel(items):
        return [(p.relative_to(root).as_posix(), y) for p, y in items]

    return Split(root=str(root.resolve()), class_names=class_names, train=rel(parts["train"]), val=rel(parts["val"]),
                 test=rel(parts["test"]), source=source, skipped=bad)


def _check_with_progress(paths: list[Path], *, mode: str, workers: int | None) -> list[BadImage]:
    from vgg_deploy.console import console, progress_bar

    with progress_bar() as bar:
        task = bar.add_task("checking images", total=len(paths), metrics="")
        return check_images(paths, mode=mode, workers=workers, report=console.print,
                            progress=lambda n: bar.update(task, advance=n))


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
