"""The three ONNX artifacts of a small-image run, their parity figures, INT8 properties, the manifest,
calibration reuse, the accuracy-budget fallback, and failures that leave nothing half-written."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest

import calibration
from vgg_deploy.artifacts.manifest import PRECISION
from vgg_deploy.errors import ExportError, RunFolderError, UnavailableError
from vgg_deploy.export.int8 import DecisionImages, Int8Request, Int8Source, build_int8
from vgg_deploy.export.pipeline import ExportOptions, export, resolve_formats
from vgg_deploy.fileio import sha256_file
from vgg_deploy.parity import compare


def _manifest(run):
    return json.loads((run / "export" / "manifest.json").read_text())


def test_three_onnx_artifacts_with_hashes(exported_run):
    manifest = _manifest(exported_run)
    by_name = {a["name"]: a for a in manifest["artifacts"]}
    assert list(by_name) == ["onnx", "onnx-fp16", "onnx-int8"]
    for entry in manifest["artifacts"]:
        path = exported_run / "export" / entry["path"]
        assert entry["sha256"] == sha256_file(path) and entry["bytes"] == path.stat().st_size
        assert entry["format"] == "onnx" and entry["precision"] == PRECISION[entry["name"]]
    assert by_name["onnx-fp16"]["bytes"] < 0.6 * by_name["onnx"]["bytes"]
    assert by_name["onnx-int8"]["bytes"] < 0.3 * by_name["onnx"]["bytes"]
    assert manifest["source_checkpoint_sha256"] == sha256_file(exported_run / "model.safetensors")


def test_fp32_onnx_is_checked_dynamic_and_labelled(exported_run):
    path = exported_run / "export" / "model.onnx"
    model = onnx.load(str(path), load_external_data=False)
    onnx.checker.check_model(str(path))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert not dims[0].dim_value and [d.dim_value for d in dims[1:]] == [3, 64, 64]
    meta = {p.key: p.value for p in model.metadata_props}
    info = json.loads((exported_run / "model.json").read_text())
    assert json.loads(meta["class_names"]) == info["class_names"]
    assert json.loads(meta["preprocessing"])["image_size"] == 64


def test_parity_figures_are_recorded(exported_run):
    by_name = {a["name"]: a for a in _manifest(exported_run)["artifacts"]}
    fp32, fp16 = by_name["onnx"]["parity"], by_name["onnx-fp16"]["parity"]
    assert fp32["images"] == 72 and fp32["top1_agreement"] == 1.0 and fp32["max_abs_logit_diff"] < 1e-3
    assert fp16["top1_agreement"] >= 0.98 and fp16["non_finite"] == 0
    assert by_name["onnx-fp16"]["fp16"]["kept_fp32_nodes"] == []
    model = onnx.load(str(exported_run / "export" / "model.fp16.onnx"), load_external_data=False)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer)


def test_int8_is_explicit_symmetric_per_channel_qdq(exported_run):
    entry = {a["name"]: a for a in _manifest(exported_run)["artifacts"]}["onnx-int8"]
    qdq = entry["qdq"]
    assert qdq["int8_only"] and qdq["zero_points_all_zero"]
    assert qdq["per_channel_weight_dequantizers"] == 16  # 13 Conv + 3 Gemm
    assert len(qdq["quantized_nodes"]) == 16 and qdq["float_nodes"] == []
    assert qdq["quantized_graph_outputs"] == [] and entry["placement"]["target"] == "cpu"
    calib = entry["calibration"]
    assert calib["images"] == 48 and calib["source"].startswith("train")
    assert calib["method"] == "minmax" and calib["options"] == {"symmetric": True}
    assert (exported_run / "export" / calib["ranges"]).is_file()


def test_int8_report_names_every_layer_the_vgg_way(exported_run):
    entry = {a["name"]: a for a in _manifest(exported_run)["artifacts"]}["onnx-int8"]
    layers = entry["layers"]
    assert [layer["layer"] for layer in layers] == [
        "conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv3_3", "conv4_1", "conv4_2", "conv4_3",
        "conv5_1", "conv5_2", "conv5_3", "fc6", "fc7", "fc8"]
    assert all(layer["precision"] == "int8" and "sqnr_out_db" in layer for layer in layers)
    assert layers[0]["macs"] == 64 * 64 * 64 * 3 * 9 and layers[-1]["macs"] == 512 * 6
    assert entry["kept_out_of_int8"] == [] and entry["fallback_steps"] == []


def test_int8_accuracy_is_reported_on_test_and_decided_on_val(exported_run):
    """The figure in the manifest is the INT8 file's own top-1 on the test split, recomputed here."""
    from vgg_deploy.batches import load_batches, run_batches
    from vgg_deploy.runfolder import open_run
    from vgg_deploy.runners import OnnxRuntimeRunner

    entry = {a["name"]: a for a in _manifest(exported_run)["artifacts"]}["onnx-int8"]
    acc, decision = entry["accuracy"], entry["decision"]
    assert acc["split"] == "test"
    # 72 val images are fewer than the decisions need: topped up with training images calibration skipped.
    assert (decision["val"], decision["train_not_calibrated"], decision["images"]) == (72, 128, 200)
    assert decision["disagreement_points"] == pytest.approx(100 * (1 - decision["top1_agreement"]))
    run = open_run(exported_run)
    split = run.split()
    batches, labels = load_batches(split.absolute(split.test), run.preprocessing, batch_size=16)
    with OnnxRuntimeRunner(exported_run / "export" / entry["path"]) as runner:
        top1 = float((run_batches(runner, batches).argmax(1) == labels).mean())
    assert acc["images"] == len(labels) == 72
    assert acc["top1"] == pytest.approx(top1)
    assert acc["drop_points"] == pytest.approx(100 * (acc["reference_top1"] - acc["top1"]))


