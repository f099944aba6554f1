"""Does `vgg-deploy benchmark` give the same answer twice? Runs the command N times on one run folder
(each run: every row in its own process, --rounds alternating rounds) and compares, per row, the batch-1
p50 and the speed-up against eager PyTorch between runs.

    python benchmarks/benchmark_repeatability.py demo/run --runs 2 --rounds 3

Results: benchmarks/results/benchmark_repeatability.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from vgg_deploy.benchmark.machine import describe_machine

RESULTS = Path(__file__).parent / "results" / "benchmark_repeatability.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--out", type=Path, default=RESULTS, help="summary JSON; each run's report is kept beside it")
    args = parser.parse_args()
    reports = []
    for index in range(args.runs):
        command = [sys.executable, "-m", "vgg_deploy", "benchmark", str(args.run), "--rounds", str(args.rounds),
                   "--batch-sizes", args.batch_sizes]
        print(f"run {index + 1}/{args.runs}: {' '.join(command)}", flush=True)
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        report = json.loads((args.run / "benchmark" / "report.json").read_text())
        shutil.copy(args.run / "benchmark" / "report.json", args.out.with_name(f"{args.out.stem}_run{index + 1}.json"))
        reports.append(report)
    rows = {}
    for report in reports:
        for row in report["results"]:
            if row["status"] == "ok":
                key = f"{row['artifact']} ({row['backend']})"
                rows.setdefault(key, []).append({"p50_ms": row["latency_ms"]["1"]["p50"],
                                                 "speedup_vs_pytorch": row["speedup"]["vs_pytorch"]["1"]})
    summary = {}
    print("\n| row | batch-1 p50, ms, per run | max/min | speed-up vs eager PyTorch, per run | max/min |\n|---|---|---|---|---|")
    for key, runs in rows.items():
        p50s = [r["p50_ms"] for r in runs]
        ratios = [r["speedup_vs_pytorch"] for r in runs]
        summary[key] = {"runs": runs, "p50_max_over_min": max(p50s) / min(p50s),
                        "speedup_max_over_min": max(ratios) / min(ratios)}
        print(f"| {key} | {', '.join(f'{p:.3f}' for p in p50s)} | {summary[key]['p50_max_over_min']:.3f} | "
              f"{', '.join(f'{r:.3f}' for r in ratios)} | {summary[key]['speedup_max_over_min']:.3f} |")
    args.out.write_text(json.dumps({"settings": {**vars(args), "run": str(args.run), "out": str(args.out)}, "machine": describe_machine(),
                                   "rows": summary}, indent=2) + "\n")


if __name__ == "__main__":
    main()
