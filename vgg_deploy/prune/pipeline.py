"""The prune step: RUN/ (a finetune run) -> PRUNED/, a run folder with the same contract, narrower layers.

Each of `steps` steps removes the lowest-scoring channels of every layer down to that step's widths, then
recovers on the run's own train split (the finetune loop: val picks the checkpoint, test is only reported),
distilling from the unpruned model. PRUNED/steps/K/ is step K's run folder; PRUNED/ holds the last one, its
model.json records the widths, the source run and every step (MACs, parameters, latency, val and test top-1).
"""

from __future__ import annotations

import copy
import json
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from vgg_deploy import runfolder
from vgg_deploy.batches import stratified_sample
from vgg_deploy.console import console
from vgg_deploy.data import ImageDataset, class_weights
from vgg_deploy.errors import RunFolderError, VggDeployError
from vgg_deploy.fileio import check_writable_dir, read_json, sha256_file, write_json, write_text
from vgg_deploy.finetune import devices
from vgg_deploy.finetune.epoch import run_epoch
from vgg_deploy.heads import POOLED_HEAD
from vgg_deploy.prune import allocation
from vgg_deploy.prune import latency as timing
from vgg_deploy.prune import targets
from vgg_deploy.prune.allocation import ALLOCATIONS
from vgg_deploy.prune.recovery import recover
from vgg_deploy.prune.scores import CRITERIA, channel_scores
from vgg_deploy.prune.surgery import prune_to_widths
from vgg_deploy.widths import DENSE_WIDTHS, multiply_adds, parameter_count, scaled_widths, vgg16_with_widths

PRUNE_LOG = "prune_log.jsonl"
PRUNE_PLOT = "prune.png"
STEP_REPORT = "prune_step.json"
RECOVERED = "recovered.json"  # recovery finished (what remains of the step is measuring it)
PRUNED_UNTRAINED = "pruned.safetensors"  # a step's widths before recovery: where a resumed step starts
TARGET_JSON = "prune_target.json"  # the target and what it resolved to (a keep fraction, or per-layer widths)
TIMING_DIR = ".timing"  # the source's ONNX file, exported once for every latency comparison
COPIED_FROM_LAST_STEP = (runfolder.WEIGHTS, runfolder.EPOCH_LOG, runfolder.CURVES_PNG)


@dataclass
class PruneConfig:
    run: str
    out: str
    target_macs: float | None = None  # fraction of the source's multiply-adds
    target_speedup: float | None = None  # measured on onnxruntime FP32, batch 1, against the source
    criterion: str = "taylor"
    # uniform: every layer keeps the same fraction; sensitivity: per-layer widths from each layer's measured
    # val-loss sensitivity (allocation.py).
    allocation: str = "uniform"
    # sensitivity: the val images each of its 3 x 15 evaluations runs on (a class-stratified sample; None: all);
    # at 224 px on two cores an evaluation costs about 0.15 s an image.
    sensitivity_images: int | None = 128
    # sensitivity: another prune folder of the same source whose recorded table (prune_target.json) is reused
    # instead of measured, when it was measured with the same options (allocation.BASIS_OPTIONS).
    sensitivity_from: str | None = None
    steps: int = 3
    epochs: int = 2  # recovery epochs per step
    distill: bool = True
    temperature: float = 4.0
    soft_weight: float = 0.5  # share of the distillation term in the loss
    round_to: int = 8
    lr: float = 1e-4  # convolutions; fc6-fc8 train at a tenth of it (finetune's recipe for pretrained layers)
    weight_decay: float = 0.05
    batch_size: int = 32
    score_batches: int = 8  # training batches the Taylor criterion averages over
    latency_rounds: int = 3  # 0: do not measure (tests)
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    patience: int = 5
    workers: int | None = None


