"""Epochs, validation, checkpoints and resume for one finetune run; DDP-aware (rank 0 alone writes).

val chooses the kept checkpoint and early stopping; the test split is evaluated once, on the kept
checkpoint, and only reported."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from vgg_deploy import runfolder
from vgg_deploy.console import console, progress_bar
from vgg_deploy.data import ImageDataset
from vgg_deploy.fileio import atomic_path, read_json, write_json
from vgg_deploy.finetune import optimization
from vgg_deploy.finetune.distributed import Distributed
from vgg_deploy.finetune.epoch import EpochStats, run_epoch
from vgg_deploy.finetune.probe import Standardiser, extract_codes
from vgg_deploy.model import HEAD, fold_batch_norm, group_parameters, has_batch_norm


def _eval_loader(items, transform, *, batch_size: int, workers: int) -> DataLoader:
    return DataLoader(ImageDataset(items, transform), batch_size=batch_size, shuffle=False, num_workers=workers)


def _append_jsonl(path: Path, record: dict) -> None:
    with open(path, "a") as handle:
        handle.write(json.dumps(record) + "\n")


class TrainingLoop:
    def __init__(self, *, model, plan, config, out: Path, device, precision, channels_last, loss_fn, eval_loss_fn,
                 workers, preprocessing, train_items, val_items, test_items, base_info, dist: Distributed,
                 teacher: nn.Module | None = None):
        self.model, self.plan, self.config, self.out = model, plan, config, out
        self.device, self.precision, self.channels_last = device, precision, channels_last
        self.loss_fn, self.eval_loss_fn, self.workers = loss_fn, eval_loss_fn, workers
        self.preprocessing, self.base_info, self.dist = preprocessing, base_info, dist
        self.teacher = teacher  # distillation (prune's recovery): training loss_fn takes the teacher's logits too
        self.train_items, self.val_items, self.test_items = train_items, val_items, test_items
        self.per_rank_batch = config.batch_size // dist.world_size
        self.history: list[dict] = []
        self.best = {"top1": -1.0, "loss": float("inf"), "epoch": 0}
        self.stale_epochs = 0
        self.start_epoch = 0
        self.cache_seconds = 0.0  # feature extraction, charged to the first epoch run
        self.train_sampler: DistributedSampler | None = None
        self.shuffle_generator = torch.Generator()
        self.standardiser: Standardiser | None = None

    # -- batches ---------------------------------------------------------------------------------
    def _train_loader(self, dataset, *, workers: int = 0) -> DataLoader:
        """Each rank a disjoint shard; the tail that does not divide evenly rotates out by epoch. The
        order is a function of (seed, epoch) alone, so a resumed run sees the batches an unbroken one would."""
        sampler = None
        if self.dist.enabled:
            sampler = self.train_sampler = DistributedSampler(
                dataset, num_replicas=self.dist.world_size, rank=self.dist.rank, shuffle=True,
                seed=self.config.seed, drop_last=True)
        return DataLoader(dataset, batch_size=self.per_rank_batch, sampler=sampler, shuffle=sampler is None,
                          num_workers=workers, generator=self.shuffle_generator)

    def _image_loaders(self):
        pp, dist = self.preprocessing, self.dist
        train = self._train_loader(ImageDataset(self.train_items, pp.train_transform()), workers=self.workers)
        val = _eval_loader(self.val_items[dist.rank :: dist.world_size], pp.eval_transform(),
                           batch_size=self.per_rank_batch, workers=self.workers)
        return train, val

    def _cached_loaders(self):
        """small-similar: conv1..fc7 run once; epochs then cost only fc8. Under torchrun each rank extracts
        its own shard; the codes are then shared."""
        started = time.perf_counter()
        dist, eval_t = self.dist, self.preprocessing.eval_transform()

        def codes_of(items):
            shard = items[dist.rank :: dist.world_size]
            loader = _eval_loader(shard, eval_t, batch_size=self.per_rank_batch, workers=self.workers)
            return extract_codes(self.model, loader, device=self.device, channels_last=self.channels_last)

        local_train, val_codes = codes_of(self.train_items), codes_of(self.val_items)
        train_codes = (dist.all_gather_tensor(local_train[0]), dist.all_gather_tensor(local_train[1]))
        # Standardised so the probe trains well whatever the codes' scale; folded back into fc8 on save.
        self.standardiser = standardise = Standardiser.fit(train_codes[0])
        if self.plan.head_init == "probe":
            standardise.unfold(self.model.classifier[6])  # the probe, fitted on raw codes, now on standardised ones
        train = self._train_loader(TensorDataset(standardise(train_codes[0]), train_codes[1]))
        val = DataLoader(TensorDataset(standardise(val_codes[0]), val_codes[1]),
                         batch_size=max(self.config.batch_size, 256))
        self.cache_seconds = time.perf_counter() - started
        console.print(f"cached FP32 fc7 codes of {len(train_codes[0])} train + {len(self.val_items)} val images "
                      f"in {self.cache_seconds:.1f}s")
        return train, val

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
        overrides = self.standardiser.fold(self.model.classifier[6]) if self.standardiser is not None else None
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
        c, plan, model, dist = self.config, self.plan, self.model, self.dist
        if plan.cache_features:
            train_batches, val_batches = self._cached_loaders()
            target = model.classifier[6]
            set_mode, channels_last = target.train, False
        else:
            train_batches, val_batches = self._image_loaders()
            target = model
            set_mode, channels_last = (lambda: optimization.set_train_mode(model, plan)), self.channels_last
        forward = target
        if dist.enabled:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            forward = nn.parallel.DistributedDataParallel(target, device_ids=device_ids)
        steps_per_epoch = len(train_batches)
        optimizer = optimization.build_optimizer(model, plan, weight_decay=c.weight_decay)
        scheduler = optimization.build_scheduler(optimizer, plan, steps_per_epoch=steps_per_epoch, epochs=c.epochs)
        patience_from = optimization.warmup_epochs(plan, steps_per_epoch=steps_per_epoch, epochs=c.epochs)
        scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None
        if resume:
            self._load_resume(optimizer, scheduler)
        common = dict(loss_fn=self.loss_fn, device=self.device, precision=self.precision, channels_last=channels_last)
        shards: list = []
        if plan.head_init == "probe" and not resume:
            self._probe_epoch(target, val_batches, common)

        for epoch in range(self.start_epoch + 1, c.epochs + 1):
            in_head_warmup = epoch <= plan.head_warmup_epochs
            if not dist.enabled:
                # LP-FT: the scheduler already holds the backbone's rate at 0; skipping its gradients saves the
                # compute. (DDP needs a fixed set of gradients, so there the zero rate alone does the work.)
                for g in plan.trained:
                    for p in group_parameters(model, g):
                        p.requires_grad_(g == HEAD or not in_head_warmup)
            self.shuffle_generator.manual_seed(c.seed * 100_003 + epoch)
            if self.train_sampler is not None:
                self.train_sampler.set_epoch(epoch)
                if not shards:
                    shards = dist.gather(list(self.train_sampler))
            set_mode()
            with progress_bar() as bar:
                task = bar.add_task(f"epoch {epoch}/{c.epochs}", total=steps_per_epoch * self.per_rank_batch, metrics="")

                def on_step(n, loss, acc):
                    bar.update(task, advance=n, metrics=f"loss {loss:.3f} acc {acc:.3f}")

                train_stats = self._global(run_epoch(forward, train_batches, optimizer=optimizer, scheduler=scheduler,
                                                       scaler=scaler, on_step=on_step, teacher=self.teacher,
                                                       **common))
            model.eval()
            val_stats = self._global(run_epoch(target, val_batches, **{**common, "loss_fn": self.eval_loss_fn}))
            improved = (val_stats.top1, -val_stats.loss) > (self.best["top1"], -self.best["loss"])
            record = {"epoch": epoch, "train_loss": train_stats.loss, "train_top1": train_stats.top1,
                      "val_loss": val_stats.loss, "val_top1": val_stats.top1, "val_top5": val_stats.top5,
                      "seconds": train_stats.seconds + val_stats.seconds + self.cache_seconds,
                      "train_images": train_stats.images,
                      "train_images_per_s": train_stats.images / max(train_stats.seconds, 1e-9),
                      "lr_head": optimizer.param_groups[-1]["lr"], "head_only": in_head_warmup, "best": improved}
            self.cache_seconds = 0.0
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
            # Never while the probe (epoch 0) is still the best: the fine-tune has not yet had its schedule.
            stopping_early = self.stale_epochs >= c.patience and epoch > patience_from and self.best["epoch"] != 0
            if dist.is_main:
                _append_jsonl(self.out / runfolder.EPOCH_LOG, record)
                if improved:
                    self._save_best(val_stats, epoch)
                if epoch < c.epochs and not stopping_early:
                    # Not after the last epoch: the run finishes a moment later and deletes it, and for a full
                    # fine-tune it is the model plus two AdamW moments, about 1.6 GB written for nothing.
                    self._save_resume(epoch, optimizer, scheduler)
            if stopping_early:
                console.print(f"early stop: no val top-1 gain for {c.patience} epochs")
                break
        return self._finish(shards)

    def _probe_epoch(self, target, val_batches, common: dict) -> None:
        """Epoch 0: the model as auto's probe left it (the head fitted, nothing else moved), kept on val unless an
        epoch of training beats it, so a fine-tune is accepted only when it beats the probe."""
        self.model.eval()
        val = self._global(run_epoch(target, val_batches, **{**common, "loss_fn": self.eval_loss_fn}))
        record = {"epoch": 0, "val_loss": val.loss, "val_top1": val.top1, "val_top5": val.top5,
                  "seconds": val.seconds, "probe": True, "best": True}
        self.history.append(record)
        self.best = {"top1": val.top1, "loss": val.loss, "epoch": 0}
        console.print(f"epoch 0 (auto's probe): val loss {val.loss:.3f} top-1 {val.top1:.3f} top-5 {val.top5:.3f} *")
        if self.dist.is_main:
            _append_jsonl(self.out / runfolder.EPOCH_LOG, record)
            self._save_best(val, 0)

    def _test_metrics(self) -> dict:
        """The kept checkpoint, as saved (plain VGG16, FP32), on the test split: reported, never used to decide."""
        kept = runfolder.load_weights(self.out / runfolder.WEIGHTS, num_classes=self.model.classifier[6].out_features,
                                      widths=self.base_info.get("widths"))
        loader = _eval_loader(self.test_items, self.preprocessing.eval_transform(), batch_size=self.per_rank_batch,
                              workers=self.workers)
        stats = run_epoch(kept.to(self.device), loader, loss_fn=self.eval_loss_fn, device=self.device,
                            precision="fp32", channels_last=False)
        return {"top1": stats.top1, "top5": stats.top5, "loss": stats.loss, "images": stats.images}

    def _finish(self, shards: list) -> dict:
        def write():
            from vgg_deploy.plots import plot_learning_curves

            if self.dist.enabled:
                write_json(self.out / runfolder.DISTRIBUTED_JSON, {
                    "world_size": self.dist.world_size, "backend": self.dist.backend,
                    "per_rank_batch_size": self.per_rank_batch,
                    "epoch1_train_indices": [{"rank": r, "indices": list(map(int, s))} for r, s in enumerate(shards)],
                })
            info = read_json(self.out / runfolder.MODEL_JSON)
            if self.test_items and "test" not in info["metrics"]:
                info["metrics"]["test"] = self._test_metrics()
                runfolder.write_model_json(self.out, info)
            plot_learning_curves(self.history, self.out / runfolder.CURVES_PNG)
            (self.out / runfolder.RESUME_STATE).unlink(missing_ok=True)
            return info

        info = self.dist.on_main(write)
        test = info["metrics"].get("test")
        if self.best["epoch"] == 0:
            console.print("no fine-tuned epoch beat auto's probe on val: the probe is the kept model")
        console.print(
            f"kept epoch {self.best['epoch']}: val top-1 {info['metrics']['val']['top1']:.3f}, "
            f"top-5 {info['metrics']['val']['top5']:.3f}"
            + (f"; test top-1 {test['top1']:.3f} on {test['images']} images (reported only)" if test else "")
            + f" -> {self.out / runfolder.WEIGHTS}"
        )
        return info
