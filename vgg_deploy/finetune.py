"""The finetune step: DATA (ImageFolder) -> RUN/ (weights, model.json, split, logs)."""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from vgg_deploy import cases, runfolder
from vgg_deploy.console import console, progress_bar
from vgg_deploy.data import ImageDataset, Split, build_split, class_weights
from vgg_deploy.errors import RunFolderError, VggDeployError
from vgg_deploy.fileio import atomic_path, check_writable_dir, read_json, write_json
from vgg_deploy.model import pretrained_vgg16, replace_head
from vgg_deploy.preprocessing import Preprocessing
from vgg_deploy import train as T


@dataclass
class FinetuneConfig:
    data: str
    out: str
    case: str = "auto"
    weights: str = "imagenet"
    image_size: int = 224
    epochs: int = 10
    batch_size: int = 32
    lr: float | None = None  # head learning rate; None picks 1e-3 (pretrained) or 3e-4 (from scratch)
    weight_decay: float = 1e-4
    val_split: float = 0.2
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    patience: int = 5
    skip_bad_images: bool = False
    workers: int | None = None


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _loader(items, transform, *, batch_size: int, shuffle: bool, workers: int, seed: int) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        ImageDataset(items, transform), batch_size=batch_size, shuffle=shuffle, num_workers=workers,
        generator=generator, persistent_workers=False,
    )


def _versions() -> dict:
    import torchvision

    from vgg_deploy import __version__

    return {"vgg_deploy": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__}


def _prepare_run_folder(config: FinetuneConfig, resume: bool) -> Path:
    out = check_writable_dir(config.out)
    if resume:
        if not (out / runfolder.RESUME_STATE).is_file():
            done = (out / runfolder.MODEL_JSON).is_file()
            raise RunFolderError(
                f"nothing to resume in {out}: " + ("the run already finished" if done else "no interrupted run there")
            )
    elif (out / runfolder.MODEL_JSON).is_file() or (out / runfolder.RESUME_STATE).is_file():
        raise RunFolderError(f"{out} already holds a run; pass --resume to continue it, or choose another --out")
    return out


def finetune(config: FinetuneConfig, *, resume: bool = False) -> dict:
    """Run the whole step; returns the model.json contents. On --resume the saved config wins."""
    out = _prepare_run_folder(config, resume)
    if resume:
        saved = read_json(out / runfolder.CONFIG_JSON)
        config = FinetuneConfig(**saved)
        console.print(f"resuming {out} with its saved configuration ({runfolder.CONFIG_JSON})")
    if config.case not in ("auto", *cases.CASES):
        raise VggDeployError(f"--case must be auto or one of {', '.join(cases.CASES)} (got {config.case!r})")
    device = T.resolve_device(config.device)
    precision = T.resolve_precision(config.precision, device)
    try:
        preprocessing = Preprocessing.for_image_size(config.image_size)
    except ValueError as err:
        raise VggDeployError(f"--image-size: {err}") from None
    _seed_everything(config.seed)
    workers = config.workers if config.workers is not None else min(4, max(0, (os.cpu_count() or 1) - 1))

    if resume:
        split = Split.from_dict(read_json(out / runfolder.SPLIT_JSON))
    else:
        split = build_split(Path(config.data), val_fraction=config.val_split, seed=config.seed,
                            skip_bad_images=config.skip_bad_images)
        write_json(out / runfolder.SPLIT_JSON, split.to_dict())
        if split.skipped:
            write_json(out / runfolder.SKIPPED_JSON, [asdict(b) for b in split.skipped])
        write_json(out / runfolder.CONFIG_JSON, asdict(config))
    train_counts = split.class_counts(split.train)
    console.print(
        f"data: {len(split.class_names)} classes, {len(split.train)} train / {len(split.val)} val images "
        f"({split.source} split)" + (f", {len(split.skipped)} bad image(s) skipped" if split.skipped else "")
    )

    model, weights_info = pretrained_vgg16(config.weights)
    pretrained = weights_info["pretrained"]
    train_items, val_items = split.absolute(split.train), split.absolute(split.val)

    if config.case == "auto":
        similarity = None
        if pretrained:
            from vgg_deploy.similarity import estimate_similarity

            similarity = estimate_similarity(
                model, train_items, transform=preprocessing.eval_transform(), device=device,
                imagenet_head=weights_info["imagenet_head"], seed=config.seed,
            )
        decision = cases.decide_case(train_counts=train_counts, pretrained=pretrained, similarity=similarity)
    else:
        size, size_reason = cases.decide_size(train_counts)
        reasons = [f"case chosen by --case {config.case}", size_reason]
        if not pretrained:
            reasons.append("warning: --weights none, so the 'pretrained' layers are random")
        decision = cases.CaseDecision(config.case, size, "unknown", reasons, {})
    for reason in decision.reasons:
        console.print(reason)

    head_lr = config.lr if config.lr is not None else (1e-3 if pretrained else 3e-4)
    plan = cases.plan_for_case(decision.case, head_lr=head_lr, pretrained=pretrained, epochs=config.epochs)
    console.print("plan:\n  " + "\n  ".join(plan.describe()))

    replace_head(model, len(split.class_names), seed=config.seed)
    model.to(device)
    channels_last = True  # VGG is all convolutions and GEMMs; channels-last helps oneDNN and cuDNN alike
    if channels_last:
        model.to(memory_format=torch.channels_last)
    T.apply_freeze(model, plan)

    weights = class_weights(train_counts).to(device)
    imbalance = max(train_counts) / max(1, min(train_counts))
    console.print(f"class balance: largest/smallest = {imbalance:.2f}; loss weighted by inverse class frequency")
    loss_fn = nn.CrossEntropyLoss(weight=weights)
    eval_loss_fn = nn.CrossEntropyLoss()

    base_info = {
        "arch": "vgg16",
        "num_classes": len(split.class_names),
        "class_names": split.class_names,
        "preprocessing": preprocessing.to_dict(),
        "case": decision.case,
        "case_decision": decision.to_dict(),
        "plan": plan.to_dict(),
        "weights": weights_info,
        "training": {"device": device.type, "precision": precision, "channels_last": channels_last,
                     "class_weights": [round(float(w), 4) for w in weights], "class_counts_train": train_counts,
                     "imbalance_ratio": round(imbalance, 3)},
        "data": {"root": split.root, "split_source": split.source, "train_images": len(split.train),
                 "val_images": len(split.val), "skipped_images": len(split.skipped)},
        "versions": _versions(),
    }

    loop = _TrainingLoop(
        model=model, plan=plan, config=config, out=out, device=device, precision=precision,
        channels_last=channels_last, loss_fn=loss_fn, eval_loss_fn=eval_loss_fn, workers=workers,
        preprocessing=preprocessing, train_items=train_items, val_items=val_items, base_info=base_info,
    )
    return loop.run(resume=resume)


