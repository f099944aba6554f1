"""Transfer from a real pretrained VGG16 (the offline conv stack): it learns where random features do not, auto
decides by probes and never ships below its probe, and the pooled head is exactly what model.json says."""

from __future__ import annotations

import json

import torch

from vgg_deploy import runfolder
from vgg_deploy.heads import pooled_head_widths


def _info(run):
    return json.loads((run / "model.json").read_text())


def test_the_real_backbone_beats_random_init_features_by_30_points(backbone_run, random_features_run):
    real, random_features = _info(backbone_run), _info(random_features_run)
    assert real["data"]["test_images"] == random_features["data"]["test_images"] == 72
    assert json.loads((backbone_run / "split.json").read_text())["test"] == \
        json.loads((random_features_run / "split.json").read_text())["test"]
    gain = real["metrics"]["test"]["top1"] - random_features["metrics"]["test"]["top1"]
    assert gain >= 0.30, (real["metrics"]["test"], random_features["metrics"]["test"])


def test_auto_decides_by_probes_and_never_ships_below_its_probe(backbone_run):
    info = _info(backbone_run)
    evidence = info["case_decision"]["evidence"]
    assert [p["depth"] for p in evidence["probes"]] == ["pool3", "pool4", "pool5"]
    assert evidence["shipped_depth"] == "pool5" and "linear probes on val" in info["case_decision"]["reasons"][1]
    epochs = [json.loads(line) for line in (backbone_run / "epochs.jsonl").read_text().splitlines()]
    assert epochs[0]["epoch"] == 0 and epochs[0]["probe"]
    pool5 = next(p for p in evidence["probes"] if p["depth"] == "pool5")
    assert abs(epochs[0]["val_top1"] - pool5["val_top1"]) < 1e-4  # epoch 0 is the probe (summary rounds to 4 places)
    assert info["metrics"]["val"]["top1"] >= epochs[0]["val_top1"]
    assert info["plan"]["head_init"] == "probe"


def test_the_run_records_what_came_pretrained_and_its_pooled_head(backbone_run, backbone_path):
    info = _info(backbone_run)
    assert info["weights"]["pretrained_groups"] == ["conv1", "conv2", "conv3", "conv4", "conv5"]
    assert info["weights"]["layers_ignored"] == ["dsn1", "dsn2", "dsn3", "dsn4", "dsn5", "fuse"]
    assert info["plan"]["pretrained_groups"] == ["conv1", "conv2", "conv3", "conv4", "conv5"]
    assert not {"fc6", "fc7"} & set(info["plan"]["frozen"])
    assert info["head"]["kind"] == "pooled" and info["widths"] == pooled_head_widths()
    # The run normalises the way the folded conv1_1 expects (the Caffe mean), and says so.
    assert info["preprocessing"]["mean"] == info["weights"]["input_mean"]


def test_the_pooled_head_is_a_global_average_and_one_linear_layer(backbone_run):
    run = runfolder.open_run(backbone_run)
    model = run.load_model()
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        pooled = model.avgpool(model.features(x)).mean(dim=(2, 3))
        expected = pooled @ model.classifier[6].weight.T + model.classifier[6].bias
        assert torch.allclose(model(x), expected, rtol=1e-5, atol=1e-5)


def test_a_pooled_head_whose_widths_do_not_fit_is_refused(backbone_run, tmp_path):
    import pytest

    from vgg_deploy.errors import RunFolderError

    info = _info(backbone_run)
    info["widths"] = {**info["widths"], "fc7": 256}
    (tmp_path / "model.json").write_text(json.dumps(info))
    with pytest.raises(RunFolderError, match="pooled head needs fc6 and fc7 as wide as conv5_3"):
        runfolder.open_run(tmp_path)


def test_a_pooled_head_from_scratch_is_refused_before_anything_is_written(tiny_data, tmp_path):
    import pytest

    from vgg_deploy.errors import VggDeployError
    from vgg_deploy.finetune import FinetuneConfig, finetune

    out = tmp_path / "run"
    with pytest.raises(VggDeployError, match="--head pooled needs pretrained convolutions"):
        finetune(FinetuneConfig(data=str(tiny_data), out=str(out), weights="none", head="pooled", image_size=32,
                                epochs=1, workers=0))
    assert not out.exists() or not any(out.iterdir())
