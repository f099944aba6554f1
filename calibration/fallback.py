"""The accuracy fallback: which quantized nodes to keep in float, chosen by what they buy per cost.

Each step re-ranks the nodes still quantized by SQNR (the previous change moved the noise), tries the
most sensitive few and the cheapest few (then, if none helps, the rest in SQNR order until one does), and
keeps the one that recovers the most agreement with FP32 per millisecond it costs in float (`cost`, e.g.
cost.float_cost_ms: arithmetic or weight reads, whichever is slower). A node that
recovers nothing is never kept: when no node helps, the search stops short of the budget. Keeping a cheap classifier layer is preferred to an early convolution
that costs a tenth of the INT8 latency, unless only the convolution helps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

# Trials per step: the most sensitive nodes by SQNR, and the cheapest nodes that still add noise.
MOST_SENSITIVE_TRIALS = 3
CHEAPEST_TRIALS = 2


@dataclass
class FallbackResult:
    kept: list[str]
    disagreement: float
    met: bool
    steps: list[dict] = field(default_factory=list)


def search_fallback(
    *, build: Callable[[list[str]], Path], disagreement: Callable[[Path], float],
    rank: Callable[[Path], list[tuple[str, float]]], cost: dict[str, float], budget: float, max_kept: int,
) -> FallbackResult:
    """`build(kept)` writes the Q/DQ model with `kept` in float and returns its path; `disagreement(path)` is
    its top-1 disagreement with FP32 in points on the decision images; `rank(path)` is [(node, SQNR drop dB)],
    most sensitive first; `cost[node]` what keeping it in float costs (ms). Stops once within `budget`, or after `max_kept` nodes (then `met` is False).
    On return the file `build` writes holds the last choice."""
    kept: list[str] = []
    path = build(kept)
    current = disagreement(path)
    steps: list[dict] = []
    while current > budget and len(kept) < max_kept:
        ranking = [(node, db) for node, db in rank(path) if node not in kept]
        if not ranking:
            break
        candidates = ranking[:MOST_SENSITIVE_TRIALS]
        noisy = [item for item in ranking[MOST_SENSITIVE_TRIALS:] if item[1] > 0]
        candidates += sorted(noisy, key=lambda item: cost[item[0]])[:CHEAPEST_TRIALS]
        # When none of those helps, the rest are tried in SQNR order until one does: keeping a layer that
        # recovers nothing only costs time.
        candidates += [item for item in ranking if item not in candidates]
        trials: list[dict] = []
        for index, (node, drop_db) in enumerate(candidates):
            if index >= MOST_SENSITIVE_TRIALS + CHEAPEST_TRIALS and any(t["recovered"] > 0 for t in trials):
                break
            after = disagreement(build([*kept, node]))
            trials.append({"node": node, "sqnr_drop_db": round(float(drop_db), 3), "cost_ms": round(cost[node], 4),
                           "disagreement": after, "recovered": current - after})
        helpful = [t for t in trials if t["recovered"] > 0]
        if not helpful:
            build(kept)
            break
        best = max(helpful, key=lambda t: (t["recovered"] / max(t["cost_ms"], 1e-6), t["recovered"]))
        why = "most agreement recovered per millisecond kept in float"
        kept.append(best["node"])
        path = build(kept)
        steps.append({"kept": best["node"], "why": why, "disagreement_before": current,
                      "disagreement_after": best["disagreement"], "trials": trials})
        current = best["disagreement"]
    return FallbackResult(kept=kept, disagreement=current, met=current <= budget, steps=steps)
