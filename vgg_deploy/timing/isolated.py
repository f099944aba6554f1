"""Latency measured the way the project's own scripts measure it: each row in its own process, in
alternating rounds (A B C A B C ...), quoted as the median of per-round medians with their spread.

One process per row and round, because an idle thread pool that spins steals the cores from whatever
runs next in the same process, and because on a noisy machine a row timed only once, in one slot, carries
that slot's noise. The worker is `python -m vgg_deploy.timing.isolated SPEC POOL BATCHES TIMING`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np

from vgg_deploy.runners.spec import RunnerSpec, build_runner
from vgg_deploy.timing.stats import TimingPolicy, measure


def time_in_this_process(spec: RunnerSpec, pool: np.ndarray, batch_sizes: list[int], timing: TimingPolicy) -> dict:
    """{batch: [seconds per timed iteration]} for one row, in the calling process."""
    out = {}
    with build_runner(spec) as runner:
        for batch_size in batch_sizes:
            batch = np.concatenate([pool] * -(-batch_size // len(pool)))[:batch_size]
            prepared = runner.prepare(batch)  # outside the timed region: decoding and host-to-device copies

            def step(prepared=prepared):
                runner.run(prepared)
                runner.synchronize()

            out[str(batch_size)] = measure(step, timing)
    return out


def time_rounds(specs: list[RunnerSpec], pool: np.ndarray, batch_sizes: list[int], timing: TimingPolicy, *,
                rounds: int, workdir: Path, on_round=None) -> dict[str, dict | str]:
    """{row name: {batch: [[seconds, ...] per round]}} or {row name: the error that stopped it}."""
    pool_path = workdir / "pool.npy"
    np.save(pool_path, np.ascontiguousarray(pool, dtype=np.float32))
    results: dict[str, dict | str] = {spec.name + _suffix(spec): {str(b): [] for b in batch_sizes} for spec in specs}
    for round_index in range(rounds):
        for spec in specs:
            key = spec.name + _suffix(spec)
            if isinstance(results[key], str):
                continue  # it failed in an earlier round; one error is enough
            command = [sys.executable, "-m", "vgg_deploy.timing.isolated", json.dumps(asdict(spec)), str(pool_path),
                       ",".join(map(str, batch_sizes)), json.dumps(asdict(timing))]
            done = subprocess.run(command, capture_output=True, text=True, check=False)  # a failure is a result
            if done.returncode != 0:
                lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
                results[key] = lines[-1] if lines else f"worker exited with {done.returncode}"
                continue
            for batch, durations in json.loads(done.stdout.strip().splitlines()[-1]).items():
                results[key][batch].append(durations)
            if on_round:
                on_round(round_index, key, results[key])
    return results


def _suffix(spec: RunnerSpec) -> str:
    return f" ({spec.kind})"


def main(argv: list[str]) -> None:
    spec = RunnerSpec(**json.loads(argv[0]))
    pool = np.load(argv[1])
    batch_sizes = [int(b) for b in argv[2].split(",")]
    timing = TimingPolicy(**json.loads(argv[3]))
    if spec.kind == "torch":
        from vgg_deploy.process import use_threads

        use_threads(spec.threads)  # a worker process's entry: onnxruntime and OpenVINO take threads per session
    print(json.dumps(time_in_this_process(spec, pool, batch_sizes, timing)))


if __name__ == "__main__":
    main(sys.argv[1:])
