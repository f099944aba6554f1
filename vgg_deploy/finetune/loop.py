"""Epochs, validation, checkpoints and resume for one finetune run; DDP-aware (rank 0 alone writes).

val chooses the kept checkpoint and early stopping; the test split is evaluated once, on the kept
checkpoint, and only reported."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from vgg_deploy import runfolder
from vgg_deploy.console import console, progress_bar
from vgg_deploy.fileio import atomic_path, read_json, write_json
from vgg_deploy.finetune import optimization
from vgg_deploy.finetune.distributed import Distributed
from vgg_deploy.finetune.epoch import EpochStats, run_epoch
from vgg_deploy.finetune.loaders import RunBatches, eval_loader
from vgg_deploy.model import HEAD, fold_batch_norm, group_parameters, has_batch_norm
from vgg_deploy.preprocessing import Preprocessing


def _append_jsonl(path: Path, record: dict) -> None:
    with open(path, "a") as handle:
        handle.write(json.dumps(record) + "\n")


@dataclass(frozen=True)
class LoopConfig:
    """How the loop trains: what finetune and prune each resolve from their own configuration."""

    epochs: int
    batch_size: int  # global: split across ranks under torchrun
    seed: int
    patience: int
    weight_decay: float
    device: torch.device
    precision: str
    workers: int
    channels_last: bool = True
    resume_state: bool = True  # write resume.pt after each epoch but the last
    # Epoch 0: the starting model, evaluated on val and kept unless an epoch of training beats it (auto's probe
    # does this by its plan; prune's recovery asks for it, so a step never ships below its pruned start).
    start_is_candidate: bool = False


@dataclass(frozen=True)
class LoopData:
    preprocessing: Preprocessing
    train_items: list
    val_items: list
    test_items: list


@dataclass
class _Steps:
    """What one run's epochs share: its batches, the module trained (fc8 alone on cached codes) and how."""

    train_batches: DataLoader
    val_batches: DataLoader
    target: nn.Module
    forward: nn.Module  # the target, wrapped in DDP under torchrun
    set_mode: Callable[[], None]
    optimizer: torch.optim.Optimizer
    scheduler: object
    scaler: torch.amp.GradScaler | None
    patience_from: int
    common: dict