class _TrainingLoop:
    def __init__(self, **kwargs):
        self.__dict__.update(kwargs)
        self.history: list[dict] = []
        self.best = {"top1": -1.0, "loss": float("inf"), "epoch": 0}
        self.stale_epochs = 0
        self.start_epoch = 0
        self.cache_seconds = 0.0  # feature extraction, charged to the first epoch run

    # -- batches ---------------------------------------------------------------------------------
    def _image_loaders(self):
        pp, c = self.preprocessing, self.config
        train = _loader(self.train_items, pp.train_transform(), batch_size=c.batch_size, shuffle=True,
                        workers=self.workers, seed=c.seed)
        val = _loader(self.val_items, pp.eval_transform(), batch_size=c.batch_size, shuffle=False,
                      workers=self.workers, seed=c.seed)
        return train, val

    def _cached_loaders(self):
        """small-similar: conv1..fc7 are frozen and deterministic, so they run once; epochs then cost only fc8."""
        started = time.perf_counter()
        pp, c = self.preprocessing, self.config
        kw = dict(device=self.device, precision=self.precision, channels_last=self.channels_last)
        eval_t = pp.eval_transform()
        train_codes = T.extract_fc7(self.model, _loader(self.train_items, eval_t, batch_size=c.batch_size,
                                                         shuffle=False, workers=self.workers, seed=c.seed), **kw)
        val_codes = T.extract_fc7(self.model, _loader(self.val_items, eval_t, batch_size=c.batch_size,
                                                       shuffle=False, workers=self.workers, seed=c.seed), **kw)
        # Standardise the codes so the probe trains well whatever their scale; folded back into fc8 on save.
        codes = train_codes[0]
        std = codes.std(dim=0)
        # Codes (near-)constant on the training set carry nothing to learn from; leave their scale alone.
        self.code_mean, self.code_std = codes.mean(dim=0), torch.where(std > 1e-3 * std.max(), std, torch.ones_like(std))
        standardise = lambda c: (c - self.code_mean) / self.code_std  # noqa: E731
        generator = torch.Generator().manual_seed(c.seed)
        train = DataLoader(TensorDataset(standardise(train_codes[0]), train_codes[1]), batch_size=c.batch_size,
                           shuffle=True, generator=generator)
        val = DataLoader(TensorDataset(standardise(val_codes[0]), val_codes[1]), batch_size=max(c.batch_size, 256))
        self.cache_seconds = time.perf_counter() - started
        console.print(f"cached fc7 codes of {len(codes)} train + {len(val_codes[0])} val images in {self.cache_seconds:.1f}s")
        return train, val

    # -- checkpoints -----------------------------------------------------------------------------
    def _trained_state(self) -> dict:
        trained = {n for g in self.plan.trained for n in _group_param_names(self.model, g)}
        return {k: v.detach().cpu() for k, v in self.model.state_dict().items() if k in trained}

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

    def _save_best(self, val: T.EpochStats, epoch: int) -> None:
        overrides = {}
        if self.plan.cache_features:
            head = self.model.classifier[6]
            weight = head.weight.detach() / self.code_std.to(head.weight.device)
            overrides = {"classifier.6.weight": weight,
                         "classifier.6.bias": head.bias.detach() - weight @ self.code_mean.to(weight.device)}
        runfolder.save_weights(self.model, self.out / runfolder.WEIGHTS, overrides=overrides)
        info = dict(self.base_info)
        info["metrics"] = {"val": {"top1": val.top1, "top5": val.top5, "loss": val.loss}, "epoch": epoch}
        runfolder.write_model_json(self.out, info)

    # -- the loop --------------------------------------------------------------------------------
    def run(self, *, resume: bool) -> dict:
        c, plan, model = self.config, self.plan, self.model
        train_batches, val_batches = self._cached_loaders() if plan.cache_features and not resume else (None, None)
        steps_per_epoch = len(train_batches) if train_batches is not None else -(-len(self.train_items) // c.batch_size)
        optimizer = T.build_optimizer(model, plan, weight_decay=c.weight_decay)
        scheduler = T.build_scheduler(optimizer, plan, steps_per_epoch=steps_per_epoch, epochs=c.epochs)
        scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None
        if resume:
            self._load_resume(optimizer, scheduler)
            if plan.cache_features:
                train_batches, val_batches = self._cached_loaders()
        if plan.cache_features:
            head = model.classifier[6]
            forward, set_mode, channels_last = head, head.train, False
        else:
            train_batches, val_batches = self._image_loaders()
            forward, set_mode, channels_last = model, (lambda: T.set_train_mode(model, plan)), self.channels_last
        common = dict(loss_fn=self.loss_fn, device=self.device, precision=self.precision, channels_last=channels_last)

        for epoch in range(self.start_epoch + 1, c.epochs + 1):
            in_head_warmup = epoch <= plan.head_warmup_epochs
            for g in plan.trained:
                for p in _group_params(model, g):
                    p.requires_grad_(g == "fc8" or not in_head_warmup)
            set_mode()
            with progress_bar() as bar:
                task = bar.add_task(f"epoch {epoch}/{c.epochs}", total=steps_per_epoch * c.batch_size, metrics="")

                def on_step(n, loss, acc):
                    bar.update(task, advance=n, metrics=f"loss {loss:.3f} acc {acc:.3f}")

                train_stats = T.run_epoch(forward, train_batches, optimizer=optimizer, scheduler=scheduler,
                                          scaler=scaler, on_step=on_step, **common)
            model.eval()
            val_stats = T.run_epoch(forward, val_batches, **{**common, "loss_fn": self.eval_loss_fn})
            improved = (val_stats.top1, -val_stats.loss) > (self.best["top1"], -self.best["loss"])
            record = {"epoch": epoch, "train_loss": train_stats.loss, "train_top1": train_stats.top1,
                      "val_loss": val_stats.loss, "val_top1": val_stats.top1, "val_top5": val_stats.top5,
                      "seconds": train_stats.seconds + val_stats.seconds + self.cache_seconds,
                      "train_images_per_s": train_stats.images / max(train_stats.seconds, 1e-9),
                      "lr_head": optimizer.param_groups[-1]["lr"], "head_only": in_head_warmup, "best": improved}
            self.cache_seconds = 0.0
            self.history.append(record)
            _append_jsonl(self.out / runfolder.EPOCH_LOG, record)
            console.print(
                f"epoch {epoch}: train loss {train_stats.loss:.3f} acc {train_stats.top1:.3f} | val loss "
                f"{val_stats.loss:.3f} top-1 {val_stats.top1:.3f} top-5 {val_stats.top5:.3f} | "
                f"{record['seconds']:.1f}s" + (" *" if improved else "")
            )
            if improved:
                self.best = {"top1": val_stats.top1, "loss": val_stats.loss, "epoch": epoch}
                self.stale_epochs = 0
                self._save_best(val_stats, epoch)
            else:
                self.stale_epochs += 1
            self._save_resume(epoch, optimizer, scheduler)
            if self.stale_epochs >= c.patience and not in_head_warmup:
                console.print(f"early stop: no val top-1 gain for {c.patience} epochs")
                break

        from vgg_deploy.plots import plot_learning_curves

        plot_learning_curves(self.history, self.out / runfolder.CURVES_PNG)
        (self.out / runfolder.RESUME_STATE).unlink(missing_ok=True)
        info = read_json(self.out / runfolder.MODEL_JSON)
        console.print(
            f"kept epoch {self.best['epoch']}: val top-1 {info['metrics']['val']['top1']:.3f}, "
            f"top-5 {info['metrics']['val']['top5']:.3f} -> {self.out / runfolder.WEIGHTS}"
        )
        return info


def _group_params(model: nn.Module, group: str):
    from vgg_deploy.model import group_parameters

    return group_parameters(model, group)


def _group_param_names(model: nn.Module, group: str) -> set[str]:
    ids = {id(p) for p in _group_params(model, group)}
    return {name for name, p in model.named_parameters() if id(p) in ids}


def _append_jsonl(path: Path, record: dict) -> None:
    with open(path, "a") as handle:
        handle.write(json.dumps(record) + "\n")