def _check(config: PruneConfig) -> None:
    if (config.target_macs is None) == (config.target_speedup is None):
        raise VggDeployError("give exactly one of --target-macs and --target-speedup")
    if config.allocation not in ALLOCATIONS:
        raise VggDeployError(f"--allocation must be one of {', '.join(ALLOCATIONS)} (got {config.allocation!r})")
    if config.sensitivity_from is not None and config.allocation != "sensitivity":
        raise VggDeployError("--sensitivity-from reuses a sensitivity table: it needs --allocation sensitivity")
    if config.criterion not in CRITERIA:
        raise VggDeployError(f"--criterion must be one of {', '.join(CRITERIA)} (got {config.criterion!r})")
    for name in ("steps", "epochs", "round_to", "batch_size", "score_batches"):
        if getattr(config, name) < 1:
            raise VggDeployError(f"--{name.replace('_', '-')} must be at least 1 (got {getattr(config, name)})")
    if config.latency_rounds < 0:
        raise VggDeployError("--latency-rounds must be 0 (do not measure) or more")


def _prepare_out(config: PruneConfig, resume: bool) -> Path:
    out = Path(config.out)
    if out.resolve() == Path(config.run).resolve():
        raise VggDeployError("--out must be a new folder, not the run being pruned")
    out = check_writable_dir(out)
    started = (out / runfolder.CONFIG_JSON).is_file()
    finished = (out / runfolder.MODEL_JSON).is_file()
    if resume and (finished or not started):
        raise RunFolderError(f"nothing to resume in {out}: " + ("the prune already finished" if finished
                                                                 else "no interrupted prune there"))
    if not resume and (started or finished):
        raise RunFolderError(f"{out} already holds a run; pass --resume to continue it, or choose another --out")
    return out


