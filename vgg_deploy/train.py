"""The training loop: frozen layers out of the optimizer, mixed precision, cached features, resume."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from vgg_deploy.cases import FreezePlan
from vgg_deploy.errors import VggDeployError
from vgg_deploy.model import GROUP_NAMES, HEAD, group_modules, group_parameters


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise VggDeployError("--device cuda asked for, but torch sees no CUDA GPU on this machine")
    if device not in ("cpu", "cuda"):
        raise VggDeployError(f"--device must be auto, cpu or cuda (got {device!r})")
    return torch.device(device)


def cpu_has_native_bf16() -> bool:
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(check() for check in checks if check is not None)


def resolve_precision(precision: str, device: torch.device) -> str:
    """auto: bf16/fp16 autocast on CUDA, bf16 on CPUs that have it natively, else fp32."""
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16" if cpu_has_native_bf16() else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise VggDeployError("--precision fp16 needs --device cuda; on CPU use bf16 or fp32")
    if precision not in ("fp32", "bf16", "fp16"):
        raise VggDeployError(f"--precision must be auto, fp32, bf16 or fp16 (got {precision!r})")
    return precision


def autocast_context(precision: str, device: torch.device):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def apply_freeze(model: nn.Module, plan: FreezePlan) -> None:
    for group in GROUP_NAMES:
        for param in group_parameters(model, group):
            param.requires_grad_(group in plan.trained)


def set_train_mode(model: nn.Module, plan: FreezePlan) -> None:
    """Trained layers in train mode; frozen ones (and their dropout) in eval mode."""
    model.train()
    for group in plan.frozen:
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


def build_scheduler(
    optimizer: torch.optim.Optimizer, plan: FreezePlan, *, steps_per_epoch: int, epochs: int
) -> torch.optim.lr_scheduler.LambdaLR:
    total = steps_per_epoch * epochs
    head_warmup = min(steps_per_epoch, max(1, total // 10))
    backbone_start = plan.head_warmup_epochs * steps_per_epoch
    lambdas = [
        warmup_cosine(total, head_warmup)
        if g["layer_group"] == HEAD
        else warmup_cosine(total, min(steps_per_epoch, max(1, (total - backbone_start) // 10)), backbone_start)
        for g in optimizer.param_groups
    ]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)


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
) -> EpochStats:
    """One pass. With an optimizer it trains; without, it evaluates under no_grad."""
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


@torch.no_grad()
def extract_fc7(model: nn.Module, batches: Iterable, *, device: torch.device, precision: str, channels_last: bool):
    """Outputs of everything below fc8 (conv1..fc7, eval mode), with their labels."""
    model.eval()
    below_head = nn.Sequential(model.features, model.avgpool, nn.Flatten(1), model.classifier[:6])
    codes, labels = [], []
    for inputs, y in batches:
        inputs = inputs.to(device)
        if channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        with autocast_context(precision, device):
            codes.append(below_head(inputs).float().cpu())
        labels.append(y)
    return torch.cat(codes), torch.cat(labels)
