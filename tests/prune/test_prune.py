"""The prune step end to end, on a source that has learned (conftest's learned_run), 32 px."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from tests.conftest import PRUNE_SETTINGS
from vgg_deploy import runfolder
from vgg_deploy.cli import app
from vgg_deploy.errors import RunFolderError
from vgg_deploy.finetune.loop import TrainingLoop
from vgg_deploy.prune import PruneConfig, prune
from vgg_deploy.widths import DENSE_WIDTHS, multiply_adds, widths_of


def _log(run):
    return [json.loads(line) for line in (run / "prune_log.jsonl").read_text().splitlines()]


def test_a_pruned_run_keeps_the_run_folder_contract(pruned_run, learned_run):
    info = json.loads((pruned_run / "model.json").read_text())
    run = runfolder.open_run(pruned_run)
    model = run.load_model()  # the pruned weights load back with the recorded widths
    assert widths_of(model) == info["widths"] != DENSE_WIDTHS
    assert info["pruning"]["source_run"] == str(learned_run.resolve())
    assert (pruned_run / "split.json").read_text() == (learned_run / "split.json").read_text()
    log = _log(pruned_run)
    assert [r["step"] for r in log] == [0, 1, 2] and info["pruning"]["steps_report"] == log
    macs = [r["macs"] for r in log]
    assert macs[0] > macs[1] > macs[2] and macs[2] <= PRUNE_SETTINGS["target_macs"] * macs[0]
    assert macs[2] == multiply_adds(info["widths"], image_size=32, num_classes=3)
    assert all(w % 8 == 0 for w in info["widths"].values())
    assert (pruned_run / "prune.png").stat().st_size > 0 and not (pruned_run / ".timing").exists()
    assert not list(pruned_run.glob("steps/*/pruned.safetensors")) and not list(pruned_run.glob("steps/*/resume.pt"))
    # Widths that do not match the weights are refused with the reason.
    info["widths"] = {**info["widths"], "fc7": info["widths"]["fc7"] + 8}
    (pruned_run / "model.json").write_text(json.dumps(info))
    try:
        with pytest.raises(RunFolderError, match="classifier.3.weight has shape .* widths model.json records"):
            runfolder.open_run(pruned_run).load_model()
    finally:
        info["widths"]["fc7"] -= 8
        (pruned_run / "model.json").write_text(json.dumps(info))


def test_recovery_never_keeps_a_step_worse_on_val_than_its_pruned_start(pruned_run):
    """Epoch 0 of each recovery is the pruned model itself: an epoch of training replaces it only by beating it
    on val (with per-layer widths the pruned start can be as good as the source, and training then worse)."""
    for index, step in enumerate(_log(pruned_run)[1:], 1):
        epochs = [json.loads(line) for line in (pruned_run / "steps" / str(index) / "epochs.jsonl").read_text().splitlines()]
        assert epochs[0]["epoch"] == 0 and epochs[0]["start"] and "probe" not in epochs[0]
        assert step["val_top1"] == max(e["val_top1"] for e in epochs)
        assert step["recovery_epochs_run"] == PRUNE_SETTINGS["epochs"] == len(epochs) - 1


def test_a_pruned_run_exports_with_parity(pruned_run, tmp_path):
    from vgg_deploy.export.pipeline import ExportOptions, export

    copy = tmp_path / "run"
    shutil.copytree(pruned_run, copy, ignore=shutil.ignore_patterns("steps"))
    manifest = export(copy, ExportOptions(formats=["onnx"], check_images=30))
    parity = manifest["artifacts"][0]["parity"]
    assert parity["top1_agreement"] == 1.0  # export itself fails when parity is out of tolerance
    assert parity["max_abs_logit_diff"] <= 1e-3 * max(1.0, parity["reference_logit_range"])


def test_a_resumed_prune_ends_where_an_unbroken_one_does(pruned_run, learned_run, tmp_path, monkeypatch):
    # What a prune interrupted in step 2 leaves: its start files and step 1, finished. (Copied from the unbroken
    # run rather than trained again, to keep the suite short; step 2 then runs here, interrupted and resumed.)
    out = tmp_path / "run"
    shutil.copytree(pruned_run / "steps" / "1", out / "steps" / "1")
    for name in ("config.json", "split.json", "prune_target.json"):
        shutil.copyfile(pruned_run / name, out / name)
    original = TrainingLoop._save_resume

    def interrupted(self, epoch, optimizer, scheduler):
        original(self, epoch, optimizer, scheduler)
        raise KeyboardInterrupt  # after step 2's first recovery epoch

    monkeypatch.setattr(TrainingLoop, "_save_resume", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prune(PruneConfig(run=str(learned_run), out=str(out)), resume=True)
    assert (out / "steps" / "2" / "resume.pt").is_file() and not (out / "model.json").exists()
    monkeypatch.setattr(TrainingLoop, "_save_resume", original)
    with pytest.raises(RunFolderError, match="already holds a run"):
        prune(PruneConfig(run=str(learned_run), out=str(out), **PRUNE_SETTINGS))
    prune(PruneConfig(run=str(learned_run), out=str(out)), resume=True)  # the saved configuration wins
    resumed, straight = load_file(str(out / "model.safetensors")), load_file(str(pruned_run / "model.safetensors"))
    assert resumed.keys() == straight.keys()
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], rtol=1e-5, atol=1e-6)
    assert [r["val_top1"] for r in _log(out)] == [r["val_top1"] for r in _log(pruned_run)]
    epochs = [json.loads(line)["epoch"] for line in (out / "steps" / "2" / "epochs.jsonl").read_text().splitlines()]
    assert epochs == [0, 1, 2]
    with pytest.raises(RunFolderError, match="already finished"):
        prune(PruneConfig(run=str(learned_run), out=str(out)), resume=True)


@pytest.mark.parametrize("extra, message", [
    ([], "exactly one of --target-macs and --target-speedup"),
    (["--target-macs", "0.5", "--target-speedup", "2"], "exactly one of"),
    (["--target-macs", "1.5"], "fraction of the source model's multiply-adds"),
    (["--target-speedup", "2", "--latency-rounds", "0"], "--latency-rounds must be at least 1"),
    (["--target-macs", "0.5", "--sensitivity-from", "elsewhere"], "needs --allocation sensitivity"),
])
def test_bad_prune_requests_are_one_line_errors(learned_run, tmp_path, extra, message):
    result = CliRunner().invoke(app, ["prune", str(learned_run), "--out", str(tmp_path / "p"), *extra])
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "p" / "model.json").exists()


def test_a_refused_speedup_target_leaves_out_as_it_found_it(learned_run, tmp_path, monkeypatch):
    from vgg_deploy.errors import VggDeployError
    from vgg_deploy.prune import latency

    def export(model, path, **_):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"onnx")
        return path

    def unreachable(files, **_):  # every candidate as slow as the source
        return dict.fromkeys(files, 10.0)

    monkeypatch.setattr(latency, "export_for_timing", export)
    monkeypatch.setattr(latency, "median_latency_ms", unreachable)
    out = tmp_path / "p"
    with pytest.raises(VggDeployError, match="not reached"):
        prune(PruneConfig(run=str(learned_run), out=str(out), target_speedup=2.0, latency_rounds=1, workers=0))
    assert not (out / ".timing").exists() and not (out / "config.json").exists()


def test_pruning_a_folder_that_is_not_a_run_names_it(tmp_path):
    result = CliRunner().invoke(app, ["prune", str(tmp_path), "--out", str(tmp_path / "p"), "--target-macs", "0.5"])
    assert result.exit_code == 1 and "model.json is missing" in result.output
