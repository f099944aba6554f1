"""What `vgg-deploy export` was asked for."""

from __future__ import annotations

from dataclasses import dataclass, field

from vgg_deploy.artifacts.tensorrt_meta import BatchProfile
from vgg_deploy.batches import EVAL_MEMORY_MB


@dataclass
class ExportOptions:
    formats: list[str] = field(default_factory=lambda: ["onnx", "onnx-fp16", "onnx-int8"])
    calib_images: int = 128
    calib_method: str = "minmax"
    # INT8 from the range-equalized FP32 model (exact in FP32; calibration.equalize): on, off, or auto (both
    # built, the one that disagrees less with FP32 on the decision images kept). It fixed INT8 on the learned
    # 224 px model and made the 64 px demo's worse (benchmarks/README.md), so it is decided per run.
    equalize: str = "auto"
    max_accuracy_drop: float | None = None
    max_fp32_layers: int = 4
    check_images: int | None = 256  # test images for parity/accuracy figures, and val images for decisions (None: all)
    batch_size: int = 16
    eval_memory_mb: float = EVAL_MEMORY_MB  # check sets larger than this are streamed from disk on every pass
    profile: BatchProfile = field(default_factory=BatchProfile)
    workspace_gib: float = 4.0
    seed: int = 0
    triton_repo: str | None = None
