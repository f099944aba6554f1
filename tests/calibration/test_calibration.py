"""The calibration package on a tiny non-VGG classifier: Q/DQ properties TensorRT needs, the range cache,
sensitivity ranking, and the TensorRT-EP table."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import calibration
from calibration.cost import node_macs
from calibration.quantize import QUANTIZED_OP_TYPES, node_names
from calibration.ranges import METHOD_OPTIONS


def _as_the_graph_says(path, batch):
    """The Q/DQ graph run op by op (no fusion into onnxruntime's integer kernels): what the quantization itself
    does to the outputs. The fused kernels' own rounding depends on the CPU: on an AVX2 machine without VNNI
    (2026-12-02, an AMD EPYC) the tiny model's largest error was 0.029 fused against 0.0033 op by op, so a
    tolerance on them would test the machine, not the ranges and the Q/DQ placement."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]).run(None, {"input": batch})[0]


def _ranges(tiny_onnx, batches, tmp_path, method="minmax"):
    cache = calibration.RangeCache(tmp_path / "cache")
    key = calibration.CalibrationKey.build("model-a", calibration.hash_batches(batches), method)
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
    assert props["quantized_graph_outputs"] == []
    q = _as_the_graph_says(out, tiny_batches[0])
    f = _as_the_graph_says(tiny_onnx, tiny_batches[0])
    assert np.abs(q - f).max() < 0.1 * np.abs(f).max() + 1e-3


def test_cache_is_reused_only_when_every_key_matches(tiny_onnx, tiny_batches, tmp_path):
    cache, key = _ranges(tiny_onnx, tiny_batches, tmp_path)
    assert cache.lookup(key) == (True, "model, images, method, options and onnxruntime match the cached ranges")
    build = calibration.CalibrationKey.build
    other_images = calibration.hash_batches([b + 1 for b in tiny_batches])
    reusable, why = cache.lookup(build("model-a", other_images, "minmax"))
    assert not reusable and "calibration images changed" in why
    reusable, why = cache.lookup(build("model-b", key.data_sha256, "minmax"))
    assert not reusable and "FP32 model changed" in why
    reusable, why = cache.lookup(build("model-a", key.data_sha256, "entropy"))
    assert not reusable and "method changed" in why
    reusable, why = cache.lookup(build("model-a", key.data_sha256, "minmax", options={"symmetric": False}))
    assert not reusable and "calibrator options changed" in why
    reusable, why = cache.lookup(build("model-a", key.data_sha256, "minmax", op_types=["Conv"]))
    assert not reusable and "calibrated op types changed" in why
    reusable, why = cache.lookup(dataclasses.replace(key, onnxruntime="0.0.1"))
    assert not reusable and "onnxruntime version changed" in why
    cache.key_path.unlink()
    assert cache.lookup(key) == (False, "no cached ranges")


def test_excluded_nodes_stay_float(tiny_onnx, tiny_batches, tmp_path):
    cache, _ = _ranges(tiny_onnx, tiny_batches, tmp_path)
    last = node_names(tiny_onnx)[-1]
    out = tmp_path / "partial.onnx"
    calibration.quantize_qdq(tiny_onnx, out, ranges_path=cache.ranges_path, method="minmax", exclude_nodes=[last])
    props = calibration.qdq_properties(out)
    assert props["float_nodes"] == [last] and last not in props["quantized_nodes"]
    # ... and it reads a float input: no activation Q/DQ on its producer's output either (the ReLU/pool
    # chain back to the conv before it carries no rounding).
    graph = onnx.load(str(out)).graph
    producers = {name: node for node in graph.node for name in node.output}
    tensor = next(n for n in graph.node if n.name == last).input[0]
    chain = []
    while tensor in producers:
        chain.append(producers[tensor].op_type)
        if chain[-1] in QUANTIZED_OP_TYPES:
            break
        tensor = producers[tensor].input[0]
    assert chain[-1] == "Conv" and "DequantizeLinear" not in chain and "QuantizeLinear" not in chain


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


@pytest.mark.parametrize("placement", ["cpu", "tensorrt"])
def test_graph_output_is_never_quantized(tiny_onnx, tiny_batches, tmp_path, placement):
    """onnxruntime's quantizer puts a Q/DQ pair on the logits; it is removed, and TensorRT's placement has
    Q/DQ only in front of the quantized ops."""
    cache, _ = _ranges(tiny_onnx, tiny_batches, tmp_path)
    out = tmp_path / "q.onnx"
    calibration.quantize_qdq(tiny_onnx, out, ranges_path=cache.ranges_path, method="minmax", placement=placement)
    graph = onnx.load(str(out)).graph
    producers = {name: node for node in graph.node for name in node.output}
    assert producers["logits"].op_type not in ("DequantizeLinear", "QuantizeLinear")
    assert calibration.qdq_properties(out)["quantized_graph_outputs"] == []
    quantized_op_outputs = [n for n in graph.node if n.op_type == "QuantizeLinear"
                            and n.input[0] in producers and producers[n.input[0]].op_type in QUANTIZED_OP_TYPES]
    assert bool(quantized_op_outputs) == (placement == "cpu")
    logits = _as_the_graph_says(out, tiny_batches[0])
    # A float output takes any value; through an int8 scale it would sit on a grid of 255 levels.
    reference = _as_the_graph_says(tiny_onnx, tiny_batches[0])
    assert np.unique(logits).size == logits.size and np.abs(logits - reference).max() < 0.1 * np.abs(reference).max()


@pytest.fixture(scope="module")
def long_tailed(tmp_path_factory):
    """A one-node model and 400k standard normal values with two outliers at +-50."""
    weight = numpy_helper.from_array(np.ones((1, 1, 1, 1), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "w"], ["out"], name="conv")], "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 1, "h", "w"])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["n", 1, "h", "w"])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    path = tmp_path_factory.mktemp("long_tailed") / "one.onnx"
    onnx.save(model, str(path))
    values = np.random.default_rng(0).standard_normal(400_000).astype(np.float32)
    values[:2] = [50.0, -50.0]
    return path, values


