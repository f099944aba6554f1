"""The classifier heads a run can have, both built from torchvision's own VGG class.

- classic: torchvision's fc6 (25088 -> 4096), fc7, fc8.
- pooled: a global average pool and one linear layer, as Keras's `include_top=False, pooling="avg"` plus a
  Dense layer, or timm's `reset_classifier`. It is what a conv-only backbone gets: a random 102M-parameter fc6
  trained on a few hundred images throws the pretrained features away (benchmarks/README.md, "Which head").

The pooled head is a VGG16 with fc6 and fc7 512 wide, so every later step (export, INT8, prune, benchmark,
predict, serve) takes it as the narrower VGG16 it is (widths.py): fc6 averages each conv5 channel's 7x7
pooled map (weights 1/49 on that channel's 49 columns, zero elsewhere), and fc7 is the identity. Both are
exact after a ReLU because conv5's pooled output is never negative. fc8 is the linear layer. fc6 reads 51 MB
of weights instead of 411 MB, and the model has 80% fewer parameters.
"""

from __future__ import annotations

import torch
from torch import nn

from vgg_deploy.widths import DENSE_WIDTHS, POOLED, vgg16_with_widths

CLASSIC = "classic"
POOLED_HEAD = "pooled"
HEADS = (CLASSIC, POOLED_HEAD)
CHANNELS = DENSE_WIDTHS["conv5_3"]


def pooled_head_widths(conv5_channels: int = CHANNELS) -> dict[str, int]:
    return {**DENSE_WIDTHS, "conv5_3": conv5_channels, "fc6": conv5_channels, "fc7": conv5_channels}


@torch.no_grad()
def set_pooling_layers(model: nn.Module) -> None:
    """fc6 := the average of each channel's 7x7 map, fc7 := identity (in place)."""
    fc6, fc7 = model.classifier[0], model.classifier[3]
    channels = fc6.out_features
    cells = POOLED * POOLED
    if fc6.in_features != channels * cells or fc7.in_features != channels or fc7.out_features != channels:
        raise ValueError(f"a pooled head needs fc6 {channels * cells}->{channels} and fc7 {channels}->{channels}")
    weight = torch.zeros(channels, channels * cells)
    for channel in range(channels):
        weight[channel, channel * cells:(channel + 1) * cells] = 1.0 / cells
    fc6.weight.copy_(weight)
    fc6.bias.zero_()
    fc7.weight.copy_(torch.eye(channels))
    fc7.bias.zero_()


def with_pooled_head(model: nn.Module, num_classes: int) -> nn.Module:
    """A pooled-head VGG16 with `model`'s convolutions; fc8 freshly initialised (torchvision's init)."""
    pooled = vgg16_with_widths(num_classes, pooled_head_widths())
    pooled.features.load_state_dict(model.features.state_dict())
    set_pooling_layers(pooled)
    return pooled


def check_head(kind: str, widths: dict[str, int] | None) -> None:
    """What the loader checks of model.json's `head` against its `widths`: a known kind, and for a pooled head
    fc6 and fc7 as wide as conv5_3 (prune cuts the three together)."""
    if kind not in HEADS:
        raise ValueError(f"head kind must be one of {', '.join(HEADS)} (got {kind!r})")
    if kind == POOLED_HEAD and (widths is None or not widths["fc6"] == widths["fc7"] == widths["conv5_3"]):
        shown = "torchvision's 4096" if widths is None else f"{widths['fc6']}/{widths['fc7']}"
        raise ValueError(f"a pooled head needs fc6 and fc7 as wide as conv5_3; widths give {shown}")


def head_info(kind: str) -> dict:
    if kind == POOLED_HEAD:
        return {"kind": POOLED_HEAD, "reads": "the global average of conv5's pooled output",
                "fc6": "average of each channel's 7x7 map (fixed)", "fc7": "identity (fixed)", "fc8": "linear"}
    return {"kind": CLASSIC, "reads": "conv5's 7x7 pooled output, flattened", "fc6": "4096", "fc7": "4096",
            "fc8": "linear"}
