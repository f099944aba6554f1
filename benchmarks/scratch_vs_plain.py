"""From scratch: `finetune --weights none` against a plain PyTorch SGD loop, same images, same epochs.

The plain loop is `vgg_deploy.finetune.reference.train_plain_sgd` (torchvision VGG16 and init, SGD lr 0.01
momentum 0.9, batch 32, FP32). Both train on the run's train split and are scored on its test split.

    python benchmarks/scratch_vs_plain.py --digits [--epochs 4]      # scikit-learn's 1797 handwritten digits
    python benchmarks/scratch_vs_plain.py --data DIR [--epochs 6]    # any ImageFolder, e.g. the sample shapes

The digits (8x8, shipped inside scikit-learn: no download) are upscaled to 32 px PNGs; `pip install
'.[bench]'` brings scikit-learn.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vgg_deploy.benchmark.machine import describe_machine
from vgg_deploy.finetune import FinetuneConfig, finetune
from vgg_deploy.finetune.reference import top1, train_plain_sgd
from vgg_deploy.runfolder import open_run


def write_digits(out: Path, size: int = 32) -> Path:
    from sklearn.datasets import load_digits

    digits = load_digits()
    for index, (image, label) in enumerate(zip(digits.images, digits.target)):
        folder = out / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        grey = Image.fromarray(np.uint8(image * (255 / 16))).resize((size, size), Image.BILINEAR)
        grey.convert("RGB").save(folder / f"{index:04d}.png")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path)
    parser.add_argument("--digits", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("/tmp/vgg-scratch-vs-plain"))
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.digits == (args.data is not None):
        parser.error("give exactly one of --digits and --data DIR")
    data = write_digits(args.out / "digits") if args.digits else args.data
    name = "digits" if args.digits else data.name
    run_dir = args.out / f"run-{name}"
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)

    started = time.perf_counter()
    info = finetune(FinetuneConfig(data=str(data), out=str(run_dir), weights="none", image_size=args.image_size,
                                   epochs=args.epochs, batch_size=32, patience=args.epochs, workers=0))
    toolkit_seconds = time.perf_counter() - started
    epochs = [json.loads(line) for line in (run_dir / "epochs.jsonl").read_text().splitlines()]

    run = open_run(run_dir)
    split = run.split()
    plain = train_plain_sgd(split.absolute(split.train), num_classes=len(run.class_names),
                            preprocessing=run.preprocessing, epochs=args.epochs)
    plain_top1 = top1(plain.model, split.absolute(split.test), preprocessing=run.preprocessing)

    toolkit_ips = float(np.median([e["train_images_per_s"] for e in epochs]))
    report = {
        "machine": describe_machine(), "data": name, "classes": len(run.class_names),
        "train_images": len(split.train), "test_images": len(split.test), "epochs": args.epochs,
        "image_size": args.image_size,
        "toolkit": {"recipe": "VGG16-BN folded, AdamW per-layer rates, bf16 autocast where native, channels-last",
                    "test_top1": info["metrics"]["test"]["top1"], "kept_epoch": info["metrics"]["epoch"],
                    "train_loss_per_epoch": [e["train_loss"] for e in epochs], "train_images_per_s": toolkit_ips,
                    "seconds": round(toolkit_seconds, 1)},
        "plain_sgd": {"recipe": "VGG16, SGD lr 0.01 momentum 0.9, FP32", "test_top1": plain_top1,
                      "train_loss_per_epoch": plain.epoch_losses, "train_images_per_s": plain.images_per_s},
    }
    out_json = args.json or Path(__file__).parent / "results" / f"scratch_vs_plain_{name}.json"
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"| {name} ({report['classes']} classes, {report['train_images']} train, {args.epochs} epochs, "
          f"{args.image_size} px) | toolkit {report['toolkit']['test_top1']:.3f} at {toolkit_ips:.1f} img/s | "
          f"plain SGD {plain_top1:.3f} at {plain.images_per_s:.1f} img/s |")


if __name__ == "__main__":
    torch.set_num_threads(torch.get_num_threads())
    main()
