"""Per-layer widths from measured sensitivity (`prune --allocation sensitivity`).

Li et al. 2017 (pruning filters) pruned each VGG16 layer alone and found the early convolutions sensitive and
conv4-5 able to lose half their filters; AMC (He et al. 2018) learns the per-layer ratios. This is the first,
measured on the run itself: each layer's lowest-scoring channels are masked (its ReLU's output zeroed, which is
exactly what removing them computes) at a few keep fractions, one layer at a time, and the val loss is
recorded. Widths are then taken away where they cost the least val loss per multiply-add saved, until the
target is met. Val only: test is never looked at.

The table costs 39 val evaluations (516 s at 224 px on 64 val images, two cores) and does not depend on the target,
so `--sensitivity-from` reuses another prune's, when it was measured as this prune would measure it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from vgg_deploy.errors import VggDeployError
from vgg_deploy.prune.scores import relu_after
from vgg_deploy.prune.surgery import channels_to_remove
from vgg_deploy.widths import CONV_NAMES, PRUNABLE, multiply_adds

ALLOCATIONS = ("uniform", "sensitivity")
# Keep fractions each layer is measured at. No layer is cut below the smallest: what was not measured is not
# known to be safe.
SENSITIVITY_KEEPS = (0.75, 0.5, 0.25)
# The pooled head's fc6 averages conv5_3's channels and fc7 passes them on: their widths follow conv5_3's.
POOLED_TIES = {"conv5_3": ("fc6", "fc7")}
# What a table depends on besides the source's weights: reusing one measured otherwise would allocate from
# other channels' losses than the ones this prune removes.
BASIS_OPTIONS = ("criterion", "seed", "score_batches", "sensitivity_images")


def measure_sensitivity(model: nn.Module, scores: dict[str, torch.Tensor], *, val_loss: Callable[[nn.Module], float],
                        layers: tuple[str, ...] = PRUNABLE, keeps: tuple[float, ...] = SENSITIVITY_KEEPS
                        ) -> dict[str, dict[float, float]]:
    """{layer: {keep fraction: val loss with only that layer's lowest-scoring channels masked}}, 1.0 included."""
    relus = relu_after(model)
    base = val_loss(model)
    table: dict[str, dict[float, float]] = {}
    for layer in layers:
        table[layer] = {1.0: base}
        width = len(scores[layer])
        for keep in keeps:
            mask = torch.ones(width)
            mask[channels_to_remove(scores[layer], max(1, round(width * keep)))] = 0.0
            handle = relus[layer].register_forward_hook(_masking(mask))
            try:
                table[layer][keep] = val_loss(model)
            finally:
                handle.remove()
    return table


def sensitivity_basis(*, source_weights_sha256: str, layers: tuple[str, ...], **options) -> dict:
    """What a sensitivity table was measured on, recorded beside it: the source's weights, the layers, and the
    prune options it depends on (BASIS_OPTIONS)."""
    return {"source_weights_sha256": source_weights_sha256, "layers": list(layers),
            **{name: options[name] for name in BASIS_OPTIONS}, "keeps": list(SENSITIVITY_KEEPS)}


def reused_sensitivity(target: dict, basis: dict, *, where: str) -> dict[str, dict[float, float]]:
    """The table in another prune's recorded target (`where`: its folder, for messages), refused unless it was
    measured on the same `basis`."""
    if "sensitivity" not in target:
        raise VggDeployError(f"--sensitivity-from {where}: that prune used uniform widths and measured no sensitivity")
    recorded = target.get("sensitivity_basis")
    if recorded is None:
        raise VggDeployError(f"--sensitivity-from {where}: its table does not record what it was measured on "
                             "(a prune from before it did); measure anew without --sensitivity-from")
    if recorded.get("source_weights_sha256") != basis["source_weights_sha256"]:
        raise VggDeployError(f"--sensitivity-from {where}: its table was measured on another source run's weights "
                             "(or this run's before they changed)")
    if (recorded.get("layers"), recorded.get("keeps")) != (basis["layers"], basis["keeps"]):
        raise VggDeployError(f"--sensitivity-from {where}: its table covers other layers or keep fractions than "
                             "this prune measures; measure anew without --sensitivity-from")
    for name in BASIS_OPTIONS:
        if recorded.get(name) != basis[name]:
            raise VggDeployError(f"--sensitivity-from {where}: its table was measured with --{name.replace('_', '-')} "
                                 f"{recorded.get(name)}, this prune asks for {basis[name]}; pass the same, or "
                                 "measure anew without --sensitivity-from")
    return {layer: {float(keep): float(loss) for keep, loss in points.items()}
            for layer, points in target["sensitivity"].items()}


def _masking(mask: torch.Tensor):
    def hook(_module, _inputs, output):
        shape = (1, -1) + (1,) * (output.dim() - 2)
        return output * mask.to(output.device, output.dtype).view(shape)

    return hook


def _loss_curve(points: dict[float, float]) -> Callable[[float], float]:
    """Val loss as a function of the keep fraction: measured points made non-increasing in keep (noise cannot
    make a narrower layer look better than a wider one), linear in between."""
    keeps = sorted(points, reverse=True)  # 1.0 first
    losses, worst = [], float("-inf")
    for keep in keeps:
        worst = max(worst, points[keep])
        losses.append(worst)

    def loss(keep: float) -> float:
        for (k_hi, l_hi), (k_lo, l_lo) in zip(zip(keeps, losses), zip(keeps[1:], losses[1:])):
            if k_lo <= keep <= k_hi:
                return l_lo + (l_hi - l_lo) * (keep - k_lo) / (k_hi - k_lo)
        return losses[0] if keep > keeps[0] else losses[-1]

    return loss


def allocate_widths(source: dict[str, int], sensitivity: dict[str, dict[float, float]], *, target_macs: float,
                    image_size: int, num_classes: int, round_to: int, ties: dict[str, tuple[str, ...]] | None = None
                    ) -> dict[str, int]:
    """Widths doing at most `target_macs` of the source's multiply-adds: `round_to` channels at a time are taken
    from the layer where they cost the least (interpolated) val loss per multiply-add saved, never below the
    smallest measured keep fraction. `ties`: layers whose width follows another's (the pooled head)."""
    ties = ties or {}
    curves = {layer: _loss_curve(points) for layer, points in sensitivity.items()}
    floor = {layer: max(round_to, -(-int(source[layer] * min(points)) // round_to) * round_to)
             for layer, points in sensitivity.items()}
    widths = dict(source)
    full = multiply_adds(source, image_size=image_size, num_classes=num_classes)

    def narrowed(layer: str) -> dict[str, int]:
        trial = {**widths, layer: widths[layer] - round_to}
        for follower in ties.get(layer, ()):
            trial[follower] = trial[layer]
        return trial

    macs = full
    while macs > target_macs * full:
        best, best_ratio, best_macs = None, float("inf"), macs
        for layer in sensitivity:
            if widths[layer] - round_to < floor[layer]:
                continue
            trial_macs = multiply_adds(narrowed(layer), image_size=image_size, num_classes=num_classes)
            saved = macs - trial_macs
            if saved <= 0:
                continue
            lost = curves[layer]((widths[layer] - round_to) / source[layer]) - curves[layer](widths[layer] / source[layer])
            ratio = (max(lost, 0.0) + 1e-12) / saved
            if ratio < best_ratio:
                best, best_ratio, best_macs = layer, ratio, trial_macs
        if best is None:
            raise VggDeployError(f"--target-macs {target_macs}: not reachable without cutting a layer below "
                                 f"{min(SENSITIVITY_KEEPS)} of its width (the smallest fraction measured); "
                                 "--allocation uniform goes further")
        widths, macs = narrowed(best), best_macs
    return widths


def measured_layers(head: str) -> tuple[str, ...]:
    """The layers whose width is free: with the pooled head fc6 and fc7 follow conv5_3."""
    from vgg_deploy.heads import POOLED_HEAD

    return CONV_NAMES if head == POOLED_HEAD else PRUNABLE


def step_widths(source: dict[str, int], final: dict[str, int], *, step: int, steps: int,
                round_to: int) -> dict[str, int]:
    """Step `step` of `steps`: each layer at (final/source) ** (step/steps) of its source width, rounded, between
    the two; the last step is `final` itself."""
    if step == steps:
        return dict(final)
    out = {}
    for name in PRUNABLE:
        keep = (final[name] / source[name]) ** (step / steps)
        rounded = int(round(source[name] * keep / round_to)) * round_to
        out[name] = min(source[name], max(final[name], rounded))
    return out
