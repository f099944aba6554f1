"""The model repository `vgg-deploy serve` hands to Triton: one Python-backend CPU model for the chosen ONNX
artifact, under the same model name, input, output and labels as the repository `export --triton-repo`
writes for Triton's container, so a client written against one works against the other."""

from __future__ import annotations

import shutil
from pathlib import Path

from vgg_deploy.export import triton
from vgg_deploy.fileio import link_or_copy

MODEL_FILE = "model.onnx"
# Runs inside Triton's Python stub (it imports triton_python_backend_utils), so it is copied, never imported here.
PYTHON_MODEL = Path(__file__).with_name("triton_python_model.py")
CPU_RUNTIMES = ("onnxruntime", "openvino")


def write_serving_repo(repo: Path, *, artifact: Path, entry: dict, manifest: dict, runtime: str, max_batch: int,
                       queue_delay_us: int | None, threads: int | None) -> str:
    """Write the repository into `repo` (a fresh folder); returns the model's name."""
    from google.protobuf import text_format

    name = triton.model_name(entry["name"])
    class_names = manifest["class_names"]
    config = triton.build_config(
        entry, name=name, input_name=manifest["input"]["name"], output_name=manifest["output"]["name"],
        image_size=manifest["preprocessing"]["image_size"], num_classes=len(class_names), max_batch_size=max_batch,
        preferred_batch_sizes=[b for b in (1, 2, 4, 8, 16, 32) if b <= max_batch], backend="python",
        queue_delay_us=queue_delay_us,
        parameters={"runtime": runtime, "model_file": MODEL_FILE, "threads": str(threads or 0)},
    )
    version = repo / name / "1"
    version.mkdir(parents=True)
    link_or_copy(artifact, version / MODEL_FILE)
    shutil.copy2(PYTHON_MODEL, version / "model.py")
    (repo / name / triton.LABELS).write_text("\n".join(class_names) + "\n")
    (repo / name / "config.pbtxt").write_text(text_format.MessageToString(config))
    return name
