"""RUN/export/manifest.json: the artifact contract benchmark and users' scripts read."""

from __future__ import annotations

from pathlib import Path

from vgg_deploy.errors import RunFolderError
from vgg_deploy.fileio import read_json, sha256_file, write_json

MANIFEST = "manifest.json"
ARTIFACT_NAMES = ("onnx", "onnx-fp16", "onnx-int8", "trt-fp16", "trt-int8")
FORMAT = {"onnx": "onnx", "onnx-fp16": "onnx", "onnx-int8": "onnx", "trt-fp16": "tensorrt", "trt-int8": "tensorrt"}
PRECISION = {"onnx": "fp32", "onnx-fp16": "fp16", "onnx-int8": "int8", "trt-fp16": "fp16", "trt-int8": "int8"}
FILENAME = {"onnx": "model.onnx", "onnx-fp16": "model.fp16.onnx", "onnx-int8": "model.int8.onnx",
            "trt-fp16": "model.fp16.engine", "trt-int8": "model.int8.engine"}


def artifact_entry(export_dir: Path, name: str, **figures) -> dict:
    path = export_dir / FILENAME[name]
    return {
        "name": name,
        "format": FORMAT[name],
        "precision": PRECISION[name],
        "path": FILENAME[name],
        "sha256": sha256_file(path),
        "bytes": path.stat().st_size,
        **figures,
    }


def read_manifest(export_dir: Path) -> dict:
    path = export_dir / MANIFEST
    if not path.is_file():
        raise RunFolderError(f"{path} is missing; run `vgg-deploy export` on this run first")
    try:
        manifest = read_json(path)
        for entry in manifest["artifacts"]:
            for key in ("name", "format", "precision", "path", "sha256", "bytes"):
                entry[key]
    except (ValueError, KeyError, TypeError) as err:
        raise RunFolderError(f"{path} is not a valid manifest ({err})") from None
    return manifest


def still_valid(export_dir: Path, entry: dict) -> bool:
    """An earlier entry is kept only if its file is still exactly what was recorded."""
    path = export_dir / entry["path"]
    return path.is_file() and path.stat().st_size == entry["bytes"] and sha256_file(path) == entry["sha256"]


def write_manifest(export_dir: Path, manifest: dict) -> None:
    order = {name: i for i, name in enumerate(ARTIFACT_NAMES)}
    manifest["artifacts"].sort(key=lambda entry: order.get(entry["name"], len(order)))
    write_json(export_dir / MANIFEST, manifest)
