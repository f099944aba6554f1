from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from vgg_deploy import runfolder
from vgg_deploy.errors import RunFolderError
from vgg_deploy.finetune import FinetuneConfig, cases, finetune
from vgg_deploy.finetune.loop import TrainingLoop as _TrainingLoop


def test_end_to_end_beats_chance_by_a_wide_margin(trained_run):
    info = json.loads((trained_run / "model.json").read_text())
    chance = 1 / len(info["class_names"])
    assert info["metrics"]["val"]["top1"] >= 2 * chance, info["metrics"]


def test_run_folder_contract(trained_run):
    info = json.loads((trained_run / "model.json").read_text())
    assert info["class_names"] == sorted(info["class_names"]) and len(info["class_names"]) == 6
    pre = info["preprocessing"]
    assert pre["image_size"] == 64 and len(pre["mean"]) == 3 and len(pre["std"]) == 3 and pre["resize"] >= 64
    assert info["case"] == "small-similar"
    assert info["plan"]["trained"] == ["fc8"] and "conv1" in info["plan"]["frozen"]
    assert info["weights"]["pretrained"] and info["head"]["kind"] == "pooled"
    assert set(info["metrics"]["val"]) == {"top1", "top5", "loss"}
    assert info["metrics"]["test"]["images"] == 72 and info["data"]["test_images"] == 72
    assert {"torch", "torchvision"} <= set(info["versions"])
    state = load_file(str(trained_run / "model.safetensors"))
    assert state["classifier.6.weight"].shape == (6, 512)
    split = json.loads((trained_run / "split.json").read_text())
    assert len(split["train"]) == 216 and len(split["val"]) == 72 and len(split["test"]) == 72
    parts = [{p for p, _ in split[name]} for name in ("train", "val", "test")]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    epochs = [json.loads(line) for line in (trained_run / "epochs.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs] == list(range(1, len(epochs) + 1))
    assert (trained_run / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert not (trained_run / "resume.pt").exists()
    config = json.loads((trained_run / "config.json").read_text())
    assert config["case"] == "small-similar" and config["image_size"] == 64


def test_the_probe_runs_the_frozen_network_once_per_image(tiny_data, tmp_path, monkeypatch):
    """small-similar caches fc7 codes: over 3 epochs conv1..conv5 see each train and val image exactly once
    (and the test images once more, for the kept checkpoint's reported figures)."""
    images = []
    original = torch.nn.Sequential.forward

    def counting(self, x):
        if len(self) == 31:  # VGG16's `features`: conv1..conv5
            images.append(x.shape[0])
        return original(self, x)

    monkeypatch.setattr(torch.nn.Sequential, "forward", counting)
    info = finetune(_config(tiny_data, tmp_path / "run", case="small-similar", epochs=3))
    data = info["data"]
    assert sum(images) == data["train_images"] + data["val_images"] + data["test_images"]


def _config(data, out, **kw):
    # From scratch, every layer: the BatchNorm recipe, its running statistics and the augmentation's
    # randomness all have to survive an interruption.
    defaults = dict(data=str(data), out=str(out), case="large-different", weights="none", image_size=32, epochs=4,
                    batch_size=8, workers=0, precision="fp32")
    return FinetuneConfig(**{**defaults, **kw})


def test_resume_continues_from_the_last_finished_epoch(tiny_data, tmp_path, monkeypatch):
    original = _TrainingLoop._save_resume
    saved_after = []

    def recorded(self, epoch, optimizer, scheduler):
        saved_after.append(epoch)
        original(self, epoch, optimizer, scheduler)

    # The same run without the interruption first; only its outcome is kept (every run here is ~2 GB on disk).
    monkeypatch.setattr(_TrainingLoop, "_save_resume", recorded)
    unbroken = finetune(_config(tiny_data, tmp_path / "unbroken", epochs=2))
    assert saved_after == [1]  # never after the last epoch: the finished run would delete it at once
    straight = load_file(str(tmp_path / "unbroken" / "model.safetensors"))
    shutil.rmtree(tmp_path / "unbroken")

    out = tmp_path / "run"

    def interrupted(self, epoch, optimizer, scheduler):
        original(self, epoch, optimizer, scheduler)
        if epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(_TrainingLoop, "_save_resume", interrupted)
    with pytest.raises(KeyboardInterrupt):
        finetune(_config(tiny_data, out, epochs=2, case="auto", device="auto"))
    # Interrupted: the kept checkpoint (epoch 1) and its description are whole; resume state is there.
    assert (out / "resume.pt").is_file()
    kept = runfolder.open_run(out)
    assert kept.info["metrics"]["epoch"] == 1
    on_disk = load_file(str(out / "model.safetensors"))
    for key, value in kept.load_model().state_dict().items():
        torch.testing.assert_close(value, on_disk[key], rtol=0, atol=0)
    # config.json is the resolved configuration: what auto chose, not "auto".
    config = json.loads((out / "config.json").read_text())
    assert (config["case"], config["device"], config["precision"], config["workers"]) == (
        "large-different", "cpu", "fp32", 0)
    assert config["lr"] == 1e-4 and config["case_decision"]["case"] == "large-different"
    assert config["head_init"] == "random" and config["head"] == "classic"

    def decides_again(*_, **__):
        raise AssertionError("--resume decided the case again")

    monkeypatch.setattr(cases, "decide_case", decides_again)
    monkeypatch.setattr(cases, "decide_size", decides_again)
    monkeypatch.setattr(_TrainingLoop, "_save_resume", original)
    info = finetune(_config(tiny_data, out, epochs=2), resume=True)
    assert info["case_decision"] == config["case_decision"]
    epochs = [json.loads(line)["epoch"] for line in (out / "epochs.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]
    assert not (out / "resume.pt").exists()
    # It ends with the same weights and the same kept epoch as the unbroken run.
    assert info["metrics"] == unbroken["metrics"]
    resumed = load_file(str(out / "model.safetensors"))
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], rtol=1e-5, atol=1e-6)
    with pytest.raises(RunFolderError, match="already finished"):
        finetune(_config(tiny_data, out), resume=True)


def test_without_resume_state_only_the_best_checkpoint_is_written(tiny_data, tmp_path, monkeypatch):
    """--no-resume-state: interrupted after epoch 1 of 2, the best checkpoint is whole, no resume.pt was ever
    written, and --resume says why it cannot continue. A probe keeps this cheap: fc8 alone trains."""
    original = _TrainingLoop._train_one_epoch

    def interrupted(self, epoch, steps):
        if epoch == 2:  # epoch 1 has finished, checkpoints included
            raise KeyboardInterrupt
        return original(self, epoch, steps)

    monkeypatch.setattr(_TrainingLoop, "_train_one_epoch", interrupted)
    monkeypatch.setattr(_TrainingLoop, "_save_resume", lambda *_: pytest.fail("resume state written"))
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        finetune(_config(tiny_data, out, case="small-similar", epochs=2, resume_state=False))
    assert runfolder.open_run(out).info["metrics"]["epoch"] == 1 and not (out / "resume.pt").exists()
    assert json.loads((out / "config.json").read_text())["resume_state"] is False
    with pytest.raises(RunFolderError, match="started with --no-resume-state"):
        finetune(_config(tiny_data, out), resume=True)


def test_skipped_bad_images_are_listed_in_the_run(tiny_data, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    (data / "circle" / "broken.png").write_bytes(b"nope")
    out = tmp_path / "run"
    finetune(_config(data, out, epochs=1, skip_bad_images=True))
    skipped = json.loads((out / "skipped_images.json").read_text())
    assert [s["path"].endswith("broken.png") for s in skipped] == [True]
    assert json.loads((out / "model.json").read_text())["data"]["skipped_images"] == 1


def test_a_failed_start_leaves_the_run_folder_empty(tiny_data, tmp_path):
    from vgg_deploy.errors import WeightsError

    out = tmp_path / "run"
    with pytest.raises(WeightsError):
        finetune(_config(tiny_data, out, weights=str(tmp_path / "missing.safetensors")))
    assert list(out.iterdir()) == []
