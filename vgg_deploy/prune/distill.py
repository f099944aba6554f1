"""Knowledge distillation from the unpruned model (Hinton et al. 2015): the pruned model learns the labels and
the teacher's softened outputs, which carry more per image than a label does."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DistillationLoss(nn.Module):
    def __init__(self, hard_loss: nn.Module, *, temperature: float, soft_weight: float):
        super().__init__()
        if temperature <= 0 or not 0 <= soft_weight <= 1:
            raise ValueError("distillation needs temperature > 0 and a soft weight in [0, 1]")
        self.hard_loss, self.temperature, self.soft_weight = hard_loss, temperature, soft_weight

    def forward(self, logits: torch.Tensor, labels: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        t = self.temperature
        # T^2 keeps the soft term's gradients on the hard term's scale whatever the temperature.
        soft = F.kl_div(F.log_softmax(logits / t, dim=1), F.log_softmax(teacher_logits / t, dim=1),
                        reduction="batchmean", log_target=True) * t * t
        return (1 - self.soft_weight) * self.hard_loss(logits, labels) + self.soft_weight * soft
