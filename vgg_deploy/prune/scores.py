"""How much each output channel (conv) or unit (fc6, fc7) matters, per VGG layer; the lowest go first.

- `l1`, `l2`: the norm of the unit's incoming weights (Li et al. 2017, "Pruning Filters for Efficient ConvNets").
- `taylor`: |activation x gradient of the loss| per channel, averaged over the spatial positions and then over
  images (Molchanov et al. 2017): the first-order change in the loss if that channel were removed. It needs
  labelled batches; the norms need none.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from vgg_deploy.widths import CONV_NAMES, PRUNABLE, layer_modules

CRITERIA = ("taylor", "l1", "l2")


def weight_norm_scores(model: nn.Module, *, p: int) -> dict[str, torch.Tensor]:
    modules = layer_modules(model)
    return {name: modules[name].weight.detach().float().flatten(1).norm(p=p, dim=1).cpu() for name in PRUNABLE}


def relu_after(model: nn.Module) -> dict[str, nn.Module]:
    """The ReLU that follows each prunable layer: its output is the activation the next layer reads."""
    out = {}
    for container in (model.features, model.classifier):
        modules = list(container)
        for index, module in enumerate(modules[:-1]):
            if isinstance(module, (nn.Conv2d, nn.Linear)) and isinstance(modules[index + 1], nn.ReLU):
                out[id(module)] = modules[index + 1]
    layers = layer_modules(model)
    return {name: out[id(layers[name])] for name in PRUNABLE}


def taylor_scores(model: nn.Module, batches: Iterable, *, loss_fn: nn.Module, device: torch.device,
                  max_batches: int) -> dict[str, torch.Tensor]:
    """Per-channel mean of |a * dL/da| over at most `max_batches` batches, with the model in eval mode (no
    dropout, so the scores are a function of the weights and the images alone)."""
    totals: dict[str, torch.Tensor] = {}
    seen = 0
    handles = []

    def watch(name: str):
        def forward_hook(_module, _inputs, output):
            activation = output.detach()

            def gradient_hook(grad):
                contribution = activation * grad
                if name in CONV_NAMES:
                    contribution = contribution.mean(dim=(2, 3))  # per image and channel, over positions
                totals[name] = totals.get(name, 0) + contribution.abs().sum(dim=0).float().cpu()

            output.register_hook(gradient_hook)

        return forward_hook

    for name, relu in relu_after(model).items():
        handles.append(relu.register_forward_hook(watch(name)))
    was_training = model.training
    model.eval()
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(True)
    try:
        for index, (inputs, labels) in enumerate(batches):
            if index >= max_batches:
                break
            inputs, labels = inputs.to(device), labels.to(device)
            model.zero_grad(set_to_none=True)
            loss_fn(model(inputs).float(), labels).backward()
            seen += labels.shape[0]
    finally:
        for handle in handles:
            handle.remove()
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    if not seen:
        raise ValueError("the Taylor criterion needs at least one training batch")
    return {name: totals[name] / seen for name in PRUNABLE}


def channel_scores(model: nn.Module, criterion: str, *, batches: Iterable | None = None, loss_fn=None,
                   device: torch.device | None = None, max_batches: int = 8) -> dict[str, torch.Tensor]:
    if criterion == "l1":
        return weight_norm_scores(model, p=1)
    if criterion == "l2":
        return weight_norm_scores(model, p=2)
    if criterion == "taylor":
        return taylor_scores(model, batches, loss_fn=loss_fn, device=device, max_batches=max_batches)
    raise ValueError(f"unknown criterion {criterion!r}; choose from {', '.join(CRITERIA)}")
