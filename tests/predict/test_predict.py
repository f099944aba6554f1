"""`predict`: any artifact, the run's own preprocessing, bad files named and skipped, the default artifact
chosen from what export checked and what the benchmark measured."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from vgg_deploy.artifacts.manifest import artifact_entry
from vgg_deploy.cli import app
from vgg_deploy.cli.predict import SKIPPED_INPUTS_EXIT
from vgg_deploy.errors import RunFolderError, VggDeployError
from vgg_deploy.predict import PredictOptions, choose_artifact, predict
from vgg_deploy.runfolder import open_run

runner = CliRunner()


def test_top1_on_the_test_split_matches_the_benchmark(benchmark_report, exported_run):
    split = open_run(exported_run).split()
    items = split.absolute(split.test)
    result = predict(exported_run, [path for path, _ in items], PredictOptions(artifact="onnx-int8", top_k=1))
    assert not result.bad and [row["path"] for row in result.rows] == [str(path) for path, _ in items]
    top1 = float(np.mean([row["top"][0]["index"] == label for row, (_, label) in zip(result.rows, items)]))
    benchmarked = next(r for r in benchmark_report["results"]
                       if r["artifact"] == "onnx-int8" and r["backend"] == "onnxruntime")
    assert top1 == benchmarked["accuracy"]["top1"]


def test_a_folder_with_a_corrupt_file_classifies_the_rest_and_names_it(exported_run, sample_data, tmp_path):
    folder = tmp_path / "images"
    (folder / "nested").mkdir(parents=True)
    good = sorted((sample_data / "circle").iterdir())[:2] + sorted((sample_data / "square").iterdir())[:1]
    for i, path in enumerate(good):
        shutil.copy(path, (folder if i else folder / "nested") / path.name)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (folder / "notes.txt").write_text("not an image, and not picked up from a folder")
    out = tmp_path / "predictions.json"
    result = runner.invoke(app, ["predict", str(exported_run), str(folder), str(tmp_path / "missing.png"),
                                 "--artifact", "onnx", "--top-k", "2", "--format", "json", "--out", str(out)])
    assert result.exit_code == SKIPPED_INPUTS_EXIT, result.output
    assert "broken.png" in result.stderr and "missing.png" in result.stderr and "Traceback" not in result.stderr
    report = json.loads(out.read_text())
    assert sorted(s["path"].rsplit("/", 1)[-1] for s in report["skipped"]) == ["broken.png", "missing.png"]
    assert sorted(p["path"].rsplit("/", 1)[-1] for p in report["predictions"]) == sorted(p.name for p in good)
    for row in report["predictions"]:
        probabilities = [t["probability"] for t in row["top"]]
        assert len(probabilities) == 2 and probabilities == sorted(probabilities, reverse=True)
    # PyTorch on the same images agrees with the FP32 ONNX file, through the same preprocessing.
    torch_rows = predict(exported_run, [folder], PredictOptions(artifact="pytorch", top_k=2)).rows
    assert [r["top"][0]["label"] for r in torch_rows] == [r["top"][0]["label"] for r in report["predictions"]]
    np.testing.assert_allclose([r["top"][0]["probability"] for r in torch_rows],
                               [r["top"][0]["probability"] for r in report["predictions"]], atol=1e-4)


def test_csv_and_table_to_stdout(exported_run, sample_data):
    image = sorted((sample_data / "circle").iterdir())[0]
    csv_out = runner.invoke(app, ["predict", str(exported_run), str(image), "--artifact", "onnx", "--format", "csv",
                                  "--top-k", "3"])
    assert csv_out.exit_code == 0, csv_out.output
    lines = csv_out.stdout.strip().splitlines()
    assert lines[0] == "path,rank,label,index,probability" and len(lines) == 4
    table = runner.invoke(app, ["predict", str(exported_run), str(image), "--artifact", "onnx"])
    assert table.exit_code == 0 and image.name in table.stdout and "artifact: onnx" in table.stderr


def _fake_run(tmp_path, int8_decision: float, max_drop: float | None):
    """A manifest with small stand-in files: the choice reads only the manifest, the hashes and a report."""
    export = tmp_path / "export"
    export.mkdir(parents=True)
    for filename in ("model.onnx", "model.fp16.onnx", "model.int8.onnx"):
        (export / filename).write_bytes(filename.encode())
    entries = [artifact_entry(export, "onnx", parity={}), artifact_entry(export, "onnx-fp16", parity={}),
               artifact_entry(export, "onnx-int8", decision={"disagreement_points": int8_decision},
                              accuracy={"max_accuracy_drop": max_drop})]
    return {"artifacts": entries}


def test_default_is_int8_only_when_it_passed_at_export(tmp_path):
    passed = choose_artifact(tmp_path / "a", _fake_run(tmp_path / "a", 0.5, None), artifact=None, backend=None)
    assert passed.spec.name == "onnx-int8" and passed.spec.kind == "onnxruntime" and "no benchmark report" in passed.why
    refused = choose_artifact(tmp_path / "b", _fake_run(tmp_path / "b", 2.5, 2.0), artifact=None, backend=None)
    assert refused.spec.name == "onnx" and "onnx-int8 (disagrees with FP32 on 2.50 points" in refused.why


def test_default_follows_the_benchmark_report_when_there_is_one(tmp_path):
    manifest = _fake_run(tmp_path, 0.0, None)
    rows = [{"artifact": "onnx-int8", "backend": "onnxruntime", "status": "ok", "latency_ms": {"1": {"p50": 9.0}}},
            {"artifact": "onnx", "backend": "onnxruntime", "status": "ok", "latency_ms": {"1": {"p50": 5.0}}},
            {"artifact": "pytorch", "backend": "torch", "status": "ok", "latency_ms": {"1": {"p50": 20.0}}},
            # A row timed on a GPU says nothing about the CPU run predict will make.
            {"artifact": "onnx-int8", "backend": "onnxruntime", "provider": "cuda", "status": "ok",
             "latency_ms": {"1": {"p50": 1.0}}}]
    (tmp_path / "benchmark").mkdir()
    (tmp_path / "benchmark" / "report.json").write_text(json.dumps({"results": rows}))
    choice = choose_artifact(tmp_path, manifest, artifact=None, backend=None)
    assert choice.spec.name == "onnx" and "5.00 ms/image" in choice.why


def _report(tmp_path, rows):
    (tmp_path / "benchmark").mkdir(exist_ok=True)
    (tmp_path / "benchmark" / "report.json").write_text(json.dumps({"results": rows}))


def _row(artifact, backend, ms, agreement=1.0):
    return {"artifact": artifact, "backend": backend, "status": "ok", "latency_ms": {"1": {"p50": ms}},
            "accuracy": {"agreement": agreement}}


def test_default_takes_the_fastest_measured_runtime_that_reproduced_the_checked_file(tmp_path, monkeypatch):
    from vgg_deploy.artifacts import choice as choice_module

    monkeypatch.setattr(choice_module, "installed_runtimes", lambda runtimes: tuple(runtimes))
    manifest = _fake_run(tmp_path, 0.0, None)
    _report(tmp_path, [_row("onnx-int8", "onnxruntime", 9.0, 0.99), _row("onnx-int8", "openvino", 4.0, 0.985),
                       _row("onnx", "onnxruntime", 12.0), _row("pytorch", "torch", 30.0)])
    chosen = choose_artifact(tmp_path, manifest, artifact=None, backend=None)
    assert (chosen.spec.name, chosen.spec.kind) == ("onnx-int8", "openvino")
    assert "4.00 ms/image" in chosen.why and "next onnx-int8 on onnxruntime, 2.25x slower" in chosen.why
    # OpenVINO computing the file differently (3 points less agreement than onnxruntime's) is not taken.
    _report(tmp_path, [_row("onnx-int8", "onnxruntime", 9.0, 0.99), _row("onnx-int8", "openvino", 4.0, 0.96)])
    refused = choose_artifact(tmp_path, manifest, artifact=None, backend=None)
    assert (refused.spec.name, refused.spec.kind) == ("onnx-int8", "onnxruntime")
    assert "onnx-int8 on openvino (agrees with PyTorch 3.00 points less than on onnxruntime)" in refused.why
    # Serve's runtimes leave PyTorch out; a runtime that is not installed is never considered.
    _report(tmp_path, [_row("onnx", "onnxruntime", 9.0), _row("pytorch", "torch", 1.0)])
    assert choose_artifact(tmp_path, manifest, artifact=None, backend=None,
                           runtimes=("onnxruntime", "openvino")).spec.name == "onnx"
    # Asked for by name, OpenVINO is taken without a benchmark row beside onnxruntime (as before the choice).
    asked = choose_artifact(tmp_path, manifest, artifact=None, backend="openvino")
    assert (asked.spec.name, asked.spec.kind) == ("onnx-int8", "openvino")
    monkeypatch.setattr(choice_module, "installed_runtimes", lambda runtimes: ("torch",))
    assert choose_artifact(tmp_path, manifest, artifact=None, backend=None).spec.kind == "torch"


def test_artifact_and_backend_are_checked(tmp_path):
    manifest = _fake_run(tmp_path, 0.0, None)
    with pytest.raises(RunFolderError, match="--artifact trt-int8 is not in"):
        choose_artifact(tmp_path, manifest, artifact="trt-int8", backend=None)
    with pytest.raises(VggDeployError, match="runs on onnxruntime, openvino, not on torch"):
        choose_artifact(tmp_path, manifest, artifact="onnx", backend="torch")
    (tmp_path / "export" / "model.int8.onnx").write_bytes(b"changed after export")
    with pytest.raises(RunFolderError, match="differs from the manifest"):
        choose_artifact(tmp_path, manifest, artifact="onnx-int8", backend=None)


def test_engines_pass_only_on_their_export_check():
    from vgg_deploy.artifacts.choice import passed_at_export

    engine = {"format": "tensorrt", "precision": "fp16"}
    assert not passed_at_export(engine)[0]
    assert passed_at_export({**engine, "parity": {"top1_agreement": 1.0}})[0]
    int8 = {"format": "tensorrt", "precision": "int8", "parity": {"drop_points": 0.4, "max_accuracy_drop": None}}
    assert passed_at_export(int8) == (False, "test drop 0.40 points recorded, but no --max-accuracy-drop gated it")
    assert passed_at_export({**int8, "parity": {"drop_points": 0.4, "max_accuracy_drop": 1.0}})[0]
