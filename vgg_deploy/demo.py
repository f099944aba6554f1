"""`vgg-deploy demo`: sample data -> a source model -> transfer to a new task -> export -> benchmark, on the
CPU in a few minutes.

Offline there are no ImageNet weights, so the demo makes its own source: VGG16 trained from scratch on
the `shapes` family. It then transfers that source, with `--case auto`, to a small `more-shapes` target
(new classes drawn in the same style), and exports and benchmarks the transferred model. With ImageNet
weights in torch's cache the source step is skipped and the target starts from ImageNet.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from vgg_deploy.console import console
from vgg_deploy.errors import VggDeployError

DEMO_IMAGE_SIZE = 32
SOURCE_IMAGES_PER_CLASS = 150
SOURCE_EPOCHS = 8
TARGET_IMAGES_PER_CLASS = 40
TARGET_EPOCHS = 15


def imagenet_weights_cached() -> bool:
    import torch
    from torchvision.models import VGG16_Weights

    filename = VGG16_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[-1]
    return (Path(torch.hub.get_dir()) / "checkpoints" / filename).is_file()


def run_demo(out: str | Path, *, overwrite: bool = False, epochs: int = TARGET_EPOCHS) -> dict:
    from vgg_deploy.benchmark.pipeline import BenchmarkOptions, benchmark
    from vgg_deploy.benchmark.stats import TimingPolicy
    from vgg_deploy.export.pipeline import ExportOptions, export
    from vgg_deploy.finetune import FinetuneConfig, finetune
    from vgg_deploy.sample_data import write_sample_data

    out = Path(out)
    if out.exists():
        if not overwrite:
            raise VggDeployError(f"{out} already exists; pass --overwrite to replace the previous demo")
        shutil.rmtree(out)
    size = dict(image_size=DEMO_IMAGE_SIZE)

    console.rule("1/5 sample data")
    source_data = write_sample_data(out / "data-shapes", images_per_class=SOURCE_IMAGES_PER_CLASS, size=48)
    target_data = write_sample_data(out / "data-more-shapes", images_per_class=TARGET_IMAGES_PER_CLASS, size=48,
                                    family="more-shapes")
    console.print(f"source task (shapes) -> {source_data}\ntarget task (more-shapes, new classes) -> {target_data}")

    console.rule("2/5 source model")
    if imagenet_weights_cached():
        source = "imagenet"
        console.print("ImageNet weights are in torch's cache: the target starts from them")
    else:
        source = str(out / "source")
        console.print("ImageNet weights are not in torch's cache (and this machine may be offline): the demo "
                      "trains its own source, VGG16 from scratch on the shapes family")
        finetune(FinetuneConfig(data=str(source_data), out=source, weights="none", epochs=SOURCE_EPOCHS,
                                batch_size=32, val_split=0.1, test_split=0.1, **size))
        console.print(f"source run -> {source}")

    console.rule("3/5 transfer to the target (--case auto)")
    run = out / "run"
    info = finetune(FinetuneConfig(data=str(target_data), out=str(run), weights=source, case="auto", epochs=epochs,
                                   batch_size=16, **size))
    console.print(f"run -> {run} (case {info['case']}, test top-1 {info['metrics']['test']['top1']:.3f})")

    console.rule("4/5 export")
    # No --max-accuracy-drop: on a model this weak a budget can be out of reach, and the demo shows the INT8
    # report (per-layer SQNR, test agreement) either way.
    export(run, ExportOptions(formats=["all"], calib_images=64))
    console.print(f"artifacts -> {run / 'export'}")

    console.rule("5/5 benchmark")
    # One round keeps the demo short; each row still runs in its own process. For numbers to quote,
    # `vgg-deploy benchmark` (5 rounds by default).
    report = benchmark(run, BenchmarkOptions(batch_sizes=[1, 8], rounds=1,
                                             timing=TimingPolicy(time_budget_s=2.0, max_iterations=40)))
    console.print(f"benchmark -> {run / 'benchmark'}")
    return report
