"""Which onnxruntime execution providers this machine can really use: one counts only if a session with it
comes up on a tiny model. `get_available_providers()` lists what the wheel was built with, not what loads:
a CUDA provider without its CUDA libraries, or the TensorRT provider built for another TensorRT major
version, is listed and then falls back to the CPU."""

from __future__ import annotations

import functools
import importlib.metadata
import re
from pathlib import Path

CPU = "CPUExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
TENSORRT_PROVIDER_LIBRARY = "libonnxruntime_providers_tensorrt.so"
TENSORRT_DISTRIBUTIONS = ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-libs", "tensorrt_libs")


def tiny_model() -> bytes:
    """One Relu on a [1, 4] float input: enough for a provider to claim a node."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


@functools.lru_cache(maxsize=None)
def provider_problem(provider: str) -> str | None:
    """None when a session with `provider` comes up and uses it; otherwise why not, in one line."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if provider not in available:
        return (f"onnxruntime here has no {provider} (available: {', '.join(available)}); install onnxruntime-gpu "
                "for the CUDA and TensorRT providers")
    fallback = [CPU] if provider != CPU else []
    try:
        session = ort.InferenceSession(tiny_model(), providers=[provider, *fallback])
    except RuntimeError as err:  # onnxruntime's own errors (Fail, RuntimeException) derive from it
        return f"{provider} failed to start a session: {str(err).strip().splitlines()[0]}"
    if session.get_providers()[0] == provider:
        return None
    reason = f"{provider} is listed by onnxruntime but did not load (the session fell back to {session.get_providers()[0]})"
    if provider == TENSORRT:
        mismatch = tensorrt_version_mismatch(Path(ort.__file__).parent / "capi" / TENSORRT_PROVIDER_LIBRARY)
        if mismatch:
            reason += f": {mismatch}"
    return reason


def needed_tensorrt_major(library: Path) -> int | None:
    """The TensorRT major version onnxruntime's TensorRT provider library links (its libnvinfer.so.N)."""
    if not library.is_file():
        return None
    found = re.search(rb"libnvinfer\.so\.(\d+)", library.read_bytes())
    return int(found.group(1)) if found else None


def installed_tensorrt_version() -> str | None:
    for name in TENSORRT_DISTRIBUTIONS:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def tensorrt_version_mismatch(library: Path, installed: str | None = None) -> str | None:
    needed = needed_tensorrt_major(library)
    installed = installed if installed is not None else installed_tensorrt_version()
    if needed is None:
        return None
    if installed is None:
        return f"it needs TensorRT {needed} (libnvinfer.so.{needed}), and no TensorRT is installed"
    if int(installed.split(".")[0]) != needed:
        return (f"it needs TensorRT {needed} (libnvinfer.so.{needed}), and TensorRT {installed} is installed; "
                f"install tensorrt {needed}.x beside it, or use the TensorRT engines (trt-fp16, trt-int8) instead")
    return None
