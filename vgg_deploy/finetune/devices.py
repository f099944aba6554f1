"""Where and in what precision training runs; never silently other than asked."""

from __future__ import annotations

import contextlib
import os
import random

import numpy as np
import torch

from vgg_deploy.errors import VggDeployError


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise VggDeployError("--device cuda asked for, but torch sees no CUDA GPU on this machine")
    if device not in ("cpu", "cuda"):
        raise VggDeployError(f"--device must be auto, cpu or cuda (got {device!r})")
    return torch.device(device)


def cpu_has_native_bf16() -> bool:
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(check() for check in checks if check is not None)


def resolve_precision(precision: str, device: torch.device) -> str:
    """auto: bf16/fp16 autocast on CUDA, bf16 on CPUs that have it natively, else fp32."""
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16" if cpu_has_native_bf16() else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise VggDeployError("--precision fp16 needs --device cuda; on CPU use bf16 or fp32")
    if precision not in ("fp32", "bf16", "fp16"):
        raise VggDeployError(f"--precision must be auto, fp32, bf16 or fp16 (got {precision!r})")
    return precision


def autocast_context(precision: str, device: torch.device):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def default_workers(workers: int | None) -> int:
    """Data-loader processes: as given, else one per core but one, at most 4 (VGG's compute, not decoding,
    bounds a step here)."""
    return workers if workers is not None else min(4, max(0, (os.cpu_count() or 1) - 1))
