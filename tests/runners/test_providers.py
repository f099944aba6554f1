"""A provider counts only if a session with it comes up; when it does not, the reason says why."""

from __future__ import annotations

import pytest

from vgg_deploy.runners import providers


def test_the_cpu_provider_loads_on_the_tiny_model():
    assert providers.provider_problem("CPUExecutionProvider") is None


def test_a_provider_the_wheel_lacks_is_named_with_the_fix():
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    problem = providers.provider_problem("CUDAExecutionProvider")
    assert "no CUDAExecutionProvider" in problem and "onnxruntime-gpu" in problem


def test_a_listed_provider_that_does_not_load_is_not_counted(monkeypatch):
    """What onnxruntime-gpu does on a machine without CUDA libraries: the provider is listed, the session
    silently falls back to the CPU. Stood in by listing a provider this wheel cannot load."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime really has the CUDA provider")
    listed = ort.get_available_providers()
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", *listed])
    providers.provider_problem.cache_clear()
    try:
        problem = providers.provider_problem("CUDAExecutionProvider")
    finally:
        providers.provider_problem.cache_clear()
    assert problem is not None and "did not load" in problem and "CPUExecutionProvider" in problem


def test_the_tensorrt_provider_built_for_another_major_version_says_which(tmp_path):
    library = tmp_path / providers.TENSORRT_PROVIDER_LIBRARY
    library.write_bytes(b"\x7fELF...\0libcudart.so.13\0libnvinfer.so.10\0libnvonnxparser.so.10\0")
    assert providers.needed_tensorrt_major(library) == 10
    message = providers.tensorrt_version_mismatch(library, installed="11.4.0.106")
    assert "needs TensorRT 10 (libnvinfer.so.10)" in message and "TensorRT 11.4.0.106 is installed" in message
    assert providers.tensorrt_version_mismatch(library, installed="10.13.0") is None
    assert providers.tensorrt_version_mismatch(tmp_path / "absent.so", installed="11.4") is None


def test_tensorrt_provider_options_cache_engines_in_the_given_folder(tmp_path):
    from vgg_deploy.runners.onnxruntime_runner import provider_entries

    entries = provider_entries("tensorrt", cache_dir=tmp_path)
    name, options = entries[0]
    assert name == "TensorrtExecutionProvider" and entries[1:] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert options["trt_engine_cache_enable"] == "True" and options["trt_engine_cache_path"] == str(tmp_path)
    assert options["trt_timing_cache_enable"] == "True"
    assert provider_entries("cuda", cache_dir=tmp_path) == ["CUDAExecutionProvider", "CPUExecutionProvider"]


def test_the_benchmark_gives_the_tensorrt_provider_a_cache_in_the_run_folder(tmp_path):
    from vgg_deploy.benchmark.pipeline import ORT_TENSORRT_CACHE, BenchmarkOptions, _specs_for
    from vgg_deploy.runners.spec import build_runner

    entry = {"name": "onnx", "format": "onnx", "precision": "fp32", "path": "model.onnx"}
    export_dir = tmp_path / "run" / "export"
    [spec] = _specs_for(entry, export_dir, BenchmarkOptions(provider="tensorrt", onnx_backends=["onnxruntime"]), 2)
    runner = build_runner(spec)
    assert spec.cache_dir == str(tmp_path / "run" / "benchmark" / ORT_TENSORRT_CACHE) == str(runner.cache_dir)
    [cpu_spec] = _specs_for(entry, export_dir, BenchmarkOptions(onnx_backends=["onnxruntime"]), 2)
    assert cpu_spec.cache_dir is None
