"""What the numbers were measured on."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# x86 integer dot-product instructions, in the order kernels prefer them. Without a VNNI or AMX one, onnxruntime's
# int8 kernels use AVX2's vpmaddubsw, whose 16-bit pair sums can saturate: on a 2-core AMD EPYC without VNNI
# (2026-12-02) a tiny Q/DQ model's largest output error was 0.029 fused against 0.0033 run op by op. INT8
# figures are only comparable between machines with the same of these.
INT8_INSTRUCTIONS = ("amx_int8", "avx512_vnni", "avx_vnni", "avx512f", "avx2")


def int8_instructions(cpuinfo: str | os.PathLike[str] = "/proc/cpuinfo") -> list[str] | None:
    """Which of INT8_INSTRUCTIONS this CPU has, best first; None where the flags cannot be read (not Linux)."""
    try:
        with open(cpuinfo) as handle:
            flags = next((line.split(":", 1)[1].split() for line in handle if line.startswith("flags")), None)
    except OSError:
        return None
    return None if flags is None else [name for name in INT8_INSTRUCTIONS if name in flags]


def physical_cores(sysfs: str | os.PathLike[str] = "/sys/devices/system/cpu") -> int:
    """Cores this process may run on, counting SMT siblings once: one busy thread per core is what GEMM
    kernels want, and os.cpu_count() counts logical CPUs (twice the cores on an SMT host)."""
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    cores = set()
    for cpu in allowed:
        topology = Path(sysfs) / f"cpu{cpu}" / "topology"
        try:
            cores.add(((topology / "physical_package_id").read_text().strip(), (topology / "core_id").read_text().strip()))
        except OSError:  # no topology (containers, other systems): count the logical CPU
            cores.add(("cpu", str(cpu)))
    return max(1, len(cores))


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def describe_machine() -> dict:
    import torch

    gpu = None
    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability()
        gpu = {"name": torch.cuda.get_device_name(), "compute_capability": f"{major}.{minor}"}
    return {
        "cpu": _cpu_model(),
        "cores": physical_cores(),
        "logical_cpus": os.cpu_count(),
        "int8_instructions": int8_instructions(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "gpu": gpu,
        "versions": {
            name: _version(name)
            for name in ("vgg-deploy", "torch", "torchvision", "onnx", "onnxruntime", "onnxruntime-gpu", "tensorrt",
                         "openvino", "numpy")
            if _version(name)
        },
    }