def test_calibration_images_come_from_train_only(exported_run):
    """The hash export recorded for its calibration batches is that of a stratified train sample: had it
    calibrated on any other image (val, test) or preprocessed them otherwise, the hash would differ."""
    from calibration import hash_batches
    from vgg_deploy.batches import load_batches, stratified_sample
    from vgg_deploy.runfolder import open_run

    run = open_run(exported_run)
    split = run.split()
    recorded = {a["name"]: a for a in _manifest(exported_run)["artifacts"]}["onnx-int8"]["calibration"]["key"]
    picked = stratified_sample(split.absolute(split.train), 48, seed=0)
    assert hash_batches(load_batches(picked, run.preprocessing, batch_size=16)[0]) == recorded["data_sha256"]
    held_out = {p for p, _ in split.absolute(split.val) + split.absolute(split.test)}
    assert not {p for p, _ in picked} & held_out
    assert len({label for _, label in picked}) == 6


def test_int8_decision_images_are_never_test_nor_calibration_images(exported_run):
    from vgg_deploy.batches import stratified_sample
    from vgg_deploy.export.context import decision_items_for
    from vgg_deploy.runfolder import open_run

    split = open_run(exported_run).split()
    calib = stratified_sample(split.absolute(split.train), 48, seed=0)
    items, counts = decision_items_for(split, ExportOptions(calib_images=48, check_images=72), calib)
    paths = {p for p, _ in items}
    assert len(paths) == counts["images"] == 200
    assert not paths & {p for p, _ in split.absolute(split.test)}
    assert not paths & {p for p, _ in calib}


@pytest.fixture
def run_copy(exported_run, tmp_path):
    """A copy sharing the big files by hard link, for tests that export again."""
    from vgg_deploy.fileio import copy_run_sharing_files

    return copy_run_sharing_files(exported_run, tmp_path / "run")


def test_reexport_reuses_the_onnx_and_the_ranges_and_recalibrates_when_images_change(run_copy, capsys):
    # --equalize off: the reuse is the range cache's, whichever FP32 model it is keyed by.
    export(run_copy, ExportOptions(formats=["onnx-int8"], calib_images=48, check_images=72, equalize="off"))
    out = capsys.readouterr().out
    assert "reusing model.onnx" in out and "reusing minmax calibration ranges" in out
    # Unlink first: the copy shares the file with the session run through a hard link.
    (run_copy / "export" / "model.int8.onnx").unlink()
    export(run_copy, ExportOptions(formats=["onnx-int8"], calib_images=24, check_images=72, equalize="off"))
    assert "calibrating (minmax, 24 training images): the calibration images changed" in capsys.readouterr().out
    assert {a["name"] for a in _manifest(run_copy)["artifacts"]} == {"onnx", "onnx-fp16", "onnx-int8"}


