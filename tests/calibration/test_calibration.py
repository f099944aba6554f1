"""The calibration package on a tiny non-VGG classifier: Q/DQ properties TensorRT needs, the range cache,
sensitivity ranking, and the TensorRT-EP table."""

from __future__ import annotations

import json
import numpy as np
import onnxruntime as ort
import pytest

import calibration
from calibration.quantize import node_names


def _ranges(tiny_onnx, batches, tmp_path, method="minmax"):
    cache = calibration.RangeCache(tmp_path / "cache")
    key = calibration.CalibrationKey("model-a", calibration.hash_batches(batches), method)
    cache.store(key, calibration.collect_ranges(tiny_onnx, batches, input_name="input", method=method))
    return cache, key


def test_package_knows_nothing_of_vgg():
    from pathlib import Path

    sources = list(Path(calibration.__file__).parent.glob("*.py"))
    imports = [line for p in sources for line in p.read_text().splitlines()
               if line.lstrip().startswith(("import ", "from ")) and "vgg" in line.lower()]
    assert sources and not imports


@pytest.mark.parametrize("method", ["entropy", "minmax", "percentile"])
def test_qdq_model_has_what_tensorrt_needs(tiny_onnx, tiny_batches, tmp_path, method):
    cache, _ = _ranges(tiny_onnx, tiny_batches, tmp_path, method)
    out = tmp_path / "q.onnx"
    calibration.quantize_qdq(tiny_onnx, out, ranges_path=cache.ranges_path, method=method)
    props = calibration.qdq_properties(out)
    assert props["int8_only"] and props["zero_points_all_zero"]
    assert props["per_channel_weight_dequantizers"] == 3  # two Conv, one Gemm
    assert props["per_tensor_activation_quantizers"] >= 3
    assert sorted(props["quantized_nodes"]) == sorted(node_names(tiny_onnx))
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    reference = ort.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"])
    q = session.run(None, {"input": tiny_batches[0]})[0]
    f = reference.run(None, {"input": tiny_batches[0]})[0]
    assert np.abs(q - f).max() < 0.1 * np.abs(f).max() + 1e-3


def test_cache_is_reused_only_when_every_key_matches(tiny_onnx, tiny_batches, tmp_path):
    cache, key = _ranges(tiny_onnx, tiny_batches, tmp_path)
    assert cache.lookup(key) == (True, "model, images and method match the cached ranges")
    other_images = calibration.hash_batches([b + 1 for b in tiny_batches])
    reusable, why = cache.lookup(calibration.CalibrationKey("model-a", other_images, "minmax"))
    assert not reusable and "calibration images changed" in why
    reusable, why = cache.lookup(calibration.CalibrationKey("model-b", key.data_sha256, "minmax"))
    assert not reusable and "FP32 model changed" in why
    reusable, why = cache.lookup(calibration.CalibrationKey("model-a", key.data_sha256, "entropy"))
    assert not reusable and "method changed" in why
    cache.key_path.unlink()
    assert cache.lookup(key) == (False, "no cached ranges")


def test_excluded_nodes_stay_float(tiny_onnx, tiny_batches, tmp_path):
    cache, _ = _ranges(tiny_onnx, tiny_batches, tmp_path)
    last = node_names(tiny_onnx)[-1]
    out = tmp_path / "partial.onnx"
    calibration.quantize_qdq(tiny_onnx, out, ranges_path=cache.ranges_path, method="minmax", exclude_nodes=[last])
    props = calibration.qdq_properties(out)
    assert props["float_nodes"] == [last] and last not in props["quantized_nodes"]


def test_sensitivity_ranks_every_quantized_node(tiny_onnx, tiny_batches, tmp_path):
    cache, _ = _ranges(tiny_onnx, tiny_batches, tmp_path)
    out = tmp_path / "q.onnx"
    calibration.quantize_qdq(tiny_onnx, out, ranges_path=cache.ranges_path, method="minmax")
    ranking = calibration.rank_sensitive_nodes(tiny_onnx, out, tiny_batches[:2], input_name="input")
    assert sorted(name for name, _ in ranking) == sorted(node_names(tiny_onnx))
    drops = [db for _, db in ranking]
    assert drops == sorted(drops, reverse=True)


def test_tensorrt_ep_table_is_written(tiny_onnx, tiny_batches, tmp_path):
    cache, _ = _ranges(tiny_onnx, tiny_batches, tmp_path)
    files = calibration.write_tensorrt_table(cache.load(), tmp_path / "trt")
    assert {p.name for p in files} >= {"calibration.flatbuffers", "calibration.json"}
    table = json.loads((tmp_path / "trt" / "calibration.json").read_text())
    assert "input" in table


def test_unknown_method_and_empty_batches_are_refused(tiny_onnx, tiny_batches):
    with pytest.raises(ValueError, match="unknown calibration method"):
        calibration.collect_ranges(tiny_onnx, tiny_batches, input_name="input", method="magic")
    with pytest.raises(ValueError, match="no calibration batches"):
        calibration.collect_ranges(tiny_onnx, [], input_name="input", method="minmax")
