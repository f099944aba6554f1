"""The cached linear probe (small-similar): conv1..fc7 are frozen and deterministic, so they run once in
FP32; fc8 then trains on standardised codes and is folded back into a plain fc8 when saved."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

# A code whose spread on the training set is below this fraction of the median spread is divided by the
# floor instead: standardising a near-constant code would multiply its weight in the folded fc8 by up to
# 1/spread, so one noisy code could dominate the logits.
STD_FLOOR_OF_MEDIAN = 0.1


@torch.no_grad()
def extract_codes(model: nn.Module, batches: Iterable, *, device: torch.device, channels_last: bool):
    """fc7 outputs (everything below fc8, eval mode) in FP32, with their labels. No autocast: the codes are
    computed once and reused every epoch, so their rounding error would be baked into the probe."""
    model.eval()
    below_head = nn.Sequential(model.features, model.avgpool, nn.Flatten(1), model.classifier[:6])
    codes, labels = [], []
    for inputs, y in batches:
        inputs = inputs.to(device)
        if channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        codes.append(below_head(inputs).float().cpu())
        labels.append(y)
    return torch.cat(codes), torch.cat(labels)


@dataclass
class Standardiser:
    mean: torch.Tensor
    std: torch.Tensor

    @classmethod
    def fit(cls, codes: torch.Tensor) -> Standardiser:
        std = codes.std(dim=0)
        live = std[std > 0]
        floor = STD_FLOOR_OF_MEDIAN * (float(live.median()) if live.numel() else 1.0)
        return cls(codes.mean(dim=0), std.clamp(min=max(floor, 1e-12)))

    def __call__(self, codes: torch.Tensor) -> torch.Tensor:
        return (codes - self.mean) / self.std

    @torch.no_grad()
    def unfold(self, head: nn.Linear) -> None:
        """`head` (fitted on raw codes) rewritten in place to give the same logits on standardised codes."""
        mean, std = self.mean.to(head.weight.device), self.std.to(head.weight.device)
        head.bias.add_(head.weight @ mean)
        head.weight.mul_(std)

    def fold(self, head: nn.Linear) -> dict[str, torch.Tensor]:
        """fc8 weights that give on raw codes what `head` gives on standardised ones."""
        weight = head.weight.detach() / self.std.to(head.weight.device)
        bias = head.bias.detach() - weight @ self.mean.to(weight.device)
        return {"classifier.6.weight": weight, "classifier.6.bias": bias}