class Pruning:
    """One prune run's state: the source, its data, the teacher, and the steps' records."""

    def __init__(self, config: PruneConfig, out: Path):
        self.config, self.out = config, out
        self.source = runfolder.open_run(config.run)
        self.split = self.source.split()
        self.preprocessing = self.source.preprocessing
        self.class_names = self.source.class_names
        self.device = devices.resolve_device(config.device)
        self.precision = devices.resolve_precision(config.precision, self.device)
        self.workers = devices.default_workers(config.workers)
        self.train_items, self.val_items, self.test_items = (
            self.split.absolute(part) for part in (self.split.train, self.split.val, self.split.test))
        missing = [str(p) for p, _ in self.train_items + self.val_items if not Path(p).is_file()]
        if missing:
            raise RunFolderError(f"{config.run}'s split.json names {missing[0]}, which no longer exists "
                                 f"({len(missing)} image(s) missing); recovery training needs the run's data")
        self.source_widths = self.source.widths or dict(DENSE_WIDTHS)
        self.teacher = self.source.load_model()
        self.timer = timing.SideBySide(self.teacher, self.out / TIMING_DIR / "source.onnx",
                                       preprocessing=self.preprocessing, class_names=self.class_names,
                                       rounds=config.latency_rounds)
        self.hard_loss = nn.CrossEntropyLoss(weight=class_weights(self.split.class_counts(self.split.train)).to(self.device))

    # -- figures ---------------------------------------------------------------------------------
    def work(self, widths: dict[str, int]) -> dict:
        n = len(self.class_names)
        return {"macs": multiply_adds(widths, image_size=self.preprocessing.image_size, num_classes=n),
                "parameters": parameter_count(widths, num_classes=n)}

    def latency(self, model: nn.Module, workdir: Path) -> dict | None:
        """{ms, source_ms, speedup}: the model and the source side by side, or None when not measured."""
        if not self.config.latency_rounds:
            return None
        return self.timer.against_source(model, workdir)

    def _eval_loader(self, items) -> DataLoader:
        return DataLoader(ImageDataset(items, self.preprocessing.eval_transform()), batch_size=self.config.batch_size,
                          num_workers=self.workers)

    def _evaluate(self, model: nn.Module, items=None, *, batches=None):
        """On `items`, or on `batches` already decoded."""
        return run_epoch(model.to(self.device).eval(), self._eval_loader(items) if batches is None else batches,
                         loss_fn=nn.CrossEntropyLoss(), device=self.device, precision="fp32", channels_last=False)

    def evaluate(self, model: nn.Module, items) -> float:
        return self._evaluate(model, items).top1

    # -- targets ---------------------------------------------------------------------------------
    def final_target(self) -> dict:
        """What the last step prunes to: {"keep"} of every layer (uniform) or per-layer {"widths"}
        (sensitivity), with the target and how it was reached."""
        c, n, size = self.config, len(self.class_names), self.preprocessing.image_size
        widths_for = self._uniform_widths if c.allocation == "uniform" else self._sensitivity_widths()
        target: dict = {"allocation": c.allocation}
        if c.target_macs is not None:
            target["target_macs"] = c.target_macs
            if c.allocation == "uniform":
                return {**target, "keep": targets.keep_for_macs(self.source_widths, c.target_macs, image_size=size,
                                                                num_classes=n, round_to=c.round_to)}
            return {**target, "widths": widths_for(c.target_macs), **self.sensitivity_record}
        if not c.latency_rounds:
            raise VggDeployError("--target-speedup measures latency: --latency-rounds must be at least 1")

        def speedup_of(widths, workdir):
            return self.latency(vgg16_with_widths(n, widths).eval(), workdir)["speedup"]

        fraction, probes = targets.keep_for_speedup(c.target_speedup, widths_for=widths_for, speedup_of=speedup_of)
        target.update(target_speedup=c.target_speedup, search=probes)
        if c.allocation == "uniform":
            return {**target, "keep": fraction}
        return {**target, "widths": widths_for(fraction), **self.sensitivity_record}

    def _uniform_widths(self, keep: float) -> dict[str, int]:
        return scaled_widths(self.source_widths, keep, round_to=self.config.round_to)

    def _sensitivity_widths(self):
        """widths_for(fraction of the multiply-adds), from each layer's measured sensitivity on val."""
        c = self.config
        basis = allocation.sensitivity_basis(
            source_weights_sha256=sha256_file(self.source.path / runfolder.WEIGHTS),
            layers=allocation.measured_layers(self.source.head), **asdict(c))
        measured = {}
        if c.sensitivity_from is None:
            started = time.perf_counter()
            self.sensitivity = self._measure_sensitivity(tuple(basis["layers"]))
            measured["sensitivity_seconds"] = round(time.perf_counter() - started, 1)
        else:
            self.sensitivity = allocation.reused_sensitivity(_read_target(Path(c.sensitivity_from)), basis,
                                                             where=c.sensitivity_from)
            console.print(f"sensitivity: the table {c.sensitivity_from} measured, reused")
        self.sensitivity_record = {"sensitivity": self.sensitivity, "sensitivity_basis": basis,
                                   "sensitivity_from": c.sensitivity_from, **measured}
        ties = allocation.POOLED_TIES if self.source.head == POOLED_HEAD else {}

        def widths_for(fraction: float) -> dict[str, int]:
            return allocation.allocate_widths(self.source_widths, self.sensitivity, target_macs=fraction,
                                              image_size=self.preprocessing.image_size,
                                              num_classes=len(self.class_names), round_to=c.round_to, ties=ties)

        return widths_for

    def _measure_sensitivity(self, layers: tuple[str, ...]) -> dict[str, dict[float, float]]:
        c = self.config
        model = copy.deepcopy(self.teacher).to(self.device)
        scores = self._scores(model, c.seed * 1000)
        console.print(f"sensitivity: val loss with each of {len(layers)} layers cut alone to "
                      f"{', '.join(map(str, allocation.SENSITIVITY_KEEPS))} of its width")
        images = stratified_sample(self.val_items, c.sensitivity_images, seed=c.seed)
        # Decoded once (128 images at 224 px are 77 MB): every one of the layers x keeps passes reads them.
        batches = list(self._eval_loader(images))
        return allocation.measure_sensitivity(model, scores, layers=layers,
                                              val_loss=lambda m: self._evaluate(m, batches=batches).loss)

    # -- one step --------------------------------------------------------------------------------
    def _score_batches(self, seed: int) -> DataLoader:
        generator = torch.Generator().manual_seed(seed)
        return DataLoader(ImageDataset(self.train_items, self.preprocessing.eval_transform()),
                          batch_size=self.config.batch_size, shuffle=True, generator=generator, num_workers=0)

    def _scores(self, model: nn.Module, seed: int) -> dict[str, torch.Tensor]:
        scores = channel_scores(model, self.config.criterion, batches=self._score_batches(seed),
                                loss_fn=self.hard_loss, device=self.device, max_batches=self.config.score_batches)
        if self.source.head == POOLED_HEAD:
            # fc6's unit j averages conv5_3's channel j and fc7 passes it on: cut the same units, so the pruned
            # head is still exactly an average and an identity over the channels that remain.
            scores = {**scores, "fc6": scores["conv5_3"], "fc7": scores["conv5_3"]}
        return scores

    def _pruned_start(self, model: nn.Module, widths: dict[str, int], step_dir: Path, seed: int) -> nn.Module:
        """This step's widths before recovery; saved, so a resumed step starts from the very same weights."""
        saved = step_dir / PRUNED_UNTRAINED
        if saved.is_file():
            return runfolder.load_weights(saved, num_classes=len(self.class_names), widths=widths)
        candidate = copy.deepcopy(model).to(self.device)  # scored where its batches run; the previous step's stays
        pruned = prune_to_widths(candidate, widths, self._scores(candidate, seed)).cpu().eval()
        runfolder.save_weights(pruned, saved)
        return pruned

    def run_step(self, index: int, model: nn.Module, widths: dict[str, int],
                 keep: float | None) -> tuple[nn.Module, dict]:
        """`keep`: the fraction every layer keeps (uniform allocation), None for per-layer widths."""
        c = self.config
        step_dir = self.out / "steps" / str(index)
        if (step_dir / STEP_REPORT).is_file():  # finished before an interruption
            return runfolder.open_run(step_dir).load_model(), read_json(step_dir / STEP_REPORT)
        step_dir.mkdir(parents=True, exist_ok=True)
        recovered = step_dir / RECOVERED
        if not recovered.is_file():
            seed = c.seed * 1000 + index
            devices.seed_everything(seed)
            pruned = self._pruned_start(model, widths, step_dir, seed)
            val_before = self.evaluate(pruned, self.val_items)
            kept = f"kept {keep:.3f} of each layer" if keep is not None else "per-layer widths"
            console.print(f"step {index}/{c.steps}: {kept}; val top-1 {val_before:.3f} before recovery")
            devices.seed_everything(seed)
            recover(self, pruned, widths, step_dir, index, resume=(step_dir / runfolder.RESUME_STATE).is_file())
            write_json(recovered, {"val_top1_before_recovery": val_before})
        trained = runfolder.open_run(step_dir).load_model()
        info = read_json(step_dir / runfolder.MODEL_JSON)
        report = {"step": index, "keep": None if keep is None else round(keep, 4), "widths": widths, **self.work(widths),
                  **read_json(recovered), "val_top1": info["metrics"]["val"]["top1"],
                  "test_top1": info["metrics"].get("test", {}).get("top1"),
                  "recovery_epochs_run": sum(r["epoch"] > 0 for r in read_json_lines(step_dir / runfolder.EPOCH_LOG)),
                  "latency": self.latency(trained, step_dir)}
        write_json(step_dir / STEP_REPORT, report)
        (step_dir / PRUNED_UNTRAINED).unlink(missing_ok=True)
        return trained, report