def _threshold(path, values, method, options=None) -> float:
    ranges = calibration.collect_ranges(path, [values.reshape(1, 1, 400, 1000)], input_name="input", method=method,
                                        options=options)
    low, high = ranges.data["input"].range_value
    return float(max(abs(np.asarray(low).item()), abs(np.asarray(high).item())))


def test_thresholds_on_a_long_tailed_activation(long_tailed):
    path, values = long_tailed
    minmax = _threshold(path, values, "minmax")
    assert minmax == 50.0
    # percentile: where |x| reaches the 99.999th percentile, within one of 2048 histogram bins.
    percentile = _threshold(path, values, "percentile")
    bin_width = 50.0 / METHOD_OPTIONS["percentile"]["num_bins"]
    assert abs(percentile - np.percentile(np.abs(values), 99.999)) <= bin_width
    # entropy: the KL-optimal clip, well inside the outliers yet outside the bulk of the normal (|x| < 4).
    entropy = _threshold(path, values, "entropy")
    assert 4.0 < entropy < 0.5 * minmax and entropy != pytest.approx(percentile, abs=0.5)
    # With onnxruntime's default histogram the search has one candidate: the maximum, i.e. min-max.
    assert _threshold(path, values, "entropy", options={"symmetric": True}) == minmax


def test_node_macs_from_the_graph(tiny_onnx):
    macs = node_macs(tiny_onnx, (3, 16, 16))
    conv1, conv2, linear = node_names(tiny_onnx)
    assert macs == {conv1: 16 * 16 * 8 * 3 * 9, conv2: 8 * 8 * 16 * 8 * 9, linear: 16 * 4}
    assert node_macs(tiny_onnx, (3, 32, 32))[conv1] == 4 * macs[conv1]
