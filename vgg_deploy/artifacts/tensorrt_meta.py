"""TensorRT logic that needs no TensorRT: batch profiles, engine sidecars, compatibility checks.

Engines are not portable across TensorRT versions or GPUs ("Version tag does not match",
NVIDIA/TensorRT#2072), so every engine is stamped and a mismatch is refused with a clear message.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from vgg_deploy.errors import ExportError, UnavailableError
from vgg_deploy.fileio import read_json, write_json

SIDECAR_SUFFIX = ".json"


@dataclass(frozen=True)
class BatchProfile:
    min: int = 1
    opt: int = 8
    max: int = 32

    def __post_init__(self):
        if not 1 <= self.min <= self.opt <= self.max:
            raise ExportError(
                f"batch profile needs 1 <= --min-batch <= --opt-batch <= --max-batch (got {self.min}, {self.opt}, {self.max})"
            )

    def shapes(self, image_size: int) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        return tuple((b, 3, image_size, image_size) for b in (self.min, self.opt, self.max))  # type: ignore[return-value]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_engine_shapes(cls, shapes) -> BatchProfile:
        """From what the engine reports for its input (min, opt, max shapes, batch first)."""
        return cls(*(int(shape[0]) for shape in shapes))

    def check(self, shape: tuple[int, ...], engine: str) -> None:
        """A batch outside the profile fails inside TensorRT with a bare `False`; say what fits instead."""
        if not self.min <= shape[0] <= self.max:
            raise UnavailableError(f"{engine} runs batches of {self.min} to {self.max} images (its optimization "
                                   f"profile), not {shape[0]}; rebuild it with --min-batch/--max-batch")

    def chunks(self, count: int) -> list[slice]:
        """Consecutive slices of at most `max` items, none below `min` where that is possible, covering `count`."""
        slices, start = [], 0
        while start < count:
            stop = min(start + self.max, count)
            if 0 < count - stop < self.min:  # the tail would fall below the profile: shorten this chunk
                stop = count - self.min
            slices.append(slice(start, stop))
            start = stop
        return slices


@dataclass(frozen=True)
class TensorRTEnvironment:
    tensorrt_version: str
    gpu_name: str
    compute_capability: str  # "9.0"

    @property
    def tensorrt_major(self) -> int:
        return int(self.tensorrt_version.split(".")[0])


def detect_environment() -> TensorRTEnvironment:
    """The TensorRT version and GPU here, or UnavailableError saying what is missing."""
    import torch

    try:
        import tensorrt as trt
    except ImportError:
        raise UnavailableError(
            "TensorRT is not installed (pip install tensorrt from NVIDIA's index, or the project's [gpu] extra)"
        ) from None
    if not torch.cuda.is_available():
        raise UnavailableError("TensorRT engines need a CUDA GPU, and torch sees none on this machine")
    major, minor = torch.cuda.get_device_capability()
    return TensorRTEnvironment(trt.__version__, torch.cuda.get_device_name(), f"{major}.{minor}")


def sidecar_path(engine: Path) -> Path:
    return engine.with_name(engine.name + SIDECAR_SUFFIX)


def make_sidecar(
    *, env: TensorRTEnvironment, precision: str, profile: BatchProfile, source_onnx: str, source_sha256: str,
    input_name: str, output_name: str, image_size: int, strongly_typed: bool, workspace_bytes: int,
) -> dict:
    return {
        "tensorrt_version": env.tensorrt_version,
        "gpu_name": env.gpu_name,
        "compute_capability": env.compute_capability,
        "precision": precision,
        "profile": profile.to_dict(),
        "input": {"name": input_name, "shape": ["batch", 3, image_size, image_size], "dtype": "float32"},
        "output": {"name": output_name, "dtype": "float32"},
        "source_onnx": source_onnx,
        "source_onnx_sha256": source_sha256,
        "strongly_typed": strongly_typed,
        "workspace_bytes": workspace_bytes,
    }


def write_sidecar(engine: Path, sidecar: dict) -> None:
    write_json(sidecar_path(engine), sidecar)


def read_sidecar(engine: Path) -> dict:
    path = sidecar_path(engine)
    if not path.is_file():
        raise UnavailableError(f"{engine.name} has no {path.name}; rebuild it with `vgg-deploy export`")
    return read_json(path)


def incompatibility(sidecar: dict, env: TensorRTEnvironment) -> str | None:
    """Why an engine cannot run here, or None."""
    differences = []
    if sidecar["tensorrt_version"] != env.tensorrt_version:
        differences.append(f"TensorRT {sidecar['tensorrt_version']} vs {env.tensorrt_version} here")
    if sidecar["gpu_name"] != env.gpu_name or sidecar["compute_capability"] != env.compute_capability:
        differences.append(
            f"GPU {sidecar['gpu_name']} (sm {sidecar['compute_capability']}) vs {env.gpu_name} (sm {env.compute_capability}) here"
        )
    if not differences:
        return None
    return "built for " + "; ".join(differences) + ": rebuild it here with `vgg-deploy export RUN --formats trt-...`"


def check_compatible(engine: Path, env: TensorRTEnvironment) -> dict:
    sidecar = read_sidecar(engine)
    reason = incompatibility(sidecar, env)
    if reason:
        raise UnavailableError(f"{engine.name} {reason}")
    return sidecar


def network_flags(trt, major: int) -> int:
    """STRONGLY_TYPED is needed on TensorRT 10 and always on (flag deprecated) in 11."""
    if major >= 11:
        return 0
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


def timing_cache_name(env: TensorRTEnvironment) -> str:
    gpu = "".join(c if c.isalnum() else "-" for c in env.gpu_name).strip("-").lower()
    return f"timing-trt{env.tensorrt_version}-{gpu}-sm{env.compute_capability.replace('.', '')}.cache"
