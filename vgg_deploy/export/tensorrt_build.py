"""Engines from the FP16 / Q/DQ ONNX graphs with TensorRT's Python API, strongly typed.

Only current calls (TensorRT 10/11): no builder precision flags, no INT8 calibrator; the precision
is the graph's own.
"""

from __future__ import annotations

from pathlib import Path

from vgg_deploy.errors import ExportError
from vgg_deploy.export.tensorrt_meta import BatchProfile, TensorRTEnvironment, network_flags
from vgg_deploy.fileio import atomic_path


def build_engine(
    onnx_path: Path, engine_path: Path, *, env: TensorRTEnvironment, input_name: str, image_size: int,
    profile: BatchProfile, workspace_bytes: int, timing_cache: Path, trt=None,
) -> None:
    """`trt` defaults to the real `tensorrt` module; tests pass a recording stand-in."""
    if trt is None:
        import tensorrt as trt
    logger = trt.Logger(trt.Logger.WARNING)
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
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
    config.set_timing_cache(cache, False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"TensorRT failed to build an engine from {onnx_path.name} (see its log above)")
    with atomic_path(engine_path) as tmp:
        tmp.write_bytes(bytes(serialized))
    with atomic_path(timing_cache) as tmp:
        tmp.write_bytes(bytes(config.get_timing_cache().serialize()))