class TrainingLoop:
    """`teacher`: distillation (prune's recovery); the training loss then takes the teacher's logits too.
    `base_info`: model.json less the metrics, which the loop adds for the kept checkpoint."""

    def __init__(self, *, model, plan, config: LoopConfig, data: LoopData, out: Path, loss_fn, eval_loss_fn,
                 base_info: dict, dist: Distributed, teacher: nn.Module | None = None):
        self.model, self.plan, self.config, self.data, self.out = model, plan, config, data, out
        self.loss_fn, self.eval_loss_fn, self.teacher = loss_fn, eval_loss_fn, teacher
        self.base_info, self.dist = base_info, dist
        self.device, self.precision = config.device, config.precision
        self.history: list[dict] = []
        self.best = {"top1": -1.0, "loss": float("inf"), "epoch": 0}
        self.stale_epochs = 0
        self.start_epoch = 0
        self.batches = RunBatches(data=data, dist=dist, seed=config.seed, batch_size=config.batch_size,
                                  workers=config.workers, channels_last=config.channels_last)
        self.shards: list = []  # under torchrun: each rank's first-epoch training indices, for distributed.json

    # -- checkpoints (rank 0) --------------------------------------------------------------------
    def _trained_state(self) -> dict:
        """Trained parameters and every buffer (BatchNorm's running statistics train too)."""
        trained = {id(p) for g in self.plan.trained for p in group_parameters(self.model, g)}
        names = {n for n, p in self.model.named_parameters() if id(p) in trained}
        names |= {n for n, _ in self.model.named_buffers()}
        return {k: v.detach().cpu() for k, v in self.model.state_dict().items() if k in names}

    def _save_resume(self, epoch: int, optimizer, scheduler) -> None:
        state = {"epoch": epoch, "model": self._trained_state(), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "best": self.best, "stale_epochs": self.stale_epochs,
                 "history": self.history, "torch_rng": torch.random.get_rng_state()}
        with atomic_path(self.out / runfolder.RESUME_STATE) as tmp:
            torch.save(state, tmp)

    def _load_resume(self, optimizer, scheduler) -> None:
        state = torch.load(self.out / runfolder.RESUME_STATE, map_location="cpu", weights_only=True)
        self.model.load_state_dict(state["model"], strict=False)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        self.best, self.stale_epochs, self.history = state["best"], state["stale_epochs"], state["history"]
        self.start_epoch = state["epoch"]
        torch.random.set_rng_state(state["torch_rng"])
        console.print(f"resumed after epoch {self.start_epoch} (best val top-1 {self.best['top1']:.3f})")

    def _save_best(self, val: EpochStats, epoch: int) -> None:
        """model.safetensors is always a plain torchvision VGG16: BatchNorm folded into the convs, the probe's
        standardisation folded into fc8 (the model being trained is left as it is)."""
        model = fold_batch_norm(self.model) if has_batch_norm(self.model) else self.model
        standardiser = self.batches.standardiser
        overrides = standardiser.fold(self.model.classifier[6]) if standardiser is not None else None
        runfolder.save_weights(model, self.out / runfolder.WEIGHTS, overrides=overrides)
        info = dict(self.base_info)
        info["metrics"] = {"val": {"top1": val.top1, "top5": val.top5, "loss": val.loss}, "epoch": epoch}
        runfolder.write_model_json(self.out, info)

    def _global(self, stats: EpochStats) -> EpochStats:
        """Metrics over every rank's images, not rank 0's shard."""
        n, loss, top1, top5 = self.dist.sum([stats.images, stats.loss * stats.images, stats.top1 * stats.images,
                                             stats.top5 * stats.images])
        n = max(n, 1)
        return EpochStats(loss / n, top1 / n, top5 / n, int(n), stats.seconds)

    # -- the loop --------------------------------------------------------------------------------
    def run(self, *, resume: bool) -> dict:
        steps = self._setup()
        if resume:
            self._load_resume(steps.optimizer, steps.scheduler)
        if self._start_is_candidate and not resume:
            self._start_epoch(steps.target, steps.val_batches, steps.common)
        for epoch in range(self.start_epoch + 1, self.config.epochs + 1):
            if self._epoch(epoch, steps):
                console.print(f"early stop: no val top-1 gain for {self.config.patience} epochs")
                break
        return self._finish(self.shards)

    def _setup(self) -> _Steps:
        c, plan, model = self.config, self.plan, self.model
        if plan.cache_features:
            train_batches, val_batches = self.batches.cached_codes(model, device=self.device,
                                                                   head_is_probe=plan.head_init == "probe")
            target = model.classifier[6]
            set_mode, channels_last = target.train, False
        else:
            train_batches, val_batches = self.batches.images()
            target = model
            set_mode, channels_last = (lambda: optimization.set_train_mode(model, plan)), c.channels_last
        forward = target
        if self.dist.enabled:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            forward = nn.parallel.DistributedDataParallel(target, device_ids=device_ids)
        steps_per_epoch = len(train_batches)
        optimizer = optimization.build_optimizer(model, plan, weight_decay=c.weight_decay)
        return _Steps(
            train_batches=train_batches, val_batches=val_batches, target=target, forward=forward, set_mode=set_mode,
            optimizer=optimizer,
            scheduler=optimization.build_scheduler(optimizer, plan, steps_per_epoch=steps_per_epoch, epochs=c.epochs),
            scaler=torch.amp.GradScaler("cuda") if self.precision == "fp16" else None,
            patience_from=optimization.warmup_epochs(plan, steps_per_epoch=steps_per_epoch, epochs=c.epochs),
            common=dict(loss_fn=self.loss_fn, device=self.device, precision=self.precision, channels_last=channels_last),
        )

    def _epoch(self, epoch: int, steps: _Steps) -> bool:
        """One epoch of training and validation, its record and checkpoints; True when training stops early."""
        c, plan, dist = self.config, self.plan, self.dist
        in_head_warmup = epoch <= plan.head_warmup_epochs
        if not dist.enabled:
            # LP-FT: the scheduler already holds the backbone's rate at 0; skipping its gradients saves the
            # compute. (DDP needs a fixed set of gradients, so there the zero rate alone does the work.)
            for g in plan.trained:
                for p in group_parameters(self.model, g):
                    p.requires_grad_(g == HEAD or not in_head_warmup)
        self.batches.start_epoch(epoch)
        if self.batches.train_sampler is not None and not self.shards:
            self.shards = dist.gather(list(self.batches.train_sampler))
        steps.set_mode()
        train_stats = self._train_one_epoch(epoch, steps)
        self.model.eval()
        val_stats = self._global(run_epoch(steps.target, steps.val_batches,
                                           **{**steps.common, "loss_fn": self.eval_loss_fn}))
        improved = (val_stats.top1, -val_stats.loss) > (self.best["top1"], -self.best["loss"])
        record = {"epoch": epoch, "train_loss": train_stats.loss, "train_top1": train_stats.top1,
                  "val_loss": val_stats.loss, "val_top1": val_stats.top1, "val_top5": val_stats.top5,
                  "seconds": train_stats.seconds + val_stats.seconds + self.batches.cache_seconds,
                  "train_images": train_stats.images,
                  "train_images_per_s": train_stats.images / max(train_stats.seconds, 1e-9),
                  "lr_head": steps.optimizer.param_groups[-1]["lr"], "head_only": in_head_warmup, "best": improved}
        self.batches.cache_seconds = 0.0  # feature extraction, charged to the first epoch run
        self.history.append(record)
        console.print(
            f"epoch {epoch}: train loss {train_stats.loss:.3f} acc {train_stats.top1:.3f} | val loss "
            f"{val_stats.loss:.3f} top-1 {val_stats.top1:.3f} top-5 {val_stats.top5:.3f} | "
            f"{record['seconds']:.1f}s" + (" *" if improved else "")
        )
        if improved:
            self.best = {"top1": val_stats.top1, "loss": val_stats.loss, "epoch": epoch}
            self.stale_epochs = 0
        else:
            self.stale_epochs += 1
        # Never while epoch 0 (the starting model) is still the best: training has not yet had its schedule.
        stopping_early = self.stale_epochs >= c.patience and epoch > steps.patience_from and self.best["epoch"] != 0
        if dist.is_main:
            _append_jsonl(self.out / runfolder.EPOCH_LOG, record)
            if improved:
                self._save_best(val_stats, epoch)
            if c.resume_state and epoch < c.epochs and not stopping_early:
                # Not after the last epoch: the run finishes a moment later and deletes it, and for a full
                # fine-tune it is the model plus two AdamW moments, about 1.6 GB written for nothing.
                self._save_resume(epoch, steps.optimizer, steps.scheduler)
        return stopping_early

    def _train_one_epoch(self, epoch: int, steps: _Steps) -> EpochStats:
        with progress_bar() as bar:
            task = bar.add_task(f"epoch {epoch}/{self.config.epochs}",
                                total=len(steps.train_batches) * self.batches.per_rank_batch, metrics="")

            def on_step(n, loss, acc):
                bar.update(task, advance=n, metrics=f"loss {loss:.3f} acc {acc:.3f}")

            return self._global(run_epoch(steps.forward, steps.train_batches, optimizer=steps.optimizer,
                                          scheduler=steps.scheduler, scaler=steps.scaler, on_step=on_step,
                                          teacher=self.teacher, **steps.common))

    @property
    def _start_is_candidate(self) -> bool:
        return self.plan.head_init == "probe" or self.config.start_is_candidate

    @property
    def _start_name(self) -> str:
        return "auto's probe" if self.plan.head_init == "probe" else "the starting model"

    def _start_epoch(self, target, val_batches, common: dict) -> None:
        """Epoch 0: the model as it starts (auto's probe: the head fitted, nothing else moved; prune: the pruned
        model before recovery), kept on val unless an epoch of training beats it."""
        self.model.eval()
        val = self._global(run_epoch(target, val_batches, **{**common, "loss_fn": self.eval_loss_fn}))
        record = {"epoch": 0, "val_loss": val.loss, "val_top1": val.top1, "val_top5": val.top5,
                  "seconds": val.seconds, "start": True, "best": True, **({"probe": True} if self.plan.head_init == "probe" else {})}
        self.history.append(record)
        self.best = {"top1": val.top1, "loss": val.loss, "epoch": 0}
        console.print(f"epoch 0 ({self._start_name}): val loss {val.loss:.3f} top-1 {val.top1:.3f} "
                      f"top-5 {val.top5:.3f} *")
        if self.dist.is_main:
            _append_jsonl(self.out / runfolder.EPOCH_LOG, record)
            self._save_best(val, 0)

    def _test_metrics(self) -> dict:
        """The kept checkpoint, as saved (plain VGG16, FP32), on the test split: reported, never used to decide."""
        kept = runfolder.load_weights(self.out / runfolder.WEIGHTS, num_classes=self.model.classifier[6].out_features,
                                      widths=self.base_info.get("widths"))
        loader = eval_loader(self.data.test_items, self.data.preprocessing.eval_transform(),
                              batch_size=self.batches.per_rank_batch, workers=self.config.workers)
        stats = run_epoch(kept.to(self.device), loader, loss_fn=self.eval_loss_fn, device=self.device,
                            precision="fp32", channels_last=False)
        return {"top1": stats.top1, "top5": stats.top5, "loss": stats.loss, "images": stats.images}

    def _finish(self, shards: list) -> dict:
        def write():
            from vgg_deploy.plots import plot_learning_curves

            if self.dist.enabled:
                write_json(self.out / runfolder.DISTRIBUTED_JSON, {
                    "world_size": self.dist.world_size, "backend": self.dist.backend,
                    "per_rank_batch_size": self.batches.per_rank_batch,
                    "epoch1_train_indices": [{"rank": r, "indices": list(map(int, s))} for r, s in enumerate(shards)],
                })
            info = read_json(self.out / runfolder.MODEL_JSON)
            if self.data.test_items and "test" not in info["metrics"]:
                info["metrics"]["test"] = self._test_metrics()
                runfolder.write_model_json(self.out, info)
            plot_learning_curves(self.history, self.out / runfolder.CURVES_PNG)
            (self.out / runfolder.RESUME_STATE).unlink(missing_ok=True)
            return info

        info = self.dist.on_main(write)
        test = info["metrics"].get("test")
        if self.best["epoch"] == 0:
            console.print(f"no trained epoch beat {self._start_name} on val: it is the kept model")
        console.print(
            f"kept epoch {self.best['epoch']}: val top-1 {info['metrics']['val']['top1']:.3f}, "
            f"top-5 {info['metrics']['val']['top5']:.3f}"
            + (f"; test top-1 {test['top1']:.3f} on {test['images']} images (reported only)" if test else "")
            + f" -> {self.out / runfolder.WEIGHTS}"
        )
        return info
