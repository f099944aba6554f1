"""The single source of truth for how an image becomes a tensor.

Stored in model.json by finetune; training, calibration, export metadata and every runner
derive their transforms from it (as timm's pretrained configs do), so training and deployment
can never disagree.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# torchvision's classification recipe: resize the shorter side to image_size / 0.875, centre-crop.
DEFAULT_CROP_FRACTION = 0.875


@dataclass(frozen=True)
class Preprocessing:
    image_size: int = 224
    resize: int = 256
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"
    layout: str = "NCHW"
    color: str = "RGB"
    scale: str = "pixels / 255, then (x - mean) / std"
    train_augmentation: dict[str, Any] = field(
        default_factory=lambda: {"random_resized_crop_scale": [0.6, 1.0], "horizontal_flip": True}
    )

    @classmethod
    def for_image_size(cls, image_size: int, *, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> Preprocessing:
        """`mean` and `std` are the normalisation the starting weights expect (torchvision's by default)."""
        if image_size < 32:
            raise ValueError(f"image size {image_size} is below VGG16's minimum of 32 px (five 2x poolings)")
        return cls(image_size=image_size, resize=math.ceil(image_size / DEFAULT_CROP_FRACTION),
                   mean=tuple(float(v) for v in mean), std=tuple(float(v) for v in std))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["mean"] = list(self.mean)
        data["std"] = list(self.std)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        known = {f for f in cls.__dataclass_fields__}
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["mean"] = tuple(float(v) for v in data["mean"])
        kwargs["std"] = tuple(float(v) for v in data["std"])
        return cls(**kwargs)

    def _interpolation_mode(self):
        from torchvision.transforms import InterpolationMode

        return InterpolationMode(self.interpolation)

    def eval_transform(self):
        from torchvision.transforms import v2

        return v2.Compose([self.eval_crop(), self.normalize()])

    def eval_crop(self):
        """The geometric half of eval_transform: PIL image -> uint8 [3, S, S] (a quarter of the float size)."""
        from torchvision.transforms import v2

        return v2.Compose(
            [
                v2.PILToTensor(),
                v2.Resize(self.resize, interpolation=self._interpolation_mode(), antialias=True),
                v2.CenterCrop(self.image_size),
            ]
        )

    def normalize(self):
        """The numeric half: uint8 [..., 3, S, S] -> normalised float32, on one image or a batch."""
        from torchvision.transforms import v2

        return v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=list(self.mean), std=list(self.std))])

    def train_transform(self):
        from torchvision.transforms import v2

        aug = self.train_augmentation
        steps = [
            v2.PILToTensor(),
            v2.RandomResizedCrop(
                self.image_size,
                scale=tuple(aug.get("random_resized_crop_scale", (0.6, 1.0))),
                interpolation=self._interpolation_mode(),
                antialias=True,
            ),
        ]
        if aug.get("horizontal_flip", True):
            steps.append(v2.RandomHorizontalFlip())
        steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=list(self.mean), std=list(self.std))]
        return v2.Compose(steps)

    def onnx_metadata(self) -> dict[str, str]:
        import json

        return {"preprocessing": json.dumps(self.to_dict(), sort_keys=True)}

    def batch(self, images: list[Image.Image]) -> np.ndarray:
        transform = self.eval_transform()
        return torch.stack([transform(img) for img in images]).numpy()
