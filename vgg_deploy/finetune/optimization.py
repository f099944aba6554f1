"""The recipe: what trains, at what rate, with which optimizer and schedule."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from vgg_deploy.finetune.cases import FreezePlan
from vgg_deploy.model import GROUP_NAMES, HEAD, group_modules, group_parameters


def apply_freeze(model: nn.Module, plan: FreezePlan) -> None:
    for group in GROUP_NAMES:
        for param in group_parameters(model, group):
            param.requires_grad_(group in plan.trained)


def set_train_mode(model: nn.Module, plan: FreezePlan) -> None:
    """Trained layers in train mode; frozen and fixed ones (and their dropout) in eval mode."""
    model.train()
    for group in (*plan.frozen, *plan.fixed):
        for module in group_modules(model, group):
            module.eval()


def build_optimizer(model: nn.Module, plan: FreezePlan, *, weight_decay: float) -> torch.optim.Optimizer:
    """One parameter group per trained layer group. Frozen parameters are never handed to the optimizer,
    so weight decay and momentum cannot move them."""
    groups = []
    for group in plan.trained:
        params = group_parameters(model, group)
        decay = [p for p in params if p.ndim > 1]
        no_decay = [p for p in params if p.ndim <= 1]
        groups.append({"params": decay, "lr": plan.lr[group], "weight_decay": weight_decay, "layer_group": group})
        groups.append({"params": no_decay, "lr": plan.lr[group], "weight_decay": 0.0, "layer_group": group})
    return torch.optim.AdamW(groups, fused=True)


def warmup_cosine(total_steps: int, warmup_steps: int, start_step: int = 0) -> Callable[[int], float]:
    """Multiplier for LambdaLR: 0 before start_step, linear warm-up, then cosine decay to 0."""

    def factor(step: int) -> float:
        if step < start_step:
            return 0.0
        step -= start_step
        span = max(1, total_steps - start_step)
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = min(1.0, (step - warmup_steps) / max(1, span - warmup_steps))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


WARMUP_FRACTION = 0.1  # of each group's training steps; linear, then cosine to 0


def warmup_steps(total_steps: int) -> int:
    return max(1, round(WARMUP_FRACTION * total_steps))


def warmup_epochs(plan: FreezePlan, *, steps_per_epoch: int, epochs: int) -> int:
    """Epochs until every group's warm-up has ended; early stopping waits for them (a model still warming
    up has not yet shown what it can do)."""
    backbone_start = plan.head_warmup_epochs * steps_per_epoch
    last_step = backbone_start + warmup_steps(steps_per_epoch * epochs - backbone_start)
    return min(epochs, math.ceil(last_step / steps_per_epoch))


def build_scheduler(
    optimizer: torch.optim.Optimizer, plan: FreezePlan, *, steps_per_epoch: int, epochs: int
) -> torch.optim.lr_scheduler.LambdaLR:
    total = steps_per_epoch * epochs
    backbone_start = plan.head_warmup_epochs * steps_per_epoch
    lambdas = [
        warmup_cosine(total, warmup_steps(total))
        if g["layer_group"] == HEAD
        else warmup_cosine(total, warmup_steps(total - backbone_start), backbone_start)
        for g in optimizer.param_groups
    ]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)
