"""Remove the lowest-scoring channels of each layer, and everything that depends on them.

Torch-Pruning's dependency graph (DepGraph, Fang et al. 2023) does the surgery: a conv's output channels
take the next conv's input channels with them, and conv5_3's channels take their 7x7 = 49 columns each of
fc6's weight across the flatten (checked in tests/prune: removing a dead channel leaves the logits equal).
"""

from __future__ import annotations

import torch
from torch import nn

from vgg_deploy.widths import CONV_NAMES, PRUNABLE, layer_modules, widths_of


def channels_to_remove(scores: torch.Tensor, keep: int) -> list[int]:
    """The indices of the len(scores) - keep lowest scores (ties broken by index, so it is deterministic)."""
    order = sorted(range(len(scores)), key=lambda i: (float(scores[i]), i))
    return sorted(order[: len(scores) - keep])


def prune_to_widths(model: nn.Module, widths: dict[str, int], scores: dict[str, torch.Tensor]) -> nn.Module:
    """`model`, pruned in place to `widths` (each at most its current width), keeping the highest scores."""
    import torch_pruning as tp

    current = widths_of(model)
    grown = [name for name in PRUNABLE if widths[name] > current[name]]
    if grown:
        raise ValueError(f"{grown[0]} is {current[grown[0]]} wide; pruning cannot widen it to {widths[grown[0]]}")
    device = next(model.parameters()).device
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(True)  # the graph is traced through autograd
    # The flatten's index mapping depends on the pooled 7x7 map only, so a small input traces the same graph.
    example = torch.zeros(1, 3, 32, 32, device=device)
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    modules = layer_modules(model)
    for name in PRUNABLE:
        if widths[name] == current[name]:
            continue
        prune = tp.prune_conv_out_channels if name in CONV_NAMES else tp.prune_linear_out_channels
        group = graph.get_pruning_group(modules[name], prune, idxs=channels_to_remove(scores[name], widths[name]))
        group.prune()
    for p, flag in zip(model.parameters(), flags):
        p.requires_grad_(flag)
    reached = widths_of(model)
    if reached != dict(widths):
        raise RuntimeError(f"pruning reached {reached}, not {widths}")
    return model
