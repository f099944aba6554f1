"""Which head for a conv-only backbone: torchvision's fc6-fc8 (random, trained) or the pooled head
(global average + one linear layer), measured on the offline backbone with conv1-5 frozen.

Both through `vgg-deploy finetune --case small-similar --head {classic,pooled}` (the same data, split, epochs
and recipe: AdamW, the head's rate), on two sample targets, with train/ and val/ as given and a separate
test/ of 40 images per class that no decision sees. The classic head's fc6/fc7 train at the head's rate x 0.1
(their fan-in factor); `--lr` is swept for it, since that is where it failed before (0.38 at 1e-4, 0.18 at 1e-3).

    python benchmarks/head_choice.py [--out /tmp/heads] [--json benchmarks/results/head_choice.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from transfer_cases import run_finetune, write_target

from vgg_deploy.benchmark.machine import describe_machine
from vgg_deploy.heads import pooled_head_widths
from vgg_deploy.keras_weights import hed_weights_path
from vgg_deploy.widths import parameter_count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/vgg-head-choice"))
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "head_choice.json")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--train", type=int, default=36, help="training images per class")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--families", nargs="*", default=["more-shapes", "textures"])
    parser.add_argument("--classic-lrs", nargs="*", type=float, default=[1e-4, 1e-3])
    args = parser.parse_args()
    backbone = str(hed_weights_path())
    rows = []
    for family in args.families:
        data = write_target(args.out / f"data-{family}", family, train=args.train, val=12, test=40,
                            size=args.image_size)
        common = dict(weights=backbone, case="small-similar", image_size=args.image_size, epochs=args.epochs,
                      batch_size=16)
        settings = [("pooled", 1e-3)] + [("classic", lr) for lr in args.classic_lrs]
        for head, lr in settings:
            result = run_finetune(data, args.out / f"{family}-{head}-{lr:g}", head=head, lr=lr, **common)
            rows.append({"family": family, "head": head, "lr": lr, **result})
            print(rows[-1], flush=True)
            write(args, rows)
    print(table(rows))


def write(args, rows) -> None:
    report = {"machine": describe_machine(), "settings": {k: str(v) if isinstance(v, Path) else v
                                                          for k, v in vars(args).items()},
              "parameters": {"classic": parameter_count(None, num_classes=6),
                             "pooled": parameter_count(pooled_head_widths(), num_classes=6)},
              "rows": rows}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")


def table(rows) -> str:
    lines = ["| target | head | lr (head) | val top-1 | test top-1 (240) | seconds |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['family']} | {r['head']} | {r['lr']:g} | {r['val_top1']:.3f} | {r['test_top1']:.3f} | "
                     f"{r['seconds']:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
