"""One pass over batches (train or evaluate), and the frozen part's codes for the cached probe."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from vgg_deploy.finetune.devices import autocast_context


@dataclass
class EpochStats:
    loss: float
    top1: float
    top5: float
    images: int
    seconds: float


def _topk_correct(logits: torch.Tensor, labels: torch.Tensor, k: int) -> int:
    k = min(k, logits.shape[1])
    return int((logits.topk(k, dim=1).indices == labels[:, None]).any(dim=1).sum())


def run_epoch(
    forward: Callable[[torch.Tensor], torch.Tensor],
    batches: Iterable,
    *,
    loss_fn: nn.Module,
    device: torch.device,
    precision: str,
    channels_last: bool,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler=None,
    scaler: torch.amp.GradScaler | None = None,
    on_step: Callable[[int, float, float], None] | None = None,
    teacher: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> EpochStats:
    """One pass. With an optimizer it trains; without, it evaluates under no_grad. With a teacher (distillation),
    the loss is `loss_fn(logits, labels, teacher's logits)`."""
    training = optimizer is not None
    start = time.perf_counter()
    total_loss, correct1, correct5, seen = 0.0, 0, 0, 0
    grad_mode = contextlib.nullcontext() if training else torch.no_grad()
    with grad_mode:
        for inputs, labels in batches:
            inputs = inputs.to(device, non_blocking=True)
            if channels_last and inputs.ndim == 4:
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            labels = labels.to(device, non_blocking=True)
            with autocast_context(precision, device):
                logits = forward(inputs)
                if teacher is not None:
                    with torch.no_grad():
                        teacher_logits = teacher(inputs)
            if teacher is not None:
                loss = loss_fn(logits.float(), labels, teacher_logits.float())
            else:
                loss = loss_fn(logits.float(), labels)
            if training:
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    loss.backward()
                    optimizer.step()
                if scheduler is not None:
                    scheduler.step()
            n = labels.shape[0]
            total_loss += float(loss.detach()) * n
            correct1 += _topk_correct(logits.detach(), labels, 1)
            correct5 += _topk_correct(logits.detach(), labels, 5)
            seen += n
            if on_step is not None:
                on_step(n, total_loss / seen, correct1 / seen)
    seen = max(seen, 1)
    return EpochStats(total_loss / seen, correct1 / seen, correct5 / seen, seen, time.perf_counter() - start)
