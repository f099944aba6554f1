"""The simplest honest alternative to `finetune --weights none`: a plain PyTorch loop, for comparisons.

torchvision's VGG16 with its own initialisation, SGD (lr 0.01, momentum 0.9: the PyTorch ImageNet
example's rate for VGG), FP32, contiguous NCHW, plain cross-entropy, a fixed rate; the same images and
the same training augmentation as the toolkit. Used by the learning tests and benchmarks/scratch_vs_plain.py.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader

from vgg_deploy.data import ImageDataset
from vgg_deploy.model import new_vgg16
from vgg_deploy.preprocessing import Preprocessing


@dataclass
class PlainResult:
    model: nn.Module
    epoch_losses: list[float]
    images_per_s: float


def train_plain_sgd(train_items, *, num_classes: int, preprocessing: Preprocessing, epochs: int,
                    batch_size: int = 32, lr: float = 0.01, seed: int = 0) -> PlainResult:
    torch.manual_seed(seed)
    model = new_vgg16(num_classes)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    loader = DataLoader(ImageDataset(train_items, preprocessing.train_transform()), batch_size=batch_size,
                        shuffle=True, generator=torch.Generator().manual_seed(seed))
    losses, seen, seconds = [], 0, 0.0
    for _ in range(epochs):
        model.train()
        total, count = 0.0, 0
        started = time.perf_counter()
        for x, y in loader:
            loss = nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(y)
            count += len(y)
        seconds += time.perf_counter() - started
        seen += count
        losses.append(total / max(count, 1))
    return PlainResult(model.eval(), losses, seen / max(seconds, 1e-9))


@torch.no_grad()
def top1(model: nn.Module, items, *, preprocessing: Preprocessing, batch_size: int = 64) -> float:
    model.eval()
    loader = DataLoader(ImageDataset(items, preprocessing.eval_transform()), batch_size=batch_size)
    correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in loader)
    return correct / max(len(items), 1)