def _read_target(folder: Path) -> dict:
    """A prune folder's recorded target (finished or not)."""
    path = folder / TARGET_JSON
    if not path.is_file():
        raise RunFolderError(f"{folder} holds no {TARGET_JSON}: it is not a prune folder")
    try:
        return read_json(path)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise RunFolderError(f"{path} is not valid JSON") from None


def read_json_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def prune(config: PruneConfig, *, resume: bool = False) -> dict:
    """Run the whole step; returns PRUNED/model.json's contents. On --resume the saved config wins."""
    out = _prepare_out(config, resume)
    if resume:
        config = PruneConfig(**read_json(out / runfolder.CONFIG_JSON))
        console.print(f"resuming {out} with its saved configuration ({runfolder.CONFIG_JSON})")
    _check(config)
    state = Pruning(config, out)
    if resume:
        # Decided once: a re-measured speed-up search could land elsewhere and change the steps' widths.
        target = _read_target(out)
    else:
        # Never time against another source's file left by an interrupted start, and leave none behind when
        # the target is refused (at 224 px it is a 530 MB ONNX file).
        shutil.rmtree(out / TIMING_DIR, ignore_errors=True)
        try:
            target = state.final_target()
        except BaseException:
            shutil.rmtree(out / TIMING_DIR, ignore_errors=True)
            raise
        # Written only once the target is known reachable, so a refused request leaves --out reusable.
        shutil.copyfile(state.source.path / runfolder.SPLIT_JSON, out / runfolder.SPLIT_JSON)
        write_json(out / TARGET_JSON, target)
        # Resolved, so --resume runs on the device, precision and loaders this run started with.
        resolved = replace(config, device=state.device.type, precision=state.precision, workers=state.workers)
        write_json(out / runfolder.CONFIG_JSON, asdict(resolved))
    source_metrics = state.source.info.get("metrics", {})
    start = {"step": 0, "keep": 1.0, "widths": state.source_widths, **state.work(state.source_widths),
             "val_top1": source_metrics.get("val", {}).get("top1"), "test_top1": source_metrics.get("test", {}).get("top1"),
             "latency": None}
    to = (f"keep {target['keep']:.3f} of each layer" if "keep" in target else
          f"per-layer widths from measured sensitivity, {state.work(target['widths'])['macs'] / start['macs']:.3f} of "
          "the multiply-adds")
    console.print(f"pruning {state.source.path} to {to} in {config.steps} step(s) "
                  f"({start['macs'] / 1e9:.2f} G multiply-adds now)")
    model, records = state.teacher, [start]
    for index in range(1, config.steps + 1):
        widths, step_keep = _step(state, target, index)
        model, report = state.run_step(index, model, widths, step_keep)
        records.append(report)
        _log(out, records)
    return _finish(state, records, target)


