from __future__ import annotations

import json
import os
import re
import shutil

import pytest
from typer.testing import CliRunner

from vgg_deploy.benchmark.pipeline import BenchmarkOptions, _gate, benchmark
from vgg_deploy.cli import app
from vgg_deploy.errors import AccuracyGateError, ArtifactFailedError
from vgg_deploy.timing.stats import TimingPolicy

QUICK = TimingPolicy(warmup_iterations=1, warmup_seconds=0.0, min_iterations=1, max_iterations=2, time_budget_s=0.0)


def test_report_contract(benchmark_report, exported_run):
    on_disk = json.loads((exported_run / "benchmark" / "report.json").read_text())
    assert on_disk["baseline"] == "pytorch"
    assert {"cpu", "cores", "versions"} <= set(on_disk["machine"])
    names = [r["artifact"] for r in on_disk["results"]]
    assert names == ["pytorch", "pytorch-best", "onnx", "onnx-fp16", "onnx-int8"]
    for result in on_disk["results"]:
        assert {"artifact", "backend", "precision", "status", "reason", "accuracy", "latency_ms", "throughput_ips"} <= set(result)
        assert result["status"] == "ok"
        assert {"top1", "top5", "agreement", "max_abs_logit_diff"} <= set(result["accuracy"])
        assert set(result["latency_ms"]) == {"1", "4"}
        for stats in result["latency_ms"].values():
            assert {"p50", "p90", "p99", "mean"} <= set(stats) and stats["p50"] > 0
            assert stats["p99"] is None and "p99" in stats["too_few_samples_for"]  # 6 samples
            # Two rounds, each in its own process: p50 is the median of the two rounds' medians.
            assert stats["rounds"] == 2 and len(stats["round_p50"]) == 2
            assert stats["p50"] == pytest.approx(sum(stats["round_p50"]) / 2, rel=1e-3)
        assert len(result["accuracy"]["per_class_top1"]) == 6
    baseline = on_disk["results"][0]
    assert baseline["accuracy"]["agreement"] == 1.0 and baseline["accuracy"]["max_abs_logit_diff"] == 0.0
    best = on_disk["results"][1]
    assert best["channels_last"] and best["device"] == "cpu" and best["accuracy"]["agreement"] == 1.0
    fp32 = on_disk["results"][2]["accuracy"]
    assert fp32["agreement"] == 1.0 and fp32["top1"] == baseline["accuracy"]["top1"]
    roofline = on_disk["roofline"]
    assert roofline["macs_per_image"] > 0 and {"fp32", "int8", "bf16"} <= set(roofline["peaks_gmacs"])
    for result in on_disk["results"]:
        assert set(result["roofline"]) == {"1", "4"} and result["roofline"]["1"]["core_ms_per_image"] > 0
    assert "Roofline:" in (exported_run / "benchmark" / "report.md").read_text()
    # Speed-ups against both PyTorch rows, from the p50s in the report.
    for result in on_disk["results"]:
        for batch, stats in result["latency_ms"].items():
            assert result["speedup"]["vs_pytorch"][batch] == pytest.approx(
                baseline["latency_ms"][batch]["p50"] / stats["p50"], rel=1e-2)
            assert result["speedup"]["vs_pytorch_best"][batch] == pytest.approx(
                best["latency_ms"][batch]["p50"] / stats["p50"], rel=1e-2)
    for name in ("report.md", "accuracy_vs_latency.png", "latency.png"):
        assert (exported_run / "benchmark" / name).stat().st_size > 0
    assert "| onnx-int8 |" in (exported_run / "benchmark" / "report.md").read_text()


def test_report_md_tables_render_one_cell_per_header(benchmark_report, exported_run):
    """A `|` inside a cell (as `max|dlogit|` once was) splits the row in every Markdown renderer."""
    table = [line for line in (exported_run / "benchmark" / "report.md").read_text().splitlines()
             if line.startswith("|")]
    assert len(table) >= 3
    cells = {len(re.findall(r"(?<!\\)\|", line)) for line in table}
    assert len(cells) == 1, table[:2]


