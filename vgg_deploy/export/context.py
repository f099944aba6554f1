"""What every artifact builder of one export shares: the run, its PyTorch reference logits on the test and
decision images, the calibration images, and the artifacts built so far."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch import nn

from vgg_deploy.artifacts.manifest import FILENAME
from vgg_deploy.batches import eval_batches, load_batches, run_batches, stratified_sample
from vgg_deploy.console import console
from vgg_deploy.errors import ExportError
from vgg_deploy.export.options import ExportOptions
from vgg_deploy.parity import compare
from vgg_deploy.runfolder import Run
from vgg_deploy.runners import OnnxRuntimeRunner, TorchRunner


@dataclass
class ExportContext:
    run: Run
    options: ExportOptions
    export_dir: Path
    model: nn.Module
    # Figures are reported on test; decisions (the INT8 method, budget and fallback) look at these only.
    test_batches: object
    test_labels: np.ndarray
    reference: np.ndarray
    decision_batches: object
    decision_labels: np.ndarray
    decision_reference: np.ndarray
    decision_images: dict
    calib_items: list
    artifacts: dict[str, dict] = field(default_factory=dict)  # built by this export, by name
    _calibration: list[np.ndarray] | None = None

    @property
    def image_size(self) -> int:
        return self.run.preprocessing.image_size

    def path(self, name: str) -> Path:
        return self.export_dir / FILENAME[name]

    def ort_logits(self, path: Path, batches=None) -> np.ndarray:
        with OnnxRuntimeRunner(path) as runner:
            return run_batches(runner, self.test_batches if batches is None else batches)

    def decision_logits(self, path: Path) -> np.ndarray:
        return self.ort_logits(path, self.decision_batches)

    def test_figures(self, path: Path) -> dict:
        return compare(self.reference, self.ort_logits(path), self.test_labels).with_drop()

    def calibration_batches(self) -> list[np.ndarray]:
        """Decoded on first use: an export that builds nothing calibrated never loads them."""
        if self._calibration is None:
            self._calibration = load_batches(self.calib_items, self.run.preprocessing,
                                             batch_size=self.options.batch_size)[0]
        return self._calibration


def make_context(run: Run, options: ExportOptions, export_dir: Path) -> ExportContext:
    model = run.load_model()  # first: a checkpoint that does not match model.json is the error to report
    split, pp = run.split(), run.preprocessing
    if not split.test:
        raise ExportError(f"{run.path} has no test split (written by an older vgg-deploy); parity is reported on "
                          "images no decision saw, so re-run `vgg-deploy finetune` to get one")
    test_batches, test_labels = eval_batches(
        stratified_sample(split.absolute(split.test), options.check_images, seed=options.seed), pp,
        batch_size=options.batch_size, memory_mb=options.eval_memory_mb)
    calib_items = stratified_sample(split.absolute(split.train), options.calib_images, seed=options.seed)
    decision_items, decision_images = decision_items_for(split, options, calib_items)
    decision_batches, decision_labels = eval_batches(decision_items, pp, batch_size=options.batch_size,
                                                     memory_mb=options.eval_memory_mb)
    with TorchRunner(model, name="pytorch") as torch_runner:
        reference = run_batches(torch_runner, test_batches)
        decision_reference = run_batches(torch_runner, decision_batches)
    console.print(f"reference: PyTorch FP32 on {len(test_labels)} test images, "
                  f"top-1 {(reference.argmax(1) == test_labels).mean():.4f}")
    return ExportContext(run=run, options=options, export_dir=export_dir, model=model, test_batches=test_batches,
                         test_labels=test_labels, reference=reference, decision_batches=decision_batches,
                         decision_labels=decision_labels, decision_reference=decision_reference,
                         decision_images=decision_images, calib_items=calib_items)


def decision_items_for(split, options: ExportOptions, calib_items) -> tuple[list, dict]:
    """The images INT8's decisions look at: val, topped up to DECISION_MIN_IMAGES with training images that
    calibration did not use. Never test."""
    from vgg_deploy.export.int8 import DECISION_MIN_IMAGES

    val = stratified_sample(split.absolute(split.val), options.check_images, seed=options.seed)
    used = {path for path, _ in calib_items}
    spare = [item for item in split.absolute(split.train) if item[0] not in used]
    top_up = stratified_sample(spare, max(0, DECISION_MIN_IMAGES - len(val)), seed=options.seed) if len(val) < DECISION_MIN_IMAGES else []
    images = {"images": len(val) + len(top_up), "val": len(val), "train_not_calibrated": len(top_up)}
    if images["images"] < DECISION_MIN_IMAGES:
        console.print(f"int8: warning: only {images['images']} images for INT8 decisions (val plus training images "
                      f"calibration did not use); fewer than {DECISION_MIN_IMAGES} makes them coarse")
    return [*val, *top_up], images