def _step(state: Pruning, target: dict, index: int) -> tuple[dict[str, int], float | None]:
    """Step `index`'s widths, and the fraction every layer keeps (None for per-layer widths)."""
    c = state.config
    if "widths" in target:
        return allocation.step_widths(state.source_widths, target["widths"], step=index, steps=c.steps,
                                      round_to=c.round_to), None
    keep = target["keep"] ** (index / c.steps)
    return scaled_widths(state.source_widths, keep, round_to=c.round_to), keep


def _log(out: Path, records: list[dict]) -> None:
    write_text(out / PRUNE_LOG, "".join(json.dumps(r) + "\n" for r in records))


def _finish(state: Pruning, records: list[dict], target: dict) -> dict:
    from vgg_deploy.plots import plot_pruning

    out, last = state.out, state.out / "steps" / str(state.config.steps)
    for name in COPIED_FROM_LAST_STEP:
        shutil.copyfile(last / name, out / name)
    info = read_json(last / runfolder.MODEL_JSON)
    info["pruning"].update({"target": target, "steps_report": records})
    plot_pruning(records, out / PRUNE_PLOT)
    shutil.rmtree(out / TIMING_DIR, ignore_errors=True)
    runfolder.write_model_json(out, info)  # last: its presence marks PRUNED/ as a finished run
    final = records[-1]
    speed = f", {final['latency']['speedup']:.2f}x faster ({timing.RUNTIME})" if final["latency"] else ""
    test = f", test top-1 {final['test_top1']:.3f} (reported only)" if final["test_top1"] is not None else ""
    console.print(f"pruned: {final['macs'] / records[0]['macs']:.2f} of the multiply-adds, "
                  f"{final['parameters'] / records[0]['parameters']:.2f} of the parameters{speed}; "
                  f"val top-1 {final['val_top1']:.3f}{test} -> {out / runfolder.WEIGHTS}")
    return info