def test_equalization_is_decided_on_the_decision_images_and_recorded(exported_run):
    """The default (--equalize auto): INT8 was built from the plain and the equalized FP32 model, and the one
    that disagreed less with FP32 on the decision images was kept (plain on a tie); only a kept equalized
    file stays on disk."""
    entry = next(a for a in _manifest(exported_run)["artifacts"] if a["name"] == "onnx-int8")
    eq = entry["equalization"]
    assert eq["asked"] == "auto" and set(eq["choice"]) == {"plain", "equalized"}
    assert eq["fp32_output_drift"] < 1e-4 and len(eq["pairs"]) >= 12  # every conv-conv pair, and fc6-fc7-fc8
    assert eq["applied"] == (eq["choice"]["equalized"] < eq["choice"]["plain"])
    kept = "equalized" if eq["applied"] else "plain"
    assert entry["decision"]["disagreement_points"] <= eq["choice"][kept] + 1e-9  # the fallback starts from it
    assert kept in eq["why"]
    if eq["applied"]:
        assert sha256_file(exported_run / "export" / eq["file"]) == eq["sha256"]
    else:
        assert "file" not in eq and not (exported_run / "export" / "calibration" / "equalized.onnx").exists()


@pytest.mark.parametrize("asked", ["on", "off"])
def test_equalize_on_and_off_build_from_the_model_asked_for(tiny_onnx, tiny_batches, tmp_path, asked):
    import onnxruntime as ort

    def evaluate(path, reference):
        session = ort.InferenceSession(str(path))
        return np.concatenate([session.run(None, {"input": b})[0] for b in tiny_batches])

    inputs = _budget_inputs(tiny_onnx, tiny_batches, tmp_path, evaluate, [])
    info = build_int8(out=tmp_path / "q.onnx", **inputs, request=Int8Request(equalize=asked))
    eq = info["equalization"]
    assert eq["applied"] == (asked == "on") and eq["choice"] == {}
    assert (tmp_path / "calibration" / "equalized.onnx").is_file() == (asked == "on")
    if asked == "on":
        assert eq["pairs"] and info["calibration"]["key"]["model_sha256"].endswith("+" + eq["method"])
    else:
        assert info["calibration"]["key"]["model_sha256"] == sha256_file(tiny_onnx)


def _budget_inputs(tiny_onnx, tiny_batches, tmp_path, evaluate, calls):
    import onnxruntime as ort

    reference = np.concatenate([ort.InferenceSession(str(tiny_onnx)).run(None, {"input": b})[0] for b in tiny_batches])
    labels = reference.argmax(axis=1)

    def decide(path):
        calls.append("decision")
        return evaluate(path, reference)

    def report(path):
        calls.append("report")
        parity = compare(reference, reference, labels)
        return {**parity.to_dict(), "drop_points": 0.0}

    source = Int8Source(path=tiny_onnx, sha256=sha256_file(tiny_onnx), calib_batches=tiny_batches, input_name="input",
                        image_shape=(3, 16, 16))
    decisions = DecisionImages(evaluate=decide, reference_logits=reference, labels=labels,
                               described={"images": len(labels)})
    return dict(source=source, decisions=decisions, cache_dir=tmp_path / "calibration", report=report)


