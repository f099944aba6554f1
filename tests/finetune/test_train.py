from __future__ import annotations

import pytest
import torch

from vgg_deploy.finetune import devices as D, optimization as O
from vgg_deploy.errors import VggDeployError
from vgg_deploy.finetune.similarity import knn_leave_one_out_accuracy


def test_warmup_then_cosine_to_zero():
    factor = O.warmup_cosine(total_steps=100, warmup_steps=10)
    assert factor(0) < factor(5) < factor(9) <= 1.0
    assert factor(10) == pytest.approx(1.0)
    assert factor(55) == pytest.approx(0.5, abs=0.02)
    assert factor(100) == pytest.approx(0.0, abs=1e-6)
    delayed = O.warmup_cosine(total_steps=100, warmup_steps=5, start_step=20)
    assert delayed(19) == 0.0 and delayed(20) > 0.0


def test_precision_is_never_changed_silently():
    cpu = torch.device("cpu")
    assert D.resolve_precision("fp32", cpu) == "fp32"
    assert D.resolve_precision("bf16", cpu) == "bf16"
    with pytest.raises(VggDeployError, match="fp16 needs --device cuda"):
        D.resolve_precision("fp16", cpu)
    assert D.resolve_precision("auto", cpu) == ("bf16" if D.cpu_has_native_bf16() else "fp32")


def test_cuda_request_without_cuda_is_an_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(VggDeployError, match="no CUDA GPU"):
        D.resolve_device("cuda")
    assert D.resolve_device("auto").type == "cpu"


def test_knn_accuracy_separates_clusters_from_noise():
    torch.manual_seed(0)
    labels = torch.arange(4).repeat_interleave(10)
    centres = torch.randn(4, 16) * 5
    clustered = centres[labels] + torch.randn(40, 16) * 0.1
    assert knn_leave_one_out_accuracy(clustered, labels) == 1.0
    assert knn_leave_one_out_accuracy(torch.randn(40, 16), labels) < 0.6
