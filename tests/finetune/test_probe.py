"""The cached linear probe: standardisation with a floor, and an exact fold back into a plain fc8."""

from __future__ import annotations

import torch
from torch import nn

from vgg_deploy.finetune.probe import STD_FLOOR_OF_MEDIAN, Standardiser, extract_codes
from vgg_deploy.model import new_vgg16


def test_a_near_constant_code_cannot_blow_up_the_folded_head():
    torch.manual_seed(0)
    codes = torch.randn(200, 64)
    codes[:, 0] = 5.0 + 1e-6 * torch.randn(200)  # almost constant on the training set
    codes[:, 1] = 0.0  # dead (a ReLU that never fires)
    standardise = Standardiser.fit(codes)
    median = float(codes.std(dim=0)[2:].median())
    assert float(standardise.std.min()) >= STD_FLOOR_OF_MEDIAN * median * 0.99
    head = nn.Linear(64, 3)
    folded = standardise.fold(head)
    # The folded weights grow by at most 1/floor over the trained ones: no 1000x amplification.
    growth = (folded["classifier.6.weight"].abs() / head.weight.detach().abs().clamp(min=1e-12)).max()
    assert float(growth) <= 1.01 / (STD_FLOOR_OF_MEDIAN * median)


def test_folded_head_on_raw_codes_equals_the_trained_head_on_standardised_codes():
    torch.manual_seed(1)
    codes = torch.randn(50, 32) * torch.linspace(0.01, 10, 32) + 3
    standardise = Standardiser.fit(codes)
    head = nn.Linear(32, 4)
    folded = standardise.fold(head)
    raw = codes @ folded["classifier.6.weight"].T + folded["classifier.6.bias"]
    torch.testing.assert_close(raw, head(standardise(codes)).detach(), rtol=1e-4, atol=1e-4)


def test_codes_are_fp32_and_match_the_network_below_fc8():
    torch.manual_seed(2)
    model = new_vgg16(3)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    codes, labels = extract_codes(model, [(x, y)], device=torch.device("cpu"), channels_last=True)
    assert codes.dtype == torch.float32 and codes.shape == (4, 4096) and torch.equal(labels, y)
    with torch.no_grad():
        expected = model.classifier[:6](torch.flatten(model.avgpool(model.features(x)), 1))
    torch.testing.assert_close(codes, expected)