def test_accuracy_budget_keeps_the_most_sensitive_layers_in_fp32_and_reports_on_test_last(
        tiny_onnx, tiny_batches, tmp_path):
    """The fallback on a tiny model, with decision logits that agree with FP32 only once its most sensitive
    layer is float again. The test figures are computed once, after every decision."""
    ranking, calls = [], []

    def evaluate(path, reference):
        if not ranking:
            ranking.extend(calibration.rank_sensitive_nodes(tiny_onnx, path, tiny_batches[:2], input_name="input"))
        floats = calibration.qdq_properties(path)["float_nodes"]
        return reference if ranking[0][0] in floats else np.roll(reference, 1, axis=1)

    inputs = _budget_inputs(tiny_onnx, tiny_batches, tmp_path, evaluate, calls)
    info = build_int8(out=tmp_path / "q.onnx", **inputs, request=Int8Request(max_accuracy_drop=1.0))
    assert [k["node"] for k in info["kept_out_of_int8"]] == [ranking[0][0]]
    assert info["kept_out_of_int8"][0]["layer"] in ("conv1_1", "conv1_2", "fc6") and info["kept_out_of_int8"][0]["why"]
    assert info["decision"]["disagreement_points"] <= 1.0
    assert info["qdq"]["float_nodes"] == [ranking[0][0]]
    assert calls.count("report") == 1 and calls[-1] == "report" and calls.count("decision") > 2

    with pytest.raises(ExportError, match="beyond --max-accuracy-drop"):
        build_int8(out=tmp_path / "q2.onnx", **_budget_inputs(
            tiny_onnx, tiny_batches, tmp_path, lambda p, ref: np.roll(ref, 1, axis=1), calls),
            request=Int8Request(max_accuracy_drop=1.0))
    assert not (tmp_path / "q2.onnx").exists()


def test_auto_method_picks_the_lowest_disagreement_on_decision_images(tiny_onnx, tiny_batches, tmp_path):
    import onnxruntime as ort

    calls = []

    def evaluate(path, reference):
        session = ort.InferenceSession(str(path))
        return np.concatenate([session.run(None, {"input": b})[0] for b in tiny_batches])

    inputs = _budget_inputs(tiny_onnx, tiny_batches, tmp_path, evaluate, calls)
    # --equalize off: the method choice is what is tested (auto would run each method on both variants).
    info = build_int8(out=tmp_path / "q.onnx", **inputs, request=Int8Request(method="auto", equalize="off"))
    choice = info["calibration"]["method_choice"]
    scores = {m: choice[m] for m in ("entropy", "minmax", "percentile")}
    assert info["calibration"]["method"] == min(scores, key=scores.get)
    assert scores[info["calibration"]["method"]] == pytest.approx(info["decision"]["disagreement_points"])
    assert calls.count("report") == 1 and calls[-1] == "report"


def test_tensorrt_formats_fail_fast_without_tensorrt():
    with pytest.raises(UnavailableError, match="cannot build trt-int8"):
        resolve_formats(["trt-int8"])
    formats, skipped = resolve_formats(["all"])
    assert formats == ["onnx", "onnx-fp16", "onnx-int8"]
    assert set(skipped) == {"trt-fp16", "trt-int8"}
    assert resolve_formats(["onnx-int8"])[0] == ["onnx", "onnx-int8"]


def test_truncated_checkpoint_is_refused_and_nothing_is_written(exported_run, tmp_path):
    run = tmp_path / "broken"
    run.mkdir()
    for name in ("model.json", "split.json"):
        shutil.copy(exported_run / name, run / name)
    data = (exported_run / "model.safetensors").read_bytes()[:10_000]
    (run / "model.safetensors").write_bytes(data)
    with pytest.raises(RunFolderError, match="unreadable or truncated"):
        export(run, ExportOptions())
    assert not (run / "export" / "manifest.json").exists()


def test_model_json_that_does_not_match_the_weights(exported_run, tmp_path):
    run = tmp_path / "mismatch"
    run.mkdir()
    info = json.loads((exported_run / "model.json").read_text())
    info["class_names"] = info["class_names"][:3]
    (run / "model.json").write_text(json.dumps(info))
    (run / "model.safetensors").hardlink_to(exported_run / "model.safetensors")
    with pytest.raises(RunFolderError, match="6-class head but model.json lists 3"):
        export(run, ExportOptions())


def test_unwritable_output_folder(exported_run, tmp_path):
    run = tmp_path / "readonly"
    run.mkdir()
    for name in ("model.json", "split.json"):
        shutil.copy(exported_run / name, run / name)
    (run / "export").write_text("a file where the export folder should be")
    with pytest.raises(Exception, match="cannot write to output folder"):
        export(run, ExportOptions())
