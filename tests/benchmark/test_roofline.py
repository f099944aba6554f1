"""Roofline figures: multiply-adds from the graph, peaks measured through the runtimes, % of peak per row."""

from __future__ import annotations

from vgg_deploy.benchmark.roofline import graph_macs, measure_peaks, row_figures


def _vgg16_macs(size: int, classes: int, hidden: int) -> int:
    widths = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
    macs, channels = 0, 3
    for width in widths:
        if width == "M":
            size //= 2
        else:
            macs += size * size * width * channels * 9
            channels = width
    return macs + 512 * 7 * 7 * hidden + hidden * hidden + hidden * classes


def test_multiply_adds_per_image_come_from_the_graph(exported_run):
    # The pooled head as exported: fc6 a 25088->512 Gemm (the average), fc7 512->512, fc8 512->6.
    assert graph_macs(exported_run / "export" / "model.onnx", 64) == _vgg16_macs(64, 6, hidden=512)
    assert graph_macs(exported_run / "export" / "model.onnx", 224) == _vgg16_macs(224, 6, hidden=512)  # 15.47 G + fc


def test_row_figures():
    peaks = {"fp32": {"gmacs": 100.0}, "int8": {"gmacs": 400.0}}
    result = {"precision": "int8", "latency_ms": {"1": {"p50": 50.0}, "8": {"p50": 200.0}}}
    figures = row_figures(result, macs_per_image=10_000_000_000, peaks=peaks, threads=2)
    assert figures["1"] == {"gmacs": 200.0, "pct_of_peak": 50.0, "peak": "int8", "core_ms_per_image": 100.0}
    assert figures["8"]["gmacs"] == 400.0 and figures["8"]["pct_of_peak"] == 100.0
    assert figures["8"]["core_ms_per_image"] == 50.0
    fp16 = row_figures({**result, "precision": "fp16"}, macs_per_image=10**10, peaks=peaks, threads=None)
    assert fp16["1"]["peak"] == "fp32" and fp16["1"]["pct_of_peak"] == 200.0 and fp16["1"]["core_ms_per_image"] is None
    unknown = row_figures({**result, "precision": "bf16"}, macs_per_image=10**10, peaks=peaks, threads=2)
    assert unknown["1"]["pct_of_peak"] is None and unknown["1"]["peak"] is None


def test_peaks_are_measured_through_the_runtimes():
    peaks = measure_peaks(device="cpu", threads=1, seconds=0.05, size=128)
    assert set(peaks) == {"fp32", "int8", "bf16"}
    assert all(entry["gmacs"] > 0 for entry in peaks.values())
    assert "int8 Q/DQ" in peaks["int8"]["through"] and "onnxruntime" in peaks["fp32"]["through"]
