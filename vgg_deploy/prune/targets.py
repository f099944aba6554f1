"""How far to prune: the fraction of each layer's width to keep, found from `--target-macs` by arithmetic, or
from `--target-speedup` by measuring candidate widths on the runtime (latency is a function of the shapes, not
the weights, so the candidates carry random weights)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

from vgg_deploy.console import console
from vgg_deploy.errors import VggDeployError
from vgg_deploy.widths import multiply_adds, scaled_widths

SEARCH_ITERATIONS = 6  # bisection on the keep fraction: 1/64 of the range, finer than 8-channel rounding


def keep_for_macs(source: dict[str, int], target: float, *, image_size: int, num_classes: int, round_to: int) -> float:
    """The largest keep fraction (1/1000 steps) whose rounded widths do at most `target` of the source's work."""
    if not 0 < target < 1:
        raise VggDeployError(f"--target-macs is a fraction of the source model's multiply-adds, in (0, 1) (got {target})")
    full = multiply_adds(source, image_size=image_size, num_classes=num_classes)
    for thousandths in range(1000, 0, -1):
        keep = thousandths / 1000
        macs = multiply_adds(scaled_widths(source, keep, round_to=round_to), image_size=image_size, num_classes=num_classes)
        if macs <= target * full:
            return keep
    raise VggDeployError(f"--target-macs {target}: even {round_to}-wide layers do more work than that")


def keep_for_speedup(target: float, *, widths_for: Callable[[float], dict[str, int]],
                     speedup_of: Callable[[dict[str, int], Path], float]) -> tuple[float, list[dict]]:
    """The largest fraction whose widths (`widths_for(fraction)`: every layer's keep fraction, or the share of
    the multiply-adds a per-layer allocation does) run at least `target` times faster than the source, by
    bisection on measured speed-ups (`speedup_of(widths, workdir)`). Returns it and every probe."""
    if target <= 1:
        raise VggDeployError(f"--target-speedup must be above 1 (got {target})")
    probes: list[dict] = []
    low, high = 0.0, 1.0  # `low` is known fast enough (or 0), `high` known too slow (or 1)
    with tempfile.TemporaryDirectory(prefix="vgg-deploy-speedup-") as workdir:
        for _ in range(SEARCH_ITERATIONS):
            keep = (low + high) / 2
            speedup = speedup_of(widths_for(keep), Path(workdir))
            probes.append({"keep": round(keep, 4), "speedup": round(speedup, 3)})
            console.print(f"speed-up search: keep {keep:.3f} -> {speedup:.2f}x")
            if speedup >= target:
                low = keep
            else:
                high = keep
    if low == 0.0:
        raise VggDeployError(f"--target-speedup {target}: not reached even at keep {high:.3f} "
                             f"({probes[-1]['speedup']:.2f}x measured)")
    return low, probes
