"""Recovery after a prune step: the finetune loop on the source's own train split, every layer training,
distilling from the unpruned model; val picks the checkpoint, test is only reported."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from vgg_deploy import runfolder
from vgg_deploy.finetune import optimization
from vgg_deploy.finetune.cases import FC_HIDDEN, FC_LR_FACTOR, FreezePlan
from vgg_deploy.finetune.distributed import Distributed
from vgg_deploy.finetune.loop import LoopConfig, LoopData, TrainingLoop
from vgg_deploy.heads import CLASSIC, POOLED_HEAD
from vgg_deploy.model import GROUP_NAMES, HEAD
from vgg_deploy.prune.distill import DistillationLoss

if TYPE_CHECKING:
    from vgg_deploy.prune.pipeline import Pruning


def recovery_plan(lr: float, *, head: str = CLASSIC) -> FreezePlan:
    """Every layer trains: pruning changed them all. The head keeps its weights (it is not a new task). A pooled
    head's fc6 (the average) and fc7 (the identity) stay fixed: they were cut with conv5_3's channels."""
    fixed = FC_HIDDEN if head == POOLED_HEAD else ()
    trained = tuple(g for g in GROUP_NAMES if g not in fixed)
    rates = {g: lr * FC_LR_FACTOR if g in (*FC_HIDDEN, HEAD) else lr for g in trained}
    return FreezePlan(case="prune-recovery", frozen=(), trained=trained, reinitialised=(), lr=rates,
                      head_warmup_epochs=0, cache_features=False, from_scratch=False, head=head, fixed=fixed)


def recover(state: Pruning, model: nn.Module, widths: dict[str, int], step_dir: Path, index: int, *,
            resume: bool) -> None:
    """Train the pruned `model` in `step_dir` (a run folder of its own); `resume` continues an interrupted one."""
    c = state.config
    plan = recovery_plan(c.lr, head=state.source.head)
    model = model.to(state.device).to(memory_format=torch.channels_last)
    optimization.apply_freeze(model, plan)
    teacher = None
    loss_fn: nn.Module = state.hard_loss
    if c.distill:
        teacher = state.teacher.to(state.device).to(memory_format=torch.channels_last).eval()
        loss_fn = DistillationLoss(state.hard_loss, temperature=c.temperature, soft_weight=c.soft_weight)
    if not resume:
        shutil.copyfile(state.source.path / runfolder.SPLIT_JSON, step_dir / runfolder.SPLIT_JSON)
    base_info = step_model_info(state, widths, plan, index)
    loop = TrainingLoop(
        model=model, plan=plan, out=step_dir, base_info=base_info, dist=Distributed(), teacher=teacher,
        config=LoopConfig(epochs=c.epochs, batch_size=c.batch_size, seed=c.seed, patience=c.patience,
                          weight_decay=c.weight_decay, device=state.device, precision=state.precision,
                          workers=state.workers, start_is_candidate=True),
        data=LoopData(state.preprocessing, state.train_items, state.val_items, state.test_items),
        loss_fn=loss_fn, eval_loss_fn=nn.CrossEntropyLoss(),
    )
    loop.run(resume=resume)


def step_model_info(state: Pruning, widths: dict[str, int], plan: FreezePlan, index: int) -> dict:
    """A step's model.json, less the metrics the loop adds: the source's description with the new widths."""
    source_info = state.source.info
    info = {key: source_info[key] for key in ("arch", "num_classes", "class_names", "preprocessing", "head", "data")
            if key in source_info}
    info.update({
        "widths": widths,
        "case": source_info.get("case"),
        "plan": plan.to_dict(),
        "weights": {"source": str(state.source.path.resolve()), "pretrained": True, "pruned": True},
        "pruning": {"source_run": str(state.source.path.resolve()), "step": index, "steps": state.config.steps,
                    "criterion": state.config.criterion, "distill": state.config.distill,
                    "round_to": state.config.round_to},
        "training": {"device": state.device.type, "precision": state.precision, "channels_last": True},
        "versions": source_info.get("versions", {}),
    })
    return info
