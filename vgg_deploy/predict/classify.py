"""Images and folders -> top-k classes, with any artifact, through the run's own preprocessing."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vgg_deploy.artifacts import export_dir
from vgg_deploy.artifacts.choice import ArtifactChoice, choose_artifact
from vgg_deploy.artifacts.manifest import MANIFEST, read_manifest
from vgg_deploy.console import error_console, progress_bar
from vgg_deploy.errors import DataError
from vgg_deploy.imaging import IMAGE_EXTENSIONS, BadImage, check_image, load_rgb
from vgg_deploy.runfolder import open_run
from vgg_deploy.runners.spec import build_runner

FORMATS = ("table", "json", "csv")


@dataclass
class PredictOptions:
    artifact: str | None = None
    backend: str | None = None
    top_k: int = 5
    batch_size: int = 16
    threads: int | None = None


@dataclass
class Predictions:
    choice: ArtifactChoice
    class_names: list[str]
    rows: list[dict] = field(default_factory=list)  # {"path", "top": [{"label", "index", "probability"}]}
    bad: list[BadImage] = field(default_factory=list)


def collect_images(paths: list[Path]) -> tuple[list[Path], list[BadImage]]:
    """Files as given (any extension), folders searched recursively for image files, in a stable order."""
    found: list[Path] = []
    bad: list[BadImage] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        elif path.is_file():
            found.append(path)
        else:
            bad.append(BadImage(str(path), "no such file or folder"))
    return found, bad


def predict(run_dir: str | Path, paths: list[Path], options: PredictOptions) -> Predictions:
    import torch

    run = open_run(run_dir)
    if options.top_k < 1:
        raise DataError(f"--top-k must be at least 1 (got {options.top_k})")
    manifest = read_manifest(export_dir(run.path)) if (export_dir(run.path) / MANIFEST).is_file() else None
    choice = choose_artifact(run.path, manifest, artifact=options.artifact, backend=options.backend,
                             threads=options.threads)
    error_console.print(f"artifact: {choice.spec.name} on {choice.spec.kind} ({choice.why})")
    images, bad = collect_images(paths)
    result = Predictions(choice=choice, class_names=run.class_names, bad=bad)
    if not images:
        raise DataError("no images to classify in " + ", ".join(map(str, paths))
                        + (f" ({'; '.join(f'{b.path}: {b.reason}' for b in bad)})" if bad else ""))
    transform = run.preprocessing.eval_transform()
    top_k = min(options.top_k, len(run.class_names))
    with build_runner(choice.spec) as runner, progress_bar(error_console) as bar:
        task = bar.add_task("classifying", total=len(images), metrics="")
        for start in range(0, len(images), options.batch_size):
            tensors, kept = [], []
            for path in images[start:start + options.batch_size]:
                try:
                    tensors.append(transform(load_rgb(path)))
                    kept.append(path)
                except (OSError, SyntaxError, ValueError) as err:
                    result.bad.append(check_image(path) or BadImage(str(path), f"unreadable ({err})"))
            if tensors:
                logits = runner.infer(torch.stack(tensors).numpy())
                result.rows += _top_k(kept, logits, run.class_names, top_k)
            bar.update(task, advance=len(images[start:start + options.batch_size]))
    for item in result.bad:
        error_console.print(f"skipped {item.path}: {item.reason}")
    return result


def _top_k(paths: list[Path], logits: np.ndarray, class_names: list[str], k: int) -> list[dict]:
    from scipy.special import softmax

    probabilities = softmax(logits.astype(np.float64), axis=1)
    rows = []
    for path, p in zip(paths, probabilities):
        order = np.argsort(-p, kind="stable")[:k]
        rows.append({"path": str(path), "top": [{"label": class_names[i], "index": int(i), "probability": float(p[i])}
                                                for i in order]})
    return rows


def render(result: Predictions, fmt: str) -> str:
    if fmt == "json":
        return json.dumps({"artifact": result.choice.spec.name, "backend": result.choice.spec.kind,
                           "choice": result.choice.why, "predictions": result.rows,
                           "skipped": [{"path": b.path, "reason": b.reason} for b in result.bad]}, indent=2) + "\n"
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["path", "rank", "label", "index", "probability"])
        for row in result.rows:
            for rank, top in enumerate(row["top"], 1):
                writer.writerow([row["path"], rank, top["label"], top["index"], f"{top['probability']:.6f}"])
        return buffer.getvalue()
    if fmt == "table":
        from rich.console import Console
        from rich.table import Table

        table = Table("image", "top-1", "probability", "others")
        for row in result.rows:
            best, *others = row["top"]
            table.add_row(row["path"], best["label"], f"{best['probability']:.3f}",
                          ", ".join(f"{o['label']} {o['probability']:.3f}" for o in others))
        buffer = io.StringIO()
        Console(file=buffer, width=200, highlight=False, markup=False).print(table)
        return buffer.getvalue()
    raise DataError(f"--format must be one of {', '.join(FORMATS)} (got {fmt})")
