from __future__ import annotations

import pytest
import torch

from vgg_deploy.finetune import devices, optimization
from vgg_deploy.errors import VggDeployError


def test_warmup_then_cosine_to_zero():
    factor = optimization.warmup_cosine(total_steps=100, warmup_steps=10)
    assert factor(0) < factor(5) < factor(9) <= 1.0
    assert factor(10) == pytest.approx(1.0)
    assert factor(55) == pytest.approx(0.5, abs=0.02)
    assert factor(100) == pytest.approx(0.0, abs=1e-6)
    delayed = optimization.warmup_cosine(total_steps=100, warmup_steps=5, start_step=20)
    assert delayed(19) == 0.0 and delayed(20) > 0.0


def test_precision_is_never_changed_silently():
    cpu = torch.device("cpu")
    assert devices.resolve_precision("fp32", cpu) == "fp32"
    assert devices.resolve_precision("bf16", cpu) == "bf16"
    with pytest.raises(VggDeployError, match="fp16 needs --device cuda"):
        devices.resolve_precision("fp16", cpu)
    assert devices.resolve_precision("auto", cpu) == ("bf16" if devices.cpu_has_native_bf16() else "fp32")


def test_cuda_request_without_cuda_is_an_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(VggDeployError, match="no CUDA GPU"):
        devices.resolve_device("cuda")
    assert devices.resolve_device("auto").type == "cpu"


def test_probe_separates_clusters_from_noise_and_folds_its_standardisation():
    from vgg_deploy.finetune.depth_probes import fit_probe

    torch.manual_seed(0)
    labels = torch.arange(4).repeat_interleave(12)
    centres = torch.randn(4, 16) * 5
    clustered = centres[labels] + torch.randn(48, 16) * 0.5 + 100.0  # far from zero: the fold must hold
    good = fit_probe("pool5", clustered[::2], labels[::2], clustered[1::2], labels[1::2], num_classes=4)
    assert good.val_top1 == 1.0 and good.val_se < 1e-3
    noise = torch.randn(48, 16)
    bad = fit_probe("pool5", noise[::2], labels[::2], noise[1::2], labels[1::2], num_classes=4)
    assert bad.val_top1 < 0.6
