"""The TensorRT code holds to the real binding: every TensorRT name it uses is registered by
tensorrt-cu13-bindings 11.4 (derived from its tensorrt.so by tools/derive_tensorrt_names.py; TensorRT itself
cannot be installed here)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NAMES_FILE = Path(__file__).parent / "data" / "tensorrt_names.txt"
# Each module, and the expressions in it that hold TensorRT objects (its module `trt`, and the objects its calls
# return). tensorrt_meta's `engine` is a file path, so there only `trt` counts.
TENSORRT_OBJECTS = {
    "vgg_deploy/runners/tensorrt_runner.py": {"trt", "self.trt", "engine", "self.engine", "self.context",
                                              "self.runtime"},
    "vgg_deploy/export/tensorrt_build.py": {"trt", "builder", "network", "parser", "config", "optimization_profile",
                                            "cache"},
    "vgg_deploy/artifacts/tensorrt_meta.py": {"trt"},
}


class Registered:
    """The binding's strings; a name is registered when one of them ends with it (the linker keeps a string
    that ends another inside that one's tail: "Logger" in "ILogger")."""

    def __init__(self) -> None:
        self.strings = [line for line in NAMES_FILE.read_text().splitlines() if line and not line.startswith("#")]

    def __contains__(self, name: str) -> bool:
        return any(s.endswith(name) for s in self.strings)

    def missing(self, names: set[str]) -> list[str]:
        return sorted(n for n in names if n not in self)


def registered_names() -> Registered:
    return Registered()


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def tensorrt_names_used(source: str, objects: set[str]) -> set[str]:
    """Attribute names read from TensorRT objects: `trt.A.B` gives A and B; `engine.f()` gives f; a call's
    result read from (`config.get_timing_cache().serialize`) counts as TensorRT's too."""
    used = set()
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Attribute):
            continue
        value = node.value.func if isinstance(node.value, ast.Call) else node.value
        dotted = _dotted(value)
        if dotted is None:
            continue
        if dotted in objects or any(dotted.startswith(f"{root}.") for root in ("trt", "self.trt")):
            used.add(node.attr)
        elif isinstance(node.value, ast.Call) and any(dotted.startswith(f"{o}.") for o in objects):
            used.add(node.attr)
    return used


def test_every_tensorrt_name_the_project_uses_is_registered_by_the_binding():
    registered = registered_names()
    used = set()
    for module, objects in TENSORRT_OBJECTS.items():
        names = tensorrt_names_used((ROOT / module).read_text(), objects)
        assert names, module
        missing = registered.missing(names)
        assert not missing, f"{module} uses names tensorrt 11.4 does not register: {missing}"
        used |= names
    # The calls the build and the runner cannot do without, so the check is never vacuous.
    assert {"create_network", "parse_from_file", "build_serialized_network", "deserialize_cuda_engine",
            "set_input_shape", "execute_async_v3", "get_tensor_dtype", "STRONGLY_TYPED"} <= used
    assert len(used) >= 35


def test_a_name_tensorrt_11_removed_is_caught():
    registered = registered_names()
    removed = "config.int8_calibrator = calibrator\nconfig.set_flag(trt.BuilderFlag.FP16)\nengine.device_memory_size\n"
    used = tensorrt_names_used(removed, {"trt", "config", "engine"})
    assert {"int8_calibrator", "FP16", "device_memory_size"} <= set(registered.missing(used))
    assert "set_flag" in registered and "BuilderFlag" in registered  # still there in 11 (for other flags)
