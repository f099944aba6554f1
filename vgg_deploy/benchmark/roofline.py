"""Roofline: how close each row comes to what this machine can do at its precision.

The peaks are measured at the start of a benchmark, in a few seconds, through the runtimes that run the
artifacts: an FP32 GEMM and the project's own symmetric int8 Q/DQ GEMM in onnxruntime, and a BF16 GEMM
in PyTorch (FP32/FP16 on CUDA). A row's multiply-adds per image come from the exported ONNX graph.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

# Square GEMMs this size keep the CPU's kernels compute-bound (the weights fit in cache; no memory floor).
GEMM_SIZE = 1024
EXPLANATION = (
    "Each row's multiply-adds per image (from the ONNX graph) divided by its p50 latency give the "
    "multiply-adds per second it achieves; against this machine's GEMM peak for its precision, measured at "
    "the start through the runtimes themselves, that is the % of peak. A row near 100% is at the machine's "
    "floor for that precision and only less work (pruning, a lower precision) makes it faster; a row far "
    "below it is losing time to something a better kernel or runtime could recover. Above 100% means the "
    "GEMM probe fell short of what this precision reaches here (convolution kernels can block better than "
    "one square GEMM, and a busy machine lowers the probe)."
)


def _gmacs(step, macs: int, seconds: float) -> float:
    """Multiply-adds per second of the fastest call: a peak is what the machine can do, and on a shared
    machine the median would fold other work into it."""
    step()  # warm-up: first calls allocate and pick kernels
    fastest, deadline, calls = float("inf"), time.perf_counter() + seconds, 0
    while time.perf_counter() < deadline or calls < 3:
        start = time.perf_counter()
        step()
        fastest = min(fastest, time.perf_counter() - start)
        calls += 1
    return macs / fastest / 1e9


def _matmul_onnx(path: Path, size: int) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = np.random.default_rng(0).standard_normal((size, size)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["y"], name="gemm")], "gemm",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [size, size])], [numpy_helper.from_array(weight, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(path))


def _onnxruntime_peaks(threads: int, seconds: float, size: int) -> dict[str, float]:
    import onnxruntime as ort

    import calibration

    a = np.random.default_rng(1).standard_normal((size, size)).astype(np.float32)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    peaks = {}
    with tempfile.TemporaryDirectory(prefix="roofline-") as tmp:
        fp32, int8 = Path(tmp) / "gemm.onnx", Path(tmp) / "gemm.int8.onnx"
        _matmul_onnx(fp32, size)
        # The same Q/DQ form as the INT8 artifacts: symmetric int8, per-channel weights.
        cache = calibration.RangeCache(Path(tmp) / "ranges")
        cache.store(calibration.CalibrationKey.build("gemm", "gemm", "minmax"),
                    calibration.collect_ranges(fp32, [a], input_name="a", method="minmax"))
        calibration.quantize_qdq(fp32, int8, ranges_path=cache.ranges_path, method="minmax", op_types=["MatMul"])
        for precision, path in (("fp32", fp32), ("int8", int8)):
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            peaks[precision] = _gmacs(lambda s=session: s.run(None, {"a": a}), size**3, seconds)
    return peaks


def _torch_peaks(device: str, precisions: tuple[str, ...], threads: int, seconds: float, size: int) -> dict[str, float]:
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)  # the peak at the rows' thread count; the caller's setting comes back after
    try:
        return {precision: _torch_gemm_peak(device, precision, seconds, size) for precision in precisions}
    finally:
        torch.set_num_threads(previous)


def _torch_gemm_peak(device: str, precision: str, seconds: float, size: int) -> float:
    import torch

    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)

    def step():
        torch.matmul(a, b)
        if device == "cuda":
            torch.cuda.synchronize()

    return _gmacs(step, size**3, seconds)


def measure_peaks(*, device: str, threads: int, seconds: float = 1.0, size: int = GEMM_SIZE) -> dict[str, dict]:
    """{precision: {"gmacs": G multiply-adds/s, "through": what ran it}} for this device."""
    if device == "cuda":
        return {p: {"gmacs": g, "through": "torch.matmul on CUDA"}
                for p, g in _torch_peaks("cuda", ("fp32", "fp16"), threads, seconds, size).items()}
    peaks = {p: {"gmacs": g, "through": "onnxruntime CPU MatMul" + (" (int8 Q/DQ)" if p == "int8" else "")}
             for p, g in _onnxruntime_peaks(threads, seconds, size).items()}
    peaks["bf16"] = {"gmacs": _torch_peaks("cpu", ("bf16",), threads, seconds, size)["bf16"],
                     "through": "torch.matmul on CPU"}
    return peaks


def row_figures(result: dict, *, macs_per_image: int, peaks: dict[str, dict], threads: int | None) -> dict:
    """{batch: {gmacs, pct_of_peak, core_ms_per_image}} from the row's p50 latencies. `threads` None (a GPU
    row) leaves core-milliseconds out; a precision without a measured peak leaves % of peak out."""
    precision = result.get("precision")
    if precision not in peaks and precision == "fp16":
        precision = "fp32"  # no FP16 GEMM on this CPU: the runtime computes FP16 models in FP32
    peak = peaks.get(precision, {}).get("gmacs")
    figures = {}
    for batch, stats in result.get("latency_ms", {}).items():
        seconds = stats["p50"] / 1000.0
        achieved = macs_per_image * int(batch) / seconds / 1e9
        figures[batch] = {
            "gmacs": round(achieved, 2),
            "pct_of_peak": round(100.0 * achieved / peak, 1) if peak else None,
            "peak": precision if peak else None,
            "core_ms_per_image": round(stats["p50"] * threads / int(batch), 3) if threads else None,
        }
    return figures


def graph_macs(onnx_path: Path, image_size: int) -> int:
    from calibration.cost import node_macs

    return int(sum(node_macs(onnx_path, (3, image_size, image_size)).values()))
