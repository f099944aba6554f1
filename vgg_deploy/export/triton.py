"""A Triton Inference Server model repository for the exported artifacts.

One model per artifact: the onnxruntime backend for ONNX files, the tensorrt backend for engines.
Configs are built as Triton's own `ModelConfig` protobuf (from tritonclient) and written in its text
format, so what Triton parses is what we built.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from vgg_deploy.errors import UnavailableError, VggDeployError
from vgg_deploy.fileio import link_or_copy

BACKEND = {"onnx": ("onnxruntime", "model.onnx"), "tensorrt": ("tensorrt", "model.plan")}
LABELS = "labels.txt"
QUEUE_DELAY_US = 100


def require_model_config():
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        raise UnavailableError(
            "--triton-repo needs Triton's model_config protobuf: pip install 'tritonclient[grpc]' "
            "(or the project's triton extra)"
        ) from None
    return model_config_pb2


def model_name(artifact: str, prefix: str = "vgg16") -> str:
    return f"{prefix}_{artifact.replace('-', '_')}"


def build_config(entry: dict, *, name: str, input_name: str, output_name: str, image_size: int, num_classes: int,
                 max_batch_size: int, preferred_batch_sizes: list[int], backend: str | None = None,
                 queue_delay_us: int | None = QUEUE_DELAY_US, parameters: dict[str, str] | None = None):
    """Triton's ModelConfig for one artifact. `backend` defaults to the artifact's own (onnxruntime, tensorrt);
    "python" is the CPU model `vgg-deploy serve` runs. `queue_delay_us=None` turns dynamic batching off."""
    mc = require_model_config()
    own_backend, filename = BACKEND[entry["format"]]
    backend = backend or own_backend
    config = mc.ModelConfig(name=name, backend=backend, max_batch_size=max_batch_size)
    if backend == own_backend:
        config.default_model_filename = filename
    config.input.add(name=input_name, data_type=mc.TYPE_FP32, dims=[3, image_size, image_size])
    config.output.add(name=output_name, data_type=mc.TYPE_FP32, dims=[num_classes],
                      label_filename=LABELS)
    if queue_delay_us is not None:
        config.dynamic_batching.preferred_batch_size.extend(
            sorted({b for b in preferred_batch_sizes if b <= max_batch_size}))
        config.dynamic_batching.max_queue_delay_microseconds = queue_delay_us
    if entry["format"] == "tensorrt":
        config.instance_group.add(kind=mc.ModelInstanceGroup.KIND_GPU, count=1)
    elif backend == "python":
        config.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU, count=1)
    for key, value in (parameters or {}).items():
        config.parameters[key].string_value = value
    return config


def write_triton_repo(export_dir: Path, manifest: dict, repo: Path, *, max_batch_size: int,
                      preferred_batch_sizes: list[int]) -> list[str]:
    """Write (or replace) one model folder per artifact; other models already in `repo` are left alone."""
    from google.protobuf import text_format

    image_size = manifest["preprocessing"]["image_size"]
    class_names = manifest["class_names"]
    repo.mkdir(parents=True, exist_ok=True)
    written = []
    for entry in manifest["artifacts"]:
        name = model_name(entry["name"])
        batch_limit = entry.get("engine", {}).get("profile", {}).get("max", max_batch_size)
        config = build_config(entry, name=name, input_name=manifest["input"]["name"],
                              output_name=manifest["output"]["name"], image_size=image_size, num_classes=len(class_names),
                              max_batch_size=min(max_batch_size, batch_limit), preferred_batch_sizes=preferred_batch_sizes)
        staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=repo))
        try:
            (staging / "1").mkdir()
            link_or_copy(export_dir / entry["path"], staging / "1" / BACKEND[entry["format"]][1])
            (staging / LABELS).write_text("\n".join(class_names) + "\n")
            (staging / "config.pbtxt").write_text(text_format.MessageToString(config))
            os.chmod(staging, 0o755)
            _replace_dir(staging, repo / name)
        except OSError as err:
            raise VggDeployError(f"cannot write Triton model {repo / name}: {err}") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        written.append(name)
    return written




def _replace_dir(new: Path, target: Path) -> None:
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    os.replace(new, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
