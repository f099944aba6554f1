"""Training speed on this machine's CPU, VGG16 at 224 px.

1. Full fine-tune images/s: the toolkit's training step (channels-last, bf16 autocast where the CPU has
   it, fused AdamW) against a plain PyTorch FP32 loop (contiguous NCHW, FP32, default AdamW), side by
   side in one process, alternating blocks of steps from the same weights and batches. Also the loss
   each reaches on the same short run, as a check that the faster step learns the same.
2. small-similar: epoch 2+ time against epoch 1 with the toolkit's feature cache, from a real
   `finetune` run on the sample data.

    python benchmarks/train_bench.py [--rounds 3] [--steps 4] [--out benchmarks/results/train_cpu.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from vgg_deploy.finetune import cases
from vgg_deploy.finetune import devices
from vgg_deploy.finetune import optimization
from vgg_deploy.finetune.epoch import run_epoch
from vgg_deploy.model import new_vgg16


def plain_step_factory(model):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step(x, y):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return step


def toolkit_step_factory(model):
    plan = cases.plan_for_case("large-different", lr=1e-4, pretrained=False, epochs=1)
    model.to(memory_format=torch.channels_last)
    optimization.apply_freeze(model, plan)
    optimization.set_train_mode(model, plan)
    optimizer = optimization.build_optimizer(model, plan, weight_decay=0.0)
    precision = devices.resolve_precision("auto", torch.device("cpu"))
    loss_fn = nn.CrossEntropyLoss()

    def step(x, y):
        stats = run_epoch(model, [(x, y)], loss_fn=loss_fn, device=torch.device("cpu"), precision=precision,
                            channels_last=True, optimizer=optimizer)
        return stats.loss

    return step, precision


def full_finetune(rounds: int, steps: int, batch: int) -> dict:
    torch.manual_seed(0)
    base = new_vgg16(6)
    data = [(torch.randn(batch, 3, 224, 224), torch.randint(0, 6, (batch,))) for _ in range(steps)]
    plain_model, toolkit_model = copy.deepcopy(base).train(), copy.deepcopy(base)
    plain = plain_step_factory(plain_model)
    toolkit, precision = toolkit_step_factory(toolkit_model)
    for fn in (plain, toolkit):  # warm-up: first steps allocate and pick kernels
        fn(*data[0])
    speeds = {"plain_fp32": [], "toolkit": []}
    losses = {"plain_fp32": [], "toolkit": []}
    for round_index in range(rounds):
        for name, fn in (("plain_fp32", plain), ("toolkit", toolkit)):
            start = time.perf_counter()
            for x, y in data:
                losses[name].append(fn(x, y))
            speeds[name].append(steps * batch / (time.perf_counter() - start))
        print(f"round {round_index + 1}: plain {speeds['plain_fp32'][-1]:.2f} img/s, "
              f"toolkit {speeds['toolkit'][-1]:.2f} img/s", flush=True)
    medians = {k: statistics.median(v) for k, v in speeds.items()}
    return {
        "image_size": 224, "batch_size": batch, "steps_per_round": steps, "rounds": rounds,
        "toolkit_precision": precision, "images_per_s_median": medians,
        "speedup": medians["toolkit"] / medians["plain_fp32"], "images_per_s_per_round": speeds,
        "loss_after_short_run": {k: v[-1] for k, v in losses.items()},
        "loss_trajectory": losses,
    }


def small_similar_cache(epochs: int) -> dict:
    from vgg_deploy.finetune import FinetuneConfig, finetune
    from vgg_deploy.sample_data import write_sample_data

    with tempfile.TemporaryDirectory() as tmp:
        data = write_sample_data(Path(tmp) / "data")
        run = Path(tmp) / "run"
        finetune(FinetuneConfig(data=str(data), out=str(run), case="small-similar", weights="none", image_size=224,
                                epochs=epochs, batch_size=32))
        log = [json.loads(line) for line in (run / "epochs.jsonl").read_text().splitlines()]
    later = statistics.median(e["seconds"] for e in log[1:])
    return {"image_size": 224, "train_images": log[0].get("train_images", None) or 288, "epoch_seconds": [e["seconds"] for e in log],
            "epoch1_over_later_median": log[0]["seconds"] / later}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--out", default="benchmarks/results/train_cpu.json")
    args = parser.parse_args()
    from vgg_deploy.benchmark.machine import describe_machine

    record = {"machine": describe_machine(), "date": time.strftime("%Y-%m-%d"),
              "full_finetune": full_finetune(args.rounds, args.steps, args.batch),
              "small_similar_cache": small_similar_cache(args.epochs)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    ff, cache = record["full_finetune"], record["small_similar_cache"]
    print(f"full fine-tune 224 px: toolkit {ff['images_per_s_median']['toolkit']:.2f} img/s vs plain FP32 "
          f"{ff['images_per_s_median']['plain_fp32']:.2f} img/s = {ff['speedup']:.2f}x")
    print(f"small-similar: epoch 1 / later epochs = {cache['epoch1_over_later_median']:.0f}x")


if __name__ == "__main__":
    main()
