"""Latency measurement and its statistics. The clock is injectable so the statistics are testable."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TimingPolicy:
    warmup_iterations: int = 5
    warmup_seconds: float = 1.0  # warm up for at least this long too: first calls run far slower
    min_iterations: int = 5
    max_iterations: int = 100
    time_budget_s: float = 10.0


def measure(step: Callable[[], None], policy: TimingPolicy, *, clock: Callable[[], float] = time.perf_counter) -> list[float]:
    """Durations in seconds of `step` (which must include any device synchronisation)."""
    start = clock()
    done = 0
    while done < policy.warmup_iterations or clock() - start < policy.warmup_seconds:
        step()
        done += 1
    durations: list[float] = []
    budget_start = clock()
    while len(durations) < policy.max_iterations:
        t0 = clock()
        step()
        durations.append(clock() - t0)
        if len(durations) >= policy.min_iterations and clock() - budget_start >= policy.time_budget_s:
            break
    return durations


# A tail percentile needs enough samples for at least one to lie beyond it: p90 from 10, p99 from 100.
PERCENTILES = (50, 90, 99)


def min_samples(percentile: float) -> int:
    return int(np.ceil(100.0 / (100.0 - percentile) - 1e-9)) if percentile > 50 else 1


def summarize(durations_s: list[float], *, batch_size: int) -> tuple[dict, float]:
    """({p50, p90, p99, mean, iterations, too_few_samples_for} in ms, throughput in images/s). A percentile
    with fewer samples than min_samples() is None and named in too_few_samples_for, not estimated."""
    ms = np.asarray(durations_s, dtype=np.float64) * 1000.0
    stats: dict = {}
    too_few = []
    for q in PERCENTILES:
        if ms.size >= min_samples(q):
            stats[f"p{q}"] = float(np.percentile(ms, q))
        else:
            stats[f"p{q}"] = None
            too_few.append(f"p{q}")
    stats |= {"mean": float(ms.mean()), "iterations": int(ms.size), "too_few_samples_for": too_few}
    throughput = batch_size / (stats["mean"] / 1000.0) if stats["mean"] > 0 else float("inf")
    return stats, throughput


def summarize_rounds(rounds: list[list[float]], *, batch_size: int) -> tuple[dict, float]:
    """Like summarize, over every timed iteration of every round, except that p50 is the median of the
    per-round medians (each round ran in its own process, in its own slot of the machine's noise), and the
    per-round medians and their spread (max - min, % of p50) are reported beside it."""
    stats, _ = summarize([d for durations in rounds for d in durations], batch_size=batch_size)
    medians = [float(np.median(durations)) * 1000.0 for durations in rounds]
    stats["p50"] = float(np.median(medians))
    stats["round_p50"] = [round(m, 4) for m in medians]
    stats["rounds"] = len(medians)
    stats["spread_pct"] = round(100.0 * (max(medians) - min(medians)) / stats["p50"], 2) if stats["p50"] > 0 else 0.0
    throughput = batch_size / (stats["p50"] / 1000.0) if stats["p50"] > 0 else float("inf")
    return stats, throughput
