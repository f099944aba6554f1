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
