"""`vgg-deploy demo`: sample data -> finetune -> export -> benchmark, on the CPU in a few minutes."""

from __future__ import annotations

import shutil
from pathlib import Path

from vgg_deploy.console import console
from vgg_deploy.errors import VggDeployError

DEMO_IMAGE_SIZE = 64
DEMO_IMAGES_PER_CLASS = 60


def imagenet_weights_cached() -> bool:
    import torch
    from torchvision.models import VGG16_Weights

    filename = VGG16_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[-1]
    return (Path(torch.hub.get_dir()) / "checkpoints" / filename).is_file()


def run_demo(out: str | Path, *, overwrite: bool = False, epochs: int = 15) -> dict:
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
    data, run = out / "data", out / "run"
    console.rule("1/4 sample data")
    write_sample_data(data, images_per_class=DEMO_IMAGES_PER_CLASS)
    console.print(f"sample data -> {data}")

    console.rule("2/4 finetune")
    if imagenet_weights_cached():
        weights, case = "imagenet", "auto"
    else:
        weights, case = "none", "small-similar"
        console.print("ImageNet weights are not in torch's cache (and this machine may be offline): the demo uses "
                      "--weights none --case small-similar, a linear probe on random VGG16 features. "
                      "With ImageNet weights the same command picks its case itself.")
    finetune(FinetuneConfig(data=str(data), out=str(run), case=case, weights=weights, image_size=DEMO_IMAGE_SIZE,
                            epochs=epochs, batch_size=32))
    console.print(f"run -> {run}")

    console.rule("3/4 export")
    # The budget makes the INT8 step keep its most sensitive layers in FP32 if it must (and say which).
    export(run, ExportOptions(formats=["all"], calib_images=64, max_accuracy_drop=1.0))
    console.print(f"artifacts -> {run / 'export'}")

    console.rule("4/4 benchmark")
    report = benchmark(run, BenchmarkOptions(batch_sizes=[1, 8], timing=TimingPolicy(time_budget_s=3.0, max_iterations=50)))
    console.print(f"benchmark -> {run / 'benchmark'}")
    return report