def _bare_run(exported_run, tmp_path):
    """A run folder sharing the session run's checkpoint (hard link), with an empty export/."""
    run = tmp_path / "run"
    (run / "export").mkdir(parents=True)
    for name in ("model.json", "split.json"):
        shutil.copy(exported_run / name, run / name)
    os.link(exported_run / "model.safetensors", run / "model.safetensors")
    return run


@pytest.fixture
def run_with_odd_artifacts(exported_run, tmp_path):
    run = _bare_run(exported_run, tmp_path)
    manifest = json.loads((exported_run / "export" / "manifest.json").read_text())
    onnx_entry = next(a for a in manifest["artifacts"] if a["name"] == "onnx-int8")
    os.link(exported_run / "export" / onnx_entry["path"], run / "export" / onnx_entry["path"])
    broken = run / "export" / "broken.onnx"
    broken.write_bytes(b"not an onnx model")
    from vgg_deploy.fileio import sha256_file

    engine = run / "export" / "model.int8.engine"
    engine.write_bytes(b"an engine from elsewhere")
    manifest["artifacts"] = [
        onnx_entry,
        {**onnx_entry, "name": "onnx-fp16", "precision": "fp16", "path": "broken.onnx", "sha256": sha256_file(broken),
         "bytes": broken.stat().st_size},
        {"name": "trt-int8", "format": "tensorrt", "precision": "int8", "path": engine.name,
         "sha256": sha256_file(engine), "bytes": engine.stat().st_size},
    ]
    manifest["skipped"] = [{"name": "trt-fp16", "reason": "TensorRT is not installed"}]
    (run / "export" / "manifest.json").write_text(json.dumps(manifest))
    return run


def test_the_streamed_accuracy_pass_gives_the_in_memory_figures(benchmark_report, exported_run):
    from vgg_deploy.batches import eval_batches
    from vgg_deploy.benchmark.pipeline import _evaluate
    from vgg_deploy.runfolder import open_run
    from vgg_deploy.runners import OnnxRuntimeRunner, TorchRunner

    assert benchmark_report["settings"]["eval_streamed"] is True
    run = open_run(exported_run)
    split = run.split()
    held, labels = eval_batches(split.absolute(split.test), run.preprocessing, batch_size=16)
    assert not held.streamed
    baseline = _evaluate(TorchRunner(run.load_model(), name="pytorch"), held, labels, None, run.class_names)
    int8 = _evaluate(OnnxRuntimeRunner(exported_run / "export" / "model.int8.onnx", name="onnx-int8"), held, labels,
                     baseline["_logits"], run.class_names)
    by_name = {r["artifact"]: r for r in benchmark_report["results"]}
    assert baseline["accuracy"] == by_name["pytorch"]["accuracy"]
    assert int8["accuracy"] == by_name["onnx-int8"]["accuracy"]  # bit for bit: every figure, every class


def test_skipped_and_failed_artifacts_do_not_stop_the_rest_but_fail_the_command(run_with_odd_artifacts):
    pytest.importorskip("openvino")
    with pytest.raises(ArtifactFailedError, match=r"artifact run\(s\) failed: onnx-fp16 on onnxruntime"):
        benchmark(run_with_odd_artifacts, BenchmarkOptions(batch_sizes=[1], timing=QUICK, rounds=1,
                                                           onnx_backends=["onnxruntime", "openvino"]))
    report = json.loads((run_with_odd_artifacts / "benchmark" / "report.json").read_text())
    status = {(r["artifact"], r["backend"]): (r["status"], r["reason"]) for r in report["results"]}
    assert status[("pytorch", "torch")][0] == "ok"
    assert status[("onnx-int8", "onnxruntime")][0] == "ok"
    assert status[("onnx-int8", "openvino")][0] == "ok", status
    assert status[("onnx-fp16", "onnxruntime")][0] == "failed" and status[("onnx-fp16", "onnxruntime")][1]
    assert status[("trt-int8", "tensorrt")][0] == "skipped"
    assert status[("trt-fp16", "tensorrt")] == ("skipped", "not exported: TensorRT is not installed")
    by_backend = {r["backend"]: r for r in report["results"] if r["artifact"] == "onnx-int8"}
    assert by_backend["openvino"]["accuracy"]["agreement"] >= 0.9 * by_backend["onnxruntime"]["accuracy"]["agreement"]
    assert by_backend["openvino"]["inference_precision"] == "f32"  # what OpenVINO compiled, recorded in the row


