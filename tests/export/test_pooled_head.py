"""A pooled-head run (transfer from the conv-only backbone) flows through export, INT8, predict and prune as the
narrower VGG16 it is."""

from __future__ import annotations

import json

import numpy as np
import torch
from PIL import Image

from vgg_deploy.runfolder import open_run


def test_a_pooled_head_run_exports_and_predicts_as_pytorch_does(exported_run):
    """The session's run (conftest's trained_run) is the pooled-head transfer, exported once for the suite."""
    from vgg_deploy.predict import PredictOptions, predict

    assert json.loads((exported_run / "model.json").read_text())["head"]["kind"] == "pooled"
    manifest = json.loads((exported_run / "export" / "manifest.json").read_text())
    entries = {a["name"]: a for a in manifest["artifacts"]}
    assert {"onnx", "onnx-int8"} <= set(entries)
    assert entries["onnx"]["parity"]["top1_agreement"] == 1.0
    # 27.8M parameters, not 138M: the FP32 file is about a fifth of a classic VGG16's 530 MB.
    assert entries["onnx"]["bytes"] < 130e6
    run = open_run(exported_run)
    split = run.split()
    items = split.absolute(split.test)[:12]
    result = predict(exported_run, [p for p, _ in items], PredictOptions(artifact="onnx", top_k=1))
    model = run.load_model()
    batch = run.preprocessing.batch([Image.open(p).convert("RGB") for p, _ in items])
    with torch.no_grad():
        expected = model(torch.from_numpy(batch)).argmax(1).numpy()
    assert np.array_equal([row["top"][0]["index"] for row in result.rows], expected)


def test_a_pooled_head_run_prunes_as_the_narrower_vgg16(trained_run, tmp_path):
    from vgg_deploy.prune import PruneConfig, prune

    pruned = tmp_path / "pruned"
    prune(PruneConfig(run=str(trained_run), out=str(pruned), target_macs=0.7, steps=1, epochs=1, batch_size=16,
                      latency_rounds=0, workers=0))
    info = json.loads((pruned / "model.json").read_text())
    assert info["head"]["kind"] == "pooled" and info["widths"]["fc6"] == info["widths"]["conv5_3"] < 512
    assert info["plan"]["fixed"] == ["fc6", "fc7"] and info["metrics"]["test"]["top1"] > 1 / 6
    # fc6's units were cut with conv5_3's channels and kept fixed: still exactly a global average + linear.
    pruned_model = open_run(pruned).load_model()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        pooled = pruned_model.avgpool(pruned_model.features(x)).mean(dim=(2, 3))
        by_hand = pooled @ pruned_model.classifier[6].weight.T + pruned_model.classifier[6].bias
        assert torch.allclose(pruned_model(x), by_hand, rtol=1e-4, atol=1e-4)
