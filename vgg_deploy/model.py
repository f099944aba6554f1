"""torchvision's VGG16, its named layer groups, and trusted weight loading."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from vgg_deploy.errors import WeightsError
from vgg_deploy.widths import CONV_BLOCKS



def _feature_slices() -> dict[str, tuple[str, slice]]:
    """Each conv block's modules in torchvision's `features`: a Conv2d and a ReLU per conv, then the MaxPool."""
    slices, start = {}, 0
    for index, block in enumerate(CONV_BLOCKS, 1):
        end = start + 2 * len(block) + 1
        slices[f"conv{index}"] = ("features", slice(start, end))
        start = end
    return slices


# torchvision VGG16 module paths of each named layer group (design.md, "The four cases").
# fc6/fc7 include their ReLU and Dropout, so a frozen fc layer's dropout is frozen (eval) with it.
LAYER_GROUPS: dict[str, tuple[str, slice]] = {
    **_feature_slices(),
    "fc6": ("classifier", slice(0, 3)),
    "fc7": ("classifier", slice(3, 6)),
    "fc8": ("classifier", slice(6, 7)),
}
GROUP_NAMES = tuple(LAYER_GROUPS)
HEAD = "fc8"
HEAD_KEYS = ("classifier.6.weight", "classifier.6.bias")


def _feature_spans(features: nn.Sequential) -> list[slice]:
    """conv1..conv5 as slices of `features`, each ending at its max-pool: the same for VGG16 and VGG16-BN."""
    spans, start = [], 0
    for index, module in enumerate(features):
        if isinstance(module, nn.MaxPool2d):
            spans.append(slice(start, index + 1))
            start = index + 1
    return spans


def group_modules(model: nn.Module, group: str) -> list[nn.Module]:
    container, span = LAYER_GROUPS[group]
    modules = list(getattr(model, container))
    if container == "features":
        span = _feature_spans(model.features)[GROUP_NAMES.index(group)]
    return modules[span]


def group_parameters(model: nn.Module, group: str) -> list[nn.Parameter]:
    return [p for m in group_modules(model, group) for p in m.parameters()]


def group_of_parameter(name: str) -> str:
    container, index, _ = name.split(".")
    for group, (group_container, span) in LAYER_GROUPS.items():
        if container == group_container and span.start <= int(index) < span.stop:
            return group
    raise KeyError(name)


def new_vgg16(num_classes: int = 1000, *, batch_norm: bool = False) -> nn.Module:
    from torchvision.models import vgg16, vgg16_bn

    return (vgg16_bn if batch_norm else vgg16)(weights=None, num_classes=num_classes)


def has_batch_norm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.BatchNorm2d) for m in model.features)


def fold_batch_norm(model: nn.Module) -> nn.Module:
    """A plain torchvision VGG16 computing what `model` (a VGG16-BN) computes in eval mode: each BatchNorm
    folded into the conv before it (torch's own `fuse_conv_bn_eval`). The saved model is then the plain
    VGG16 every later step and runtime expects."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    plain = new_vgg16(model.classifier[6].out_features)
    layers = list(model.features)
    folded = []
    for index, module in enumerate(layers):
        if isinstance(module, nn.BatchNorm2d):
            continue
        if isinstance(module, nn.Conv2d) and index + 1 < len(layers) and isinstance(layers[index + 1], nn.BatchNorm2d):
            module = fuse_conv_bn_eval(module.eval(), layers[index + 1].eval())
        folded.append(module)
    for target, source in zip(plain.features, folded, strict=True):
        if isinstance(target, nn.Conv2d):
            target.load_state_dict(source.state_dict())
    plain.classifier.load_state_dict(model.classifier.state_dict())
    return plain.eval()


def replace_head(model: nn.Module, num_classes: int, *, seed: int | None = None) -> None:
    """A freshly initialised fc8 for `num_classes`, with torchvision's own init for VGG linear layers."""
    generator_state = torch.random.get_rng_state()
    if seed is not None:
        torch.manual_seed(seed)
    head = nn.Linear(model.classifier[6].in_features, num_classes)
    nn.init.normal_(head.weight, 0, 0.01)
    nn.init.constant_(head.bias, 0)
    model.classifier[6] = head
    if seed is not None:
        torch.random.set_rng_state(generator_state)


def _imagenet_state_dict() -> dict[str, torch.Tensor]:
    from torchvision.models import VGG16_Weights

    weights = VGG16_Weights.IMAGENET1K_V1
    try:
        return weights.get_state_dict(progress=True)
    except (OSError, RuntimeError) as err:
        # urllib's URLError is an OSError; offline and uncached lands here.
        raise WeightsError(
            f"could not load ImageNet weights ({weights.url}): {err}. Offline? Put the file in torch's hub cache "
            f"({torch.hub.get_dir()}/checkpoints), or use --weights PATH (a torchvision VGG16 state dict) "
            "or --weights none (train from scratch)"
        ) from None


def _file_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            # weights_only: tensors and plain containers only; never run pickled code from a user's file.
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure to decode means we refuse the file, with its reason
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise WeightsError(f"refusing weights file {path}: not a safetensors or tensors-only torch file ({reason})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"refusing weights file {path}: expected a state dict of tensors")
    return state


FEATURE_GROUPS = ("conv1", "conv2", "conv3", "conv4", "conv5")


def _groups_in(state: dict[str, torch.Tensor]) -> tuple[str, ...]:
    return tuple(g for g in GROUP_NAMES if g != HEAD and any(group_of_parameter(k) == g for k in state))


def load_pretrained(model: nn.Module, state: dict[str, torch.Tensor], *, source: str) -> tuple[tuple[str, ...], bool]:
    """Load a torchvision-layout VGG16 state dict except fc8 (which transfer learning re-initialises): the whole
    body, or the convolutions alone (`features.*`, a conv-only backbone whose fc6/fc7 stay random).

    Returns (the groups that came pretrained, whether the file's fc8 was a 1000-way ImageNet head that was
    loaded too).
    """
    reference = new_vgg16(1000).state_dict()
    body_keys = [k for k in reference if k not in HEAD_KEYS]
    feature_keys = [k for k in body_keys if k.startswith("features.")]
    unexpected = [k for k in state if k not in reference]
    conv_only = not any(k.startswith("classifier.") for k in state)
    required = feature_keys if conv_only else body_keys
    missing = [k for k in required if k not in state]
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise WeightsError(f"{source} is not a torchvision VGG16 state dict ({detail})")
    for key in required:
        if tuple(state[key].shape) != tuple(reference[key].shape):
            raise WeightsError(
                f"{source}: {key} has shape {tuple(state[key].shape)}, VGG16 needs {tuple(reference[key].shape)}"
            )
    body = {k: state[k].float() for k in required}
    has_imagenet_head = all(k in state for k in HEAD_KEYS) and state[HEAD_KEYS[0]].shape[0] == 1000
    if has_imagenet_head and model.classifier[6].out_features == 1000:
        body.update({k: state[k].float() for k in HEAD_KEYS})
    model.load_state_dict(body, strict=False)
    return _groups_in(body), has_imagenet_head and model.classifier[6].out_features == 1000


def _keras_state_dict(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """A Keras VGG16 file converted, with its Caffe input convention folded into conv1_1 for the run's
    preprocessing (the mean this returns, ImageNet's std)."""
    from vgg_deploy.keras_weights import caffe_input_mean_rgb, fold_input_convention, keras_vgg16_state_dict
    from vgg_deploy.preprocessing import IMAGENET_STD

    converted = keras_vgg16_state_dict(path)
    fold_input_convention(converted.state, std=IMAGENET_STD)
    info = {"format": "keras-h5", "layers_converted": converted.layers, "layers_ignored": converted.ignored,
            "source_convention": "caffe (BGR, 0..255, mean subtracted), folded into conv1_1",
            "input_mean": list(caffe_input_mean_rgb()), "input_std": list(IMAGENET_STD)}
    return converted.state, info


def pretrained_vgg16(weights: str) -> tuple[nn.Module, dict]:
    """VGG16 with a 1000-way head, from `imagenet`, `none`, a local file (torchvision state dict, whole or
    conv-only, or a Keras .h5) or another run's folder. Returns (model, weights info); the info's
    `pretrained_groups` says which layer groups hold learned weights, and `input_mean`/`input_std` the
    normalisation those weights expect."""
    from vgg_deploy.preprocessing import IMAGENET_MEAN, IMAGENET_STD

    model = new_vgg16(1000)
    torchvision_convention = {"input_mean": list(IMAGENET_MEAN), "input_std": list(IMAGENET_STD)}
    if weights == "none":
        return model, {"source": "none", "pretrained": False, "imagenet_head": False, "pretrained_groups": [],
                       **torchvision_convention}
    if weights == "imagenet":
        state = _imagenet_state_dict()
        groups, _ = load_pretrained(model, state, source="ImageNet weights")
        return model, {"source": "imagenet", "name": "IMAGENET1K_V1", "pretrained": True, "imagenet_head": True,
                       "pretrained_groups": list(groups), **torchvision_convention}
    path = Path(weights).expanduser()
    source_run = _source_run(path)
    if source_run is not None:
        path = path / "model.safetensors"
        convention = {"input_mean": source_run["mean"], "input_std": source_run["std"]}
        extra = {}
        state = _run_state_dict(path, source_run)
    elif path.name.endswith(".h5"):
        if not path.is_file():
            raise WeightsError(f"weights file {path} does not exist")
        state, extra = _keras_state_dict(path)
        convention = {}
    else:
        state, extra, convention = _file_state_dict(path), {"format": "torchvision"}, torchvision_convention
    groups, has_head = load_pretrained(model, state, source=str(path))
    info = {"source": str(path.resolve()), "pretrained": True, "imagenet_head": has_head,
            "pretrained_groups": list(groups), "sha256": _sha256(path), **convention, **extra}
    if source_run is not None:
        info["source_run"] = {k: v for k, v in source_run.items() if k not in ("mean", "std")}
    return model, info


def _run_state_dict(path: Path, source_run: dict) -> dict[str, torch.Tensor]:
    """A source run's weights without fc8; a run whose classifier is not torchvision's (a pooled head or pruned
    widths) gives its convolutions alone, when they are VGG16's."""
    state = {k: v for k, v in _file_state_dict(path).items() if k not in HEAD_KEYS}
    reference = new_vgg16(1000).state_dict()
    if any(tuple(v.shape) != tuple(reference[k].shape) for k, v in state.items() if k.startswith("classifier.")):
        state = {k: v for k, v in state.items() if k.startswith("features.")}
    return state


def _sha256(path: Path) -> str:
    from vgg_deploy.fileio import sha256_file

    return sha256_file(path)


def _source_run(path: Path) -> dict | None:
    """`--weights RUN`: another finetune run's kept checkpoint (any class count; its fc8 is dropped)."""
    if not path.is_dir():
        return None
    import json

    model_json = path / "model.json"
    if not model_json.is_file():
        raise WeightsError(f"--weights {path} is a folder but not a finetune run (no model.json)")
    try:
        info = json.loads(model_json.read_text())
        return {"path": str(path.resolve()), "class_names": list(info["class_names"]), "case": info.get("case"),
                "image_size": info["preprocessing"]["image_size"], "metrics": info.get("metrics", {}),
                "weights": info.get("weights", {}).get("source"), "head": info.get("head", {}).get("kind", "classic"),
                "mean": [float(v) for v in info["preprocessing"]["mean"]],
                "std": [float(v) for v in info["preprocessing"]["std"]]}
    except (ValueError, KeyError, TypeError) as err:
        raise WeightsError(f"--weights {path}: {model_json} is not a valid model description ({err})") from None
