"""A VGG16 whose layers may be narrower than torchvision's: its widths by VGG layer name, the model built from
them (same module paths and state-dict keys, so a pruned model.safetensors loads like a dense one), and the
work it does (multiply-adds, parameters)."""

from __future__ import annotations

import math

from torch import nn

# torchvision VGG16's convolutions, block by block (a max-pool closes each block).
CONV_BLOCKS: tuple[tuple[str, ...], ...] = (
    ("conv1_1", "conv1_2"),
    ("conv2_1", "conv2_2"),
    ("conv3_1", "conv3_2", "conv3_3"),
    ("conv4_1", "conv4_2", "conv4_3"),
    ("conv5_1", "conv5_2", "conv5_3"),
)
CONV_NAMES = tuple(name for block in CONV_BLOCKS for name in block)
HIDDEN_FC = ("fc6", "fc7")
PRUNABLE = CONV_NAMES + HIDDEN_FC
DENSE_WIDTHS: dict[str, int] = {
    **{name: 64 * 2 ** min(index, 3) for index, block in enumerate(CONV_BLOCKS) for name in block},
    "fc6": 4096,
    "fc7": 4096,
}
POOLED = 7  # torchvision's AdaptiveAvgPool2d((7, 7)) before fc6, whatever the image size


def layer_modules(model: nn.Module) -> dict[str, nn.Module]:
    """{VGG name: its Conv2d/Linear} for conv1_1 ... conv5_3, fc6, fc7, fc8."""
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.classifier if isinstance(m, nn.Linear)]
    if len(convs) != len(CONV_NAMES) or len(linears) != 3:
        raise ValueError(f"not a VGG16: {len(convs)} convolutions and {len(linears)} linear layers")
    return {**dict(zip(CONV_NAMES, convs)), **dict(zip((*HIDDEN_FC, "fc8"), linears))}


def widths_of(model: nn.Module) -> dict[str, int]:
    modules = layer_modules(model)
    return {name: (modules[name].out_channels if name in CONV_NAMES else modules[name].out_features) for name in PRUNABLE}


def check_widths(widths: dict) -> dict[str, int]:
    """A widths mapping as model.json may hold it, validated: every prunable layer, each 1..dense."""
    if set(widths) != set(PRUNABLE):
        missing = sorted(set(PRUNABLE) - set(widths)) or sorted(set(widths) - set(PRUNABLE))
        raise ValueError(f"widths must name exactly {', '.join(PRUNABLE)} (differs at {missing[0]})")
    for name in PRUNABLE:
        value = widths[name]
        if not isinstance(value, int) or not 1 <= value <= DENSE_WIDTHS[name]:
            raise ValueError(f"width of {name} must be an integer in 1..{DENSE_WIDTHS[name]} (got {value!r})")
    return {name: widths[name] for name in PRUNABLE}


def is_dense(widths: dict[str, int] | None) -> bool:
    return widths is None or dict(widths) == DENSE_WIDTHS


def vgg16_with_widths(num_classes: int, widths: dict[str, int] | None = None) -> nn.Module:
    """torchvision's VGG16 (its class, its layer factory, its init) with the given widths."""
    from torchvision.models.vgg import VGG, make_layers

    widths = DENSE_WIDTHS if widths is None else check_widths(widths)
    config: list = []
    for block in CONV_BLOCKS:
        config += [widths[name] for name in block] + ["M"]
    model = VGG(make_layers(config, batch_norm=False), num_classes=num_classes)
    if is_dense(widths):
        return model
    # VGG's classifier is fixed at 512*7*7 -> 4096 -> 4096; rebuild its three linear layers to the widths,
    # with torchvision's own init for them.
    shapes = ((widths["conv5_3"] * POOLED * POOLED, widths["fc6"]), (widths["fc6"], widths["fc7"]),
              (widths["fc7"], num_classes))
    for index, (fan_in, fan_out) in zip((0, 3, 6), shapes):
        layer = nn.Linear(fan_in, fan_out)
        nn.init.normal_(layer.weight, 0, 0.01)
        nn.init.constant_(layer.bias, 0)
        model.classifier[index] = layer
    return model


def multiply_adds(widths: dict[str, int] | None, *, image_size: int, num_classes: int) -> int:
    """Multiply-adds of one image's forward pass through the convolutions and fully connected layers."""
    widths = DENSE_WIDTHS if widths is None else widths
    total, channels, side = 0, 3, image_size
    for block in CONV_BLOCKS:
        for name in block:
            total += channels * widths[name] * 9 * side * side
            channels = widths[name]
        side = math.floor(side / 2)
    total += channels * POOLED * POOLED * widths["fc6"] + widths["fc6"] * widths["fc7"] + widths["fc7"] * num_classes
    return total


def parameter_count(widths: dict[str, int] | None, *, num_classes: int) -> int:
    widths = DENSE_WIDTHS if widths is None else widths
    total, channels = 0, 3
    for name in CONV_NAMES:
        total += channels * widths[name] * 9 + widths[name]
        channels = widths[name]
    fan_ins = (channels * POOLED * POOLED, widths["fc6"], widths["fc7"])
    fan_outs = (widths["fc6"], widths["fc7"], num_classes)
    return total + sum(i * o + o for i, o in zip(fan_ins, fan_outs))


def scaled_widths(source: dict[str, int], keep: float, *, round_to: int) -> dict[str, int]:
    """Each prunable layer kept at `keep` of its source width, rounded to a multiple of `round_to` (so INT8
    VNNI and tensor-core kernels stay on full tiles), never below `round_to` nor above the source width."""
    if not 0 < keep <= 1:
        raise ValueError(f"keep fraction must be in (0, 1], got {keep}")
    out = {}
    for name in PRUNABLE:
        rounded = max(round_to, int(round(source[name] * keep / round_to)) * round_to)
        out[name] = min(source[name], rounded)
    return out
