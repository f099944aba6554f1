"""Transfer from another run: `--weights RUN` takes its body, drops its head, decides the case from its
features, and records where the weights came from.

Whether transfer beats training from scratch, and how far from-scratch training gets against a plain
SGD loop, is measured in benchmarks/ (transfer_cases.py, scratch_vs_plain.py): on two cores VGG16 from
scratch needs more epochs than the suite can spend before such a comparison means anything."""

from __future__ import annotations

import json

import torch

from tests.conftest import SCRATCH_EPOCHS, SMALL_IMAGE_SIZE
from vgg_deploy.fileio import sha256_file
from vgg_deploy.finetune import FinetuneConfig, finetune


def test_transfer_from_a_source_run(scratch_run, small_target, tmp_path):
    import shutil

    from safetensors.torch import load_file

    common = dict(data=str(small_target), weights=str(scratch_run), image_size=SMALL_IMAGE_SIZE,
                  epochs=SCRATCH_EPOCHS, batch_size=8, workers=0)
    info = finetune(FinetuneConfig(out=str(tmp_path / "transfer"), case="auto", **common))
    target = load_file(str(tmp_path / "transfer" / "model.safetensors"))
    target = {key: target[key] for key in ("classifier.6.weight", "features.0.weight")}
    epochs = [json.loads(line) for line in (tmp_path / "transfer" / "epochs.jsonl").read_text().splitlines()]
    shutil.rmtree(tmp_path / "transfer")  # a full VGG16 run is ~0.5 GB on disk, and the suite's disk is finite
    # auto's head starts as its fc7 probe (a whole-body source keeps the classic head), kept unless beaten on val.
    assert info["head"]["kind"] == "classic" and info["plan"]["head_init"] == "probe"
    assert epochs[0]["epoch"] == 0 and info["metrics"]["val"]["top1"] >= epochs[0]["val_top1"]
    source = info["weights"]["source_run"]
    assert source["path"] == str(scratch_run.resolve()) and source["class_names"] == ["circle", "square", "triangle"]
    assert info["weights"]["sha256"] == sha256_file(scratch_run / "model.safetensors")
    # auto judged the target against the source's own features, and chose a small case (24 train images).
    evidence = info["case_decision"]["evidence"]
    assert [p["depth"] for p in evidence["probes"]] == ["pool3", "pool4", "pool5", "fc7"]
    assert evidence["shipped_depth"] == "fc7" and info["case"].startswith("small-")
    assert info["metrics"]["test"]["images"] == 80 and info["class_names"] == ["pentagon", "star"]
    source_state = load_file(str(scratch_run / "model.safetensors"))
    assert target["classifier.6.weight"].shape == (2, 4096) and source_state["classifier.6.weight"].shape == (3, 4096)
    # Frozen layers arrive exactly as the source trained them.
    frozen_key = "features.0.weight"
    assert torch.equal(target[frozen_key], source_state[frozen_key])
