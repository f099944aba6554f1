"""Engines from the FP16 / Q/DQ ONNX graphs with TensorRT's Python API, strongly typed.

Only current calls (TensorRT 10/11): no builder precision flags, no INT8 calibrator; the precision
is the graph's own.
"""

from __future__ import annotations

from pathlib import Path

from vgg_deploy.artifacts.tensorrt_meta import BatchProfile, TensorRTEnvironment, network_flags
from vgg_deploy.console import console
from vgg_deploy.errors import ExportError
from vgg_deploy.fileio import atomic_path


def build_engine(
    onnx_path: Path, engine_path: Path, *, env: TensorRTEnvironment, input_name: str, image_size: int,
    profile: BatchProfile, workspace_bytes: int, timing_cache: Path, trt=None,
) -> None:
    """`trt` defaults to the real `tensorrt` module; tests pass a recording stand-in."""
    if trt is None:
        import tensorrt as trt
    from vgg_deploy.runners.tensorrt_runner import tensorrt_logger

    logger = tensorrt_logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt, env.tensorrt_major))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT could not parse {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    optimization_profile = builder.create_optimization_profile()
    optimization_profile.set_shape(input_name, *profile.shapes(image_size))
    config.add_optimization_profile(optimization_profile)
    cache = _timing_cache(config, timing_cache)
    config.set_timing_cache(cache, False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"TensorRT failed to build an engine from {onnx_path.name} (see its log above)")
    with atomic_path(engine_path) as tmp:
        tmp.write_bytes(bytes(serialized))
    with atomic_path(timing_cache) as tmp:
        tmp.write_bytes(bytes(config.get_timing_cache().serialize()))


def _timing_cache(config, path: Path):
    """The saved timing cache, or a fresh one where the saved file is unreadable to this TensorRT
    (`create_timing_cache` answers None): it is only a build-time speed-up, replaced after the build."""
    if path.is_file():
        cache = config.create_timing_cache(path.read_bytes())
        if cache is not None:
            return cache
        console.print(f"warning: TensorRT could not read the timing cache {path}; building without it "
                      "(it is replaced when the build ends)")
    cache = config.create_timing_cache(b"")
    if cache is None:
        raise ExportError("TensorRT could not create an empty timing cache")
    return cache
