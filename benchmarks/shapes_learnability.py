"""How many images does the sample `shapes` task need at 32 px? A small plain CNN (4 conv blocks with
BatchNorm, SGD + one-cycle) on N fresh images per class, scored on 60 other images per class drawn apart,
through the toolkit's own preprocessing and augmentation. It separates "the data is hard at this size and
count" from "the VGG16 recipe does not learn":

    python benchmarks/shapes_learnability.py --per-class 120 --epochs 15
    python benchmarks/shapes_learnability.py --per-class 1000 --epochs 8
    python benchmarks/shapes_learnability.py --per-class 1000 --epochs 3 --arch vgg16-bn   # slow: ~4.5 min/epoch
    python benchmarks/shapes_learnability.py --family more-shapes --epochs 12
    python benchmarks/shapes_learnability.py --classes circle,cross,stripes,checker,ring,star --epochs 12

Results go to benchmarks/results/shapes_learnability.json (one entry per invocation, appended).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn as nn

from vgg_deploy.benchmark.machine import describe_machine
from vgg_deploy.preprocessing import Preprocessing
from vgg_deploy.sample_data import FAMILIES, draw_sample

RESULTS = Path(__file__).parent / "results" / "shapes_learnability.json"
TEST_FIRST_INDEX = 5000  # far from any training index


def small_cnn(classes: int) -> nn.Module:
    def block(cin, cout):
        return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2)]

    return nn.Sequential(*block(3, 32), *block(32, 64), *block(64, 128), *block(128, 256), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(256, classes))


def model_and_optimizer(arch: str, classes: int):
    if arch == "small-cnn":
        model = small_cnn(classes)
        return model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    import torchvision

    # The toolkit's from-scratch recipe (benchmarks/README.md, "From scratch"): AdamW 1e-4 body, 1e-5 fc.
    model = torchvision.models.vgg16_bn(num_classes=classes)
    body = [p for n, p in model.named_parameters() if n.startswith("features")]
    head = [p for n, p in model.named_parameters() if not n.startswith("features")]
    return model, torch.optim.AdamW([{"params": body, "lr": 1e-4}, {"params": head, "lr": 1e-5}], weight_decay=0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", default="shapes", choices=list(FAMILIES))
    parser.add_argument("--classes", default=None, help="comma-separated sample classes of any families, instead "
                        "of --family (which classes a small CNN tells apart at this size)")
    parser.add_argument("--per-class", type=int, default=120)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--arch", default="small-cnn", choices=["small-cnn", "vgg16-bn"])
    parser.add_argument("--image-size", type=int, default=32)
    args = parser.parse_args()
    torch.manual_seed(0)
    pre = Preprocessing.for_image_size(args.image_size)
    train_tf, eval_tf = pre.train_transform(), pre.eval_transform()
    classes = tuple(args.classes.split(",")) if args.classes else FAMILIES[args.family]
    train = [(draw_sample(c, i, size=96), k) for k, c in enumerate(classes) for i in range(args.per_class)]
    test = [(draw_sample(c, TEST_FIRST_INDEX + i, size=96), k) for k, c in enumerate(classes) for i in range(60)]
    x_test = torch.stack([eval_tf(image) for image, _ in test])
    y_test = torch.tensor([label for _, label in test])
    model, optimizer = model_and_optimizer(args.arch, len(classes))
    steps = args.epochs * math.ceil(len(train) / 32)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=[g["lr"] for g in optimizer.param_groups],
                                                   total_steps=steps, pct_start=0.15)
    epochs, start = [], time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        model.train()
        order, losses = torch.randperm(len(train)), []
        for first in range(0, len(train), 32):
            picked = order[first:first + 32]
            x = torch.stack([train_tf(train[i][0]) for i in picked])
            y = torch.tensor([train[i][1] for i in picked])
            loss = nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
        model.eval()
        with torch.no_grad():
            top1 = (model(x_test).argmax(1) == y_test).float().mean().item()
        epochs.append({"epoch": epoch, "train_loss": sum(losses) / len(losses), "test_top1": top1,
                       "seconds": time.perf_counter() - start})
        print(f"{args.arch} epoch {epoch}: train loss {epochs[-1]['train_loss']:.3f}, test top-1 {top1:.3f}", flush=True)
    record = {"settings": vars(args), "test_images": len(test), "machine": describe_machine(), "epochs": epochs}
    RESULTS.parent.mkdir(exist_ok=True)
    history = json.loads(RESULTS.read_text()) if RESULTS.is_file() else []
    RESULTS.write_text(json.dumps(history + [record], indent=2) + "\n")


if __name__ == "__main__":
    main()
