"""The finetune step: DATA (ImageFolder) -> RUN/ (weights, model.json, split, logs).

Runs in one process, or under torchrun with one process per device (rank 0 alone writes RUN/).
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from vgg_deploy import heads, runfolder
from vgg_deploy.console import console
from vgg_deploy.data import Split, build_split, class_weights
from vgg_deploy.errors import RunFolderError, VggDeployError
from vgg_deploy.fileio import check_writable_dir, read_json, write_json
from vgg_deploy.finetune import cases, depth_probes
from vgg_deploy.finetune import devices
from vgg_deploy.finetune import optimization
from vgg_deploy.finetune.distributed import Distributed, from_environment, shutdown
from vgg_deploy.finetune.loop import LoopConfig, LoopData, TrainingLoop
from vgg_deploy.heads import with_pooled_head
from vgg_deploy.model import new_vgg16, pretrained_vgg16, replace_head
from vgg_deploy.preprocessing import Preprocessing


@dataclass
class FinetuneConfig:
    data: str
    out: str
    case: str = "auto"
    weights: str = "imagenet"
    head: str = "auto"  # auto: pooled for a conv-only backbone, classic (torchvision's fc6-fc8) otherwise
    image_size: int = 224
    epochs: int = 10
    batch_size: int = 32  # global: split across ranks under torchrun
    lr: float | None = None  # head rate with pretrained weights (1e-3), conv rate from scratch (1e-4)
    weight_decay: float = 0.05  # AdamW's decoupled decay: shrinks weights by lr x this per step
    val_split: float = 0.2
    test_split: float = 0.2
    small_max_per_class: int = cases.SMALL_MAX_IMAGES_PER_CLASS  # --case auto: "small" below this many per class
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    patience: int = 5
    skip_bad_images: bool = False
    image_check: str = "cached"  # image_check.CHECK_MODES: cached (default), full, header
    workers: int | None = None
    # resume.pt after every epoch but the last, so --resume can continue an interrupted run: the trained
    # parameters and both AdamW moments, about 1.6 GB for a full VGG16. False: only the best checkpoint is written.
    resume_state: bool = True


def _versions() -> dict:
    import torchvision

    from vgg_deploy import __version__

    return {"vgg_deploy": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__}


def _why_no_resume_state(out: Path, done: bool) -> str:
    config_path = out / runfolder.CONFIG_JSON
    if config_path.is_file() and read_json(config_path).get("resume_state") is False:
        return "it was started with --no-resume-state, so no resume state was written"
    return "the run already finished" if done else "no interrupted run there"


def _prepare_run_folder(config: FinetuneConfig, resume: bool) -> Path:
    out = check_writable_dir(config.out)
    if resume:
        if not (out / runfolder.RESUME_STATE).is_file():
            done = (out / runfolder.MODEL_JSON).is_file()
            raise RunFolderError(f"nothing to resume in {out}: " + _why_no_resume_state(out, done))
    elif (out / runfolder.MODEL_JSON).is_file() or (out / runfolder.RESUME_STATE).is_file():
        raise RunFolderError(f"{out} already holds a run; pass --resume to continue it, or choose another --out")
    return out


def _make_split(config: FinetuneConfig, out: Path, resume: bool) -> Split:
    if resume:
        return Split.from_dict(read_json(out / runfolder.SPLIT_JSON))
    return build_split(Path(config.data), val_fraction=config.val_split, test_fraction=config.test_split,
                       seed=config.seed, skip_bad_images=config.skip_bad_images, image_check=config.image_check)


# Decided once, when the run starts, and saved beside the resolved configuration: --resume reuses them.
DECIDED_KEYS = ("case_decision", "head_init")


def _write_run_start(config: FinetuneConfig, out: Path, split: Split, decided: dict) -> None:
    """Written only once data, weights and the case are all known, so a failed start leaves RUN untouched.
    config.json is the resolved configuration (timm's args.yaml): no "auto" is left in it."""
    write_json(out / runfolder.SPLIT_JSON, split.to_dict())
    if split.skipped:
        write_json(out / runfolder.SKIPPED_JSON, [asdict(b) for b in split.skipped])
    write_json(out / runfolder.CONFIG_JSON, {**asdict(config), **decided})


def _saved_config(out: Path) -> tuple[FinetuneConfig, dict | None]:
    saved = read_json(out / runfolder.CONFIG_JSON)
    decided = {key: saved.pop(key) for key in DECIDED_KEYS if key in saved}
    return FinetuneConfig(**saved), (decided if len(decided) == len(DECIDED_KEYS) else None)


def finetune(config: FinetuneConfig, *, resume: bool = False) -> dict:
    """Run the whole step; returns the model.json contents. On --resume the saved config wins."""
    dist = from_environment(config.device)
    previously_quiet = console.quiet
    console.quiet = previously_quiet or not dist.is_main
    try:
        return _finetune(config, resume=resume, dist=dist)
    finally:
        console.quiet = previously_quiet
        shutdown(dist)


def _check_config(config: FinetuneConfig, dist: Distributed) -> None:
    if config.case not in ("auto", *cases.CASES):
        raise VggDeployError(f"--case must be auto or one of {', '.join(cases.CASES)} (got {config.case!r})")
    if config.batch_size % dist.world_size:
        raise VggDeployError(f"--batch-size {config.batch_size} (global) must divide by the {dist.world_size} processes")


def _device(config: FinetuneConfig, dist: Distributed) -> torch.device:
    device = devices.resolve_device(config.device)
    return torch.device("cuda", dist.local_rank) if device.type == "cuda" and dist.enabled else device


def _load_split(config: FinetuneConfig, out: Path, resume: bool, dist: Distributed) -> Split:
    # Checking a large folder can outlast a collective's timeout: the other ranks wait on a heartbeat.
    split = dist.on_main(lambda: _make_split(config, out, resume), waiting_for="its image check")
    console.print(
        f"data: {len(split.class_names)} classes, {len(split.train)} train / {len(split.val)} val / "
        f"{len(split.test)} test images "
        f"({split.source} split)" + (f", {len(split.skipped)} bad image(s) skipped" if split.skipped else "")
    )
    return split


def _load_backbone(config: FinetuneConfig, dist: Distributed) -> tuple[nn.Module, dict, Preprocessing, str]:
    if dist.enabled and config.weights == "imagenet":
        # Rank 0 fills torchvision's download cache first, so ranks do not race to write the same file.
        dist.on_main(lambda: bool(pretrained_vgg16(config.weights)))
    model, weights_info = pretrained_vgg16(config.weights)
    for line in _describe_weights(weights_info):
        console.print(line)
    try:
        preprocessing = Preprocessing.for_image_size(config.image_size, mean=weights_info["input_mean"],
                                                     std=weights_info["input_std"])
    except ValueError as err:
        raise VggDeployError(f"--image-size: {err}") from None
    head = _resolve_head(config.head, weights_info)
    if head == heads.POOLED_HEAD and not weights_info["pretrained"] and config.case not in ("small-similar",
                                                                                          "small-different"):
        # Checked before anything is written: from scratch every layer trains, as VGG16-BN with the classic head.
        raise VggDeployError("--head pooled needs pretrained convolutions (or a case that freezes them); from "
                             "scratch (--weights none) VGG16 trains as VGG16-BN with the classic head")
    if head == heads.POOLED_HEAD:
        model = with_pooled_head(model, 1000)
    return model, weights_info, preprocessing, head


def _finetune(config: FinetuneConfig, *, resume: bool, dist: Distributed) -> dict:
    out = dist.on_main(lambda: _prepare_run_folder(config, resume))
    decided = None
    if resume:
        config, decided = _saved_config(out)
        console.print(f"resuming {out} with its saved configuration ({runfolder.CONFIG_JSON})")
    _check_config(config, dist)
    device = _device(config, dist)
    precision = devices.resolve_precision(config.precision, device)
    devices.seed_everything(config.seed)
    split = _load_split(config, out, resume, dist)
    model, weights_info, preprocessing, head = _load_backbone(config, dist)
    pretrained_groups = tuple(g for g in weights_info["pretrained_groups"]
                              if head == heads.CLASSIC or g not in cases.FC_HIDDEN)
    train_items, val_items, test_items = (split.absolute(part) for part in (split.train, split.val, split.test))
    train_counts = split.class_counts(split.train)
    probe = None
    if decided is None:
        if resume:
            console.print(f"{runfolder.CONFIG_JSON} predates saved decisions: deciding the case again")
        decision, probe = dist.on_main(lambda: _decide(config, model, pretrained_groups, head, train_items, val_items,
                                                       train_counts, preprocessing, device, len(split.class_names)))
        decided = {"case_decision": decision.to_dict(), "head_init": "probe" if probe is not None else "random"}
    else:
        decision = cases.CaseDecision(**decided["case_decision"])
        console.print(f"case: {decision.case}, as decided when the run started ({runfolder.CONFIG_JSON})")
    for reason in decision.reasons:
        console.print(reason)
    config = dataclasses.replace(
        config, case=decision.case, head=head, device=device.type, precision=precision,
        workers=devices.default_workers(config.workers),
        lr=cases.resolved_lr(decision.case, lr=config.lr, pretrained_groups=pretrained_groups, head=head))
    if not resume:
        dist.on_main(lambda: _write_run_start(config, out, split, decided))

    # Deciding (the probes' data loaders draw from the global RNG) must not change how training goes: `--case
    # auto` trains as `--case <its pick>` would, except that its head starts as the probe.
    devices.seed_everything(config.seed)
    plan = cases.plan_for_case(decision.case, lr=config.lr, pretrained_groups=pretrained_groups,
                               epochs=config.epochs, head=head, head_init=decided["head_init"])
    model, plan = _model_for_plan(model, plan, pretrained=weights_info["pretrained"], probe=probe,
                                  num_classes=len(split.class_names), seed=config.seed, device=device)

    weights = class_weights(train_counts).to(device)
    imbalance = max(train_counts) / max(1, min(train_counts))
    console.print(f"class balance: largest/smallest = {imbalance:.2f}; loss weighted by inverse class frequency")
    base_info = _base_info(split, preprocessing, decision, plan, head, weights_info, device=device,
                           precision=precision, dist=dist, config=config, class_weights=weights, imbalance=imbalance)
    loop = TrainingLoop(
        model=model, plan=plan, out=out, base_info=base_info, dist=dist,
        config=LoopConfig(epochs=config.epochs, batch_size=config.batch_size, seed=config.seed,
                          patience=config.patience, weight_decay=config.weight_decay, device=device,
                          precision=precision, workers=config.workers, resume_state=config.resume_state),
        data=LoopData(preprocessing, train_items, val_items, test_items),
        loss_fn=nn.CrossEntropyLoss(weight=weights), eval_loss_fn=nn.CrossEntropyLoss(),
    )
    return loop.run(resume=resume)


def _model_for_plan(model: nn.Module, plan: cases.FreezePlan, *, pretrained: bool, probe, num_classes: int,
                    seed: int, device: torch.device) -> tuple[nn.Module, cases.FreezePlan]:
    """The model the plan trains: the new head (or auto's probe as the head), frozen groups set, on `device`."""
    if not pretrained and not plan.frozen:
        # From scratch, VGG16 without BatchNorm sits at ln(classes) for epochs (benchmarks/README.md); its
        # BatchNorm twin learns, and each BatchNorm folds exactly into its conv when saved, so
        # model.safetensors is still a plain torchvision VGG16.
        model = new_vgg16(1000, batch_norm=True)
        plan = dataclasses.replace(plan, batch_norm_folded=True)
    console.print("plan:\n  " + "\n  ".join(plan.describe()))
    replace_head(model, num_classes, seed=seed)
    if probe is not None:
        with torch.no_grad():
            model.classifier[6].weight.copy_(probe.weight)
            model.classifier[6].bias.copy_(probe.bias)
    model.to(device)
    model.to(memory_format=torch.channels_last)  # VGG is all convolutions and GEMMs: helps oneDNN and cuDNN alike
    optimization.apply_freeze(model, plan)
    return model, plan


def _base_info(split: Split, preprocessing: Preprocessing, decision: cases.CaseDecision, plan: cases.FreezePlan,
               head: str, weights_info: dict, *, device, precision: str, dist: Distributed, config: FinetuneConfig,
               class_weights, imbalance: float) -> dict:
    """model.json, less the metrics the loop adds."""
    train_counts = split.class_counts(split.train)
    info = {
        "arch": "vgg16",
        "num_classes": len(split.class_names),
        "class_names": split.class_names,
        "preprocessing": preprocessing.to_dict(),
        "case": decision.case,
        "case_decision": decision.to_dict(),
        "plan": plan.to_dict(),
        "head": heads.head_info(head),
        "weights": weights_info,
        "training": {"device": device.type, "precision": precision, "channels_last": True,
                     "world_size": dist.world_size, "global_batch_size": config.batch_size,
                     "class_weights": [round(float(w), 4) for w in class_weights], "class_counts_train": train_counts,
                     "imbalance_ratio": round(imbalance, 3)},
        "data": {"root": split.root, "split_source": split.source, "train_images": len(split.train),
                 "val_images": len(split.val), "test_images": len(split.test), "skipped_images": len(split.skipped)},
        "versions": _versions(),
    }
    if head == heads.POOLED_HEAD:
        info["widths"] = heads.pooled_head_widths()
    return info


def _describe_weights(info: dict) -> list[str]:
    if not info["pretrained"]:
        return ["weights: none (every layer starts random)"]
    lines = [f"weights: {info['source']} (pretrained: {', '.join(info['pretrained_groups'])})"]
    if info.get("layers_ignored"):
        lines.append(f"weights: left out {len(info['layers_ignored'])} layer(s) that are not VGG16's: "
                     + ", ".join(info["layers_ignored"]))
    if info.get("source_convention"):
        lines.append(f"weights: input convention {info['source_convention']}; the run normalises with mean "
                     f"{[round(v, 4) for v in info['input_mean']]}, std {[round(v, 4) for v in info['input_std']]}")
    return lines


def _resolve_head(requested: str, weights_info: dict) -> str:
    if requested not in ("auto", *heads.HEADS):
        raise VggDeployError(f"--head must be auto, {' or '.join(heads.HEADS)} (got {requested!r})")
    if requested != "auto":
        return requested
    conv_only = weights_info["pretrained"] and not set(cases.FC_HIDDEN) & set(weights_info["pretrained_groups"])
    return heads.POOLED_HEAD if conv_only else heads.CLASSIC


# The probes see at most this many images of each split (a stratified-enough random sample): enough for a
# linear probe's decision, and bounded on large data sets.
PROBE_MAX_TRAIN = 3000
PROBE_MAX_VAL = 1500


def _decide(config, model, pretrained_groups, head, train_items, val_items, train_counts, preprocessing, device,
            num_classes) -> tuple[cases.CaseDecision, depth_probes.ProbeResult | None]:
    """The case, and (for --case auto with pretrained weights) the probe at the depth the head reads, which the
    head then starts from."""
    if config.case == "auto" and pretrained_groups:
        shipped = "fc7" if head == heads.CLASSIC else "pool5"
        depths = ("pool3", "pool4", "pool5") + (("fc7",) if head == heads.CLASSIC else ())
        results = depth_probes.probe_depths(
            model, _sample(train_items, PROBE_MAX_TRAIN, config.seed), _sample(val_items, PROBE_MAX_VAL, config.seed),
            transform=preprocessing.eval_transform(), device=device, depths=depths, num_classes=num_classes,
            seed=config.seed)
        decision = cases.decide_case(train_counts=train_counts, pretrained=True,
                                     probes=[r.summary() for r in results.values()], shipped_depth=shipped,
                                     small_max=config.small_max_per_class)
        return decision, results[shipped]
    if config.case == "auto":
        return cases.decide_case(train_counts=train_counts, pretrained=False, probes=None,
                                 small_max=config.small_max_per_class), None
    size, size_reason = cases.decide_size(train_counts, small_max=config.small_max_per_class)
    reasons = [f"case chosen by --case {config.case}", size_reason]
    if not pretrained_groups:
        reasons.append("warning: --weights none, so the 'pretrained' layers are random")
    return cases.CaseDecision(config.case, size, "unknown", reasons, {}), None


def _sample(items: list, limit: int, seed: int) -> list:
    if len(items) <= limit:
        return list(items)
    return random.Random(seed).sample(list(items), limit)
