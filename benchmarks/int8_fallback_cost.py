"""What keeping one layer out of INT8 costs, at 224 px, batch 1, on onnxruntime's CPU provider.

A VGG16 (torchvision's architecture; the weights do not change the time) is exported at 224 px and
quantized from the same ranges into variants: all INT8, and one layer each kept in FP32 (fc8, fc7,
fc6, conv5_3, conv1_2, conv1_1), reading either a float input (its producer loses its output Q and with it
onnxruntime's integer kernel) or the int8-rounded one its producer's integer kernel writes. Each variant
is timed in its own process, in alternating rounds (`vgg_deploy.timing.isolated`, as `vgg-deploy
benchmark` times its rows); the table gives each variant's median latency as a ratio of the all-INT8 file's.

    python benchmarks/int8_fallback_cost.py [--rounds 3] [--iters 15] [--out benchmarks/results/int8_fallback_cost.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

import calibration
from calibration.cost import node_macs
from vgg_deploy.benchmark.machine import describe_machine
from vgg_deploy.export.layer_names import vgg_layer_names
from vgg_deploy.export.onnx_fp32 import INPUT_NAME, export_fp32
from vgg_deploy.model import new_vgg16
from vgg_deploy.preprocessing import Preprocessing
from vgg_deploy.runners.spec import RunnerSpec
from vgg_deploy.timing.isolated import time_rounds
from vgg_deploy.timing.stats import TimingPolicy

KEPT = ("fc8", "fc7", "fc6", "conv5_3", "conv1_2", "conv1_1")


def build_variants(work: Path) -> dict[str, tuple[Path, int]]:
    """{variant: (Q/DQ file, multiply-adds kept in FP32)}."""
    work.mkdir(parents=True, exist_ok=True)
    fp32 = work / "model.onnx"
    torch.manual_seed(0)
    export_fp32(new_vgg16(num_classes=10).eval(), preprocessing=Preprocessing.for_image_size(224),
                class_names=[str(i) for i in range(10)], out=fp32)
    rng = np.random.default_rng(0)
    batches = [rng.standard_normal((4, 3, 224, 224)).astype(np.float32) for _ in range(4)]
    cache = calibration.RangeCache(work / "calibration")
    cache.store(calibration.CalibrationKey.build("bench", "bench", "minmax"),
                calibration.collect_ranges(fp32, batches, input_name=INPUT_NAME, method="minmax"))
    by_layer = {layer: node for node, layer in vgg_layer_names(fp32).items()}
    macs = node_macs(fp32, (3, 224, 224))
    variants = {}
    out = work / "int8-all.onnx"
    calibration.quantize_qdq(fp32, out, ranges_path=cache.ranges_path, method="minmax")
    variants["all INT8"] = (out, 0)
    for name in KEPT:
        for float_input in (True, False):
            out = work / f"int8-{name}-{'float' if float_input else 'rounded'}-input.onnx"
            calibration.quantize_qdq(fp32, out, ranges_path=cache.ranges_path, method="minmax",
                                     exclude_nodes=[by_layer[name]], float_inputs_for_excluded=float_input)
            label = f"{name} FP32, {'float' if float_input else 'int8-rounded'} input"
            variants[label] = (out, macs[by_layer[name]])
    return variants


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iters", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("/tmp/vgg-int8-fallback-cost"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/int8_fallback_cost.json"))
    args = parser.parse_args()
    variants = build_variants(args.work)
    total_macs = sum(node_macs(args.work / "model.onnx", (3, 224, 224)).values())
    specs = [RunnerSpec("onnxruntime", name, str(path), precision="int8", threads=args.threads)
             for name, (path, _) in variants.items()]
    policy = TimingPolicy(warmup_iterations=5, warmup_seconds=3.0, min_iterations=args.iters,
                          max_iterations=args.iters, time_budget_s=0.0)
    pool = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    timings = time_rounds(specs, pool, [1], policy, rounds=args.rounds, workdir=args.work,
                          on_round=lambda r, key, per: print(f"round {r + 1}: {key}: "
                                                             f"{1000 * statistics.median(per['1'][-1]):.1f} ms", flush=True))
    samples = {name: [1000 * statistics.median(durations) for durations in timings[f"{name} (onnxruntime)"]["1"]]
               for name in variants}
    medians = {name: statistics.median(values) for name, values in samples.items()}
    base = medians["all INT8"]
    record = {
        "what": "VGG16 224 px, batch 1, onnxruntime CPU: one layer kept in FP32 vs all INT8 (median of per-round medians)",
        "machine": describe_machine(), "date": time.strftime("%Y-%m-%d"),
        "settings": {"rounds": args.rounds, "iters_per_round": args.iters, "threads": args.threads},
        "variants": {name: {"ratio_to_all_int8": round(medians[name] / base, 3),
                            "fp32_share_of_macs": round(variants[name][1] / total_macs, 5),
                            "per_round_ms": [round(v, 2) for v in samples[name]]} for name in variants},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    for name, entry in record["variants"].items():
        print(f"{name:34s} {entry['ratio_to_all_int8']:.3f}x all-INT8  ({100 * entry['fp32_share_of_macs']:.2f}% of MACs in FP32)")


if __name__ == "__main__":
    main()
