"""Pruning on the learned 224 px model: accuracy against latency, uniform against per-layer widths.

Source: `learned_224.py`'s run (the offline backbone with a pooled head learned on `textures` at 224 px; 240
test images, so one image is 0.42 points). For each allocation (`--allocation uniform` and `sensitivity`) and
each target (`--target-macs`, default 0.7, 0.5, 0.35, 0.25):

1. `vgg-deploy prune RUN --target-macs M --allocation A --steps S --epochs E` (distillation on, val picks each
   step's checkpoint, test only reported) and its wall time on this machine;
2. `vgg-deploy export` of the pruned run with the defaults (onnx, onnx-int8: minmax, `--equalize auto`), and
   the INT8 file's test top-1 (its manifest's `accuracy`, every test image) against the dense run's FP32;
3. batch-1 latency of every INT8 file on OpenVINO against the dense run's own INT8 file, exported with the same
   defaults: each file in its own process, all of them in one set of alternating rounds;
4. the two allocations at equal latency: each point beside the other allocation's top-1 at its speed-up,
   interpolated between that allocation's neighbouring points.

    python benchmarks/prune_224.py [--work /tmp/learned224] [--allocations uniform,sensitivity] [--macs 0.5]

The sensitivity table does not depend on the target: the first sensitivity point measures it (its
`sensitivity_seconds` say what that cost) and the others reuse it with `prune --sensitivity-from`, so their wall
time is the prune alone.

A point already pruned and exported under --work is reused (its recorded wall time too), so the frontier can be
filled in over several invocations; the latency rounds time every point whose folder is under --work, side by
side, and a recorded point whose folder is gone is dropped (its speed-up came from other rounds).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from learned_224 import default_int8_entry, time_int8_files  # this script's source run is learned_224's
from vgg_deploy.benchmark.machine import describe_machine

MACS = (0.7, 0.5, 0.35, 0.25)
ALLOCATIONS = ("uniform", "sensitivity")
ROUNDS = 3
TIMING = dict(warmup_iterations=3, warmup_seconds=1.0, min_iterations=10, max_iterations=100, time_budget_s=5.0)


def measured_table(work: Path) -> Path | None:
    """A sensitivity point under `work` that measured its table itself (prune refuses it if its options differ)."""
    for folder in sorted(work.glob("pruned-sensitivity-*")):
        target = folder / "prune_target.json"
        if target.is_file() and json.loads(target.read_text()).get("sensitivity_seconds") is not None:
            return folder
    return None


def prune_point(source: Path, out: Path, *, macs: float, allocation: str, steps: int, epochs: int,
                sensitivity_images: int, sensitivity_from: Path | None) -> dict:
    from vgg_deploy.prune import PruneConfig, prune

    timing_file = out.parent / f"{out.name}.seconds.json"
    if not (out / "model.json").is_file():
        started = time.perf_counter()
        prune(PruneConfig(run=str(source), out=str(out), target_macs=macs, allocation=allocation, steps=steps,
                          epochs=epochs, sensitivity_images=sensitivity_images, latency_rounds=0, workers=0,
                          sensitivity_from=None if sensitivity_from is None else str(sensitivity_from)))
        timing_file.write_text(json.dumps({"prune_seconds": round(time.perf_counter() - started, 1)}))
    info = json.loads((out / "model.json").read_text())
    log, target = info["pruning"]["steps_report"], info["pruning"]["target"]
    return {"macs_fraction": log[-1]["macs"] / log[0]["macs"], "widths": info["widths"],
            "val_top1": log[-1]["val_top1"], "fp32_test_top1": log[-1]["test_top1"],
            **{key: target[key] for key in ("sensitivity_seconds", "sensitivity_from") if key in target},
            **json.loads(timing_file.read_text())}


def int8_figures(entry: dict) -> dict:
    accuracy = entry["accuracy"]
    return {"int8_test_top1": accuracy["top1"], "int8_agreement_with_own_fp32": accuracy["top1_agreement"],
            "test_images": accuracy["images"], "equalization_applied": entry["equalization"]["applied"],
            "export_seconds": entry.get("_export_seconds")}


def exported_point(folder: Path) -> dict:
    """int8_figures of a pruned point's default INT8 file; its export time is kept beside the prune time, so a
    point reused by a later invocation still reports it."""
    timing_file = folder.parent / f"{folder.name}.seconds.json"
    figures = int8_figures(default_int8_entry(folder))
    recorded = json.loads(timing_file.read_text())
    if figures["export_seconds"] is None:
        figures["export_seconds"] = recorded.get("export_seconds")
    else:
        timing_file.write_text(json.dumps({**recorded, "export_seconds": figures["export_seconds"]}))
    return figures


def openvino_latency(files: dict[str, Path], image_size: int, rounds: int) -> dict[str, dict]:
    from vgg_deploy.timing.stats import TimingPolicy

    timed = time_int8_files(files, backends=("openvino",), timing=TimingPolicy(**TIMING), rounds=rounds,
                            image_size=image_size)
    for name in files:
        if "error" in timed[f"{name} (openvino)"]:
            raise RuntimeError(f"timing {name} on OpenVINO failed: {timed[f'{name} (openvino)']['error']}")
    return {name: timed[f"{name} (openvino)"] for name in files}


def at_equal_latency(points: list[dict]) -> list[dict]:
    """Each timed point beside the other allocation's INT8 test top-1 at the same speed-up, interpolated
    linearly between that allocation's two nearest timed points (only inside its measured range)."""
    curves = {a: sorted(((p["speedup"], p["int8_test_top1"]) for p in points if p["allocation"] == a and "speedup" in p))
              for a in ALLOCATIONS}
    rows = []
    for point in points:
        if "speedup" not in point:
            continue
        other = next(a for a in ALLOCATIONS if a != point["allocation"])
        curve = curves[other]
        for (s_lo, a_lo), (s_hi, a_hi) in zip(curve, curve[1:]):
            if s_lo <= point["speedup"] <= s_hi:
                share = (point["speedup"] - s_lo) / (s_hi - s_lo) if s_hi > s_lo else 0.0
                rows.append({"allocation": point["allocation"], "target_macs": point["target_macs"],
                             "speedup": point["speedup"], "int8_test_top1": point["int8_test_top1"],
                             f"{other}_int8_test_top1_interpolated": a_lo + share * (a_hi - a_lo)})
                break
    return rows


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for allocation, marker in zip(ALLOCATIONS, "os"):
        points = sorted((p for p in results["points"] if p["allocation"] == allocation and "speedup" in p),
                        key=lambda p: p["speedup"])
        if points:
            ax.plot([p["speedup"] for p in points], [p["int8_test_top1"] for p in points], marker=marker,
                    label=f"{allocation} widths")
            for p in points:
                ax.annotate(f"{p['target_macs']:g}", (p["speedup"], p["int8_test_top1"]), textcoords="offset points",
                            xytext=(4, -10), fontsize=7)
    dense = results["dense"]
    ax.scatter([1.0], [dense["int8_test_top1"]], marker="*", s=120, color="black", label="dense INT8")
    ax.axhspan(dense["fp32_test_top1"] - 0.01, dense["fp32_test_top1"], color="green", alpha=0.1,
               label=f"within 1 point of dense FP32 (one test image: {100 / dense['test_images']:.2f} points)")
    ax.axhline(dense["fp32_test_top1"], color="green", lw=0.8)
    ax.axvline(2.5, color="gray", ls=":", lw=0.8, label="2.5x target")
    ax.set(xlabel="speed-up over the dense INT8 file, OpenVINO, batch 1", ylabel="INT8 test top-1",
           title="pruning at 224 px: accuracy against speed (labels: MACs kept)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="/tmp/learned224")
    parser.add_argument("--allocations", default=",".join(ALLOCATIONS))
    parser.add_argument("--macs", default=",".join(map(str, MACS)))
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=1, help="recovery epochs per step")
    parser.add_argument("--sensitivity-images", type=int, default=64,
                        help="val images for --allocation sensitivity (at 224 px each of its 39 evaluations costs "
                             "about 0.15 s an image here)")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--json", default=str(Path(__file__).parent / "results" / "prune_224.json"))
    args = parser.parse_args()
    work, out = Path(args.work), Path(args.json)
    source = work / "run"
    results = json.loads(out.read_text()) if out.is_file() else {"points": []}
    results.update(machine=describe_machine(), settings={"steps": args.steps, "epochs": args.epochs,
                                                         "sensitivity_images": args.sensitivity_images,
                                                         "rounds": args.rounds, "timing": TIMING})

    def save():
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n")

    source_info = json.loads((source / "model.json").read_text())
    dense_entry = default_int8_entry(source)
    results["dense"] = {"fp32_test_top1": source_info["metrics"]["test"]["top1"], **int8_figures(dense_entry)}
    save()
    files = {"dense": source / "export" / dense_entry["path"]}
    for allocation in args.allocations.split(","):
        for macs in map(float, args.macs.split(",")):
            folder = work / f"pruned-{allocation}-{macs:g}"
            table = measured_table(work) if allocation == "sensitivity" else None
            point = {"allocation": allocation, "target_macs": macs,
                     **prune_point(source, folder, macs=macs, allocation=allocation, steps=args.steps,
                                   epochs=args.epochs, sensitivity_images=args.sensitivity_images,
                                   sensitivity_from=table)}
            point.update(exported_point(folder))
            point["drop_vs_dense_fp32_points"] = 100 * (results["dense"]["fp32_test_top1"] - point["int8_test_top1"])
            results["points"] = [p for p in results["points"]
                                 if (p["allocation"], p["target_macs"]) != (allocation, macs)] + [point]
            print(json.dumps({k: v for k, v in point.items() if k != "widths"}), flush=True)
            save()
    for point in list(results["points"]):
        folder = work / f"pruned-{point['allocation']}-{point['target_macs']:g}"
        if (folder / "export" / "model.int8.onnx").is_file():
            files[f"{point['allocation']}-{point['target_macs']:g}"] = folder / "export" / "model.int8.onnx"
        else:
            print(f"dropped {folder.name}: not under --work, so not in these rounds", flush=True)
            results["points"].remove(point)
    latency = openvino_latency(files, source_info["preprocessing"]["image_size"], args.rounds)
    results["latency_openvino_int8"] = latency
    for point in results["points"]:
        key = f"{point['allocation']}-{point['target_macs']:g}"
        if key in latency:
            point["speedup"] = latency["dense"]["p50_ms"] / latency[key]["p50_ms"]
    results["at_equal_latency"] = at_equal_latency(results["points"])
    save()
    plot(results, out.with_suffix(".png"))
    print(json.dumps({k: round(v["p50_ms"], 2) for k, v in latency.items()}))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