def test_gate_names_the_artifact_and_exits_3():
    report = {"baseline": "pytorch", "results": [
        {"artifact": "pytorch", "status": "ok", "accuracy": {"top1": 0.9}},
        {"artifact": "onnx-int8", "backend": "onnxruntime", "status": "ok", "accuracy": {"top1": 0.85}},
        {"artifact": "onnx", "backend": "onnxruntime", "status": "ok", "accuracy": {"top1": 0.9}},
    ]}
    _gate(report, 10.0)
    _gate(report, None)
    with pytest.raises(AccuracyGateError, match=r"onnx-int8 on onnxruntime \(5.00 points\)"):
        _gate(report, 1.0)
    report["results"].append({"artifact": "onnx-fp16", "backend": "openvino", "status": "failed", "reason": "boom"})
    report["results"].append({"artifact": "trt-int8", "backend": "tensorrt", "status": "skipped", "reason": "no GPU"})
    with pytest.raises(ArtifactFailedError, match=r"onnx-fp16 on openvino \(boom\)") as failure:
        _gate(report, None)
    assert failure.value.exit_code == 4 and "trt-int8" not in str(failure.value)
    with pytest.raises(AccuracyGateError, match="and failed: onnx-fp16 on openvino"):
        _gate(report, 1.0)


def test_cli_gate_exits_3_naming_the_artifact_that_lost_accuracy(exported_run, tmp_path):
    """An artifact that always answers class 0 loses far more than 5 points against the baseline."""
    import torch
    from torch import nn

    from vgg_deploy.fileio import sha256_file

    run = _bare_run(exported_run, tmp_path)
    always_zero = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 6)).eval()
    with torch.no_grad():
        always_zero[2].weight.zero_()
        always_zero[2].bias.copy_(torch.tensor([5.0, 0, 0, 0, 0, 0]))
    path = run / "export" / "model.int8.onnx"
    torch.onnx.export(always_zero, (torch.zeros(1, 3, 64, 64),), str(path), input_names=["input"],
                      output_names=["logits"], dynamic_shapes={"input": {0: torch.export.Dim("batch")}},
                      external_data=False)
    entry = {"name": "onnx-int8", "format": "onnx", "precision": "int8", "path": path.name,
             "sha256": sha256_file(path), "bytes": path.stat().st_size}
    (run / "export" / "manifest.json").write_text(json.dumps({"artifacts": [entry]}))
    args = ["benchmark", str(run), "--batch-sizes", "1", "--iterations", "1", "--time-budget", "0", "--warmup", "0", "--rounds", "1",
            "--backends", "onnxruntime"]
    result = CliRunner().invoke(app, args + ["--max-accuracy-drop", "5"])
    assert result.exit_code == 3
    assert "onnx-int8" in result.stderr and "Traceback" not in result.output


def test_data_with_other_classes_is_refused(exported_run, tmp_path, tiny_data):
    from vgg_deploy.errors import DataError

    # Real images, three of the run's six classes: refused for its classes, before anything is evaluated.
    with pytest.raises(DataError, match=r"has classes \['circle', 'square', 'triangle'\]; the model was trained on"):
        benchmark(exported_run, BenchmarkOptions(batch_sizes=[1], data=str(tiny_data), timing=QUICK))
