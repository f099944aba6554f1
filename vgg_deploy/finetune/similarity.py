"""How close the user's images are to ImageNet, judged by the pretrained network itself.

k-NN accuracy (leave-one-out, cosine) on an early block's features against fc7's: if fc7 is as good,
ImageNet's specific features fit this data ("similar"); if the early block wins, the data is
"different" (Sorkhei et al. 2025 found plain k-NN on frozen features tracks transfer at least as
well as LogME/LEEP). The ImageNet head's mean confidence is recorded as a second opinion.
"""

from __future__ import annotations

import random

import torch
from torch import nn
from torch.utils.data import DataLoader

from vgg_deploy.data import ImageDataset

EARLY_BLOCK_END = 17  # features[:17] = conv1..conv3
MAX_IMAGES = 600
KNN_K = 5


def knn_leave_one_out_accuracy(features: torch.Tensor, labels: torch.Tensor, *, k: int = KNN_K) -> float:
    feats = nn.functional.normalize(features.float(), dim=1)
    sims = feats @ feats.T
    sims.fill_diagonal_(-float("inf"))
    k = min(k, len(labels) - 1)
    neighbours = sims.topk(k, dim=1).indices
    votes = torch.nn.functional.one_hot(labels[neighbours], int(labels.max()) + 1).sum(dim=1).float()
    # Ties break towards the nearest neighbour's class.
    votes += 0.5 * torch.nn.functional.one_hot(labels[neighbours[:, 0]], votes.shape[1]).float()
    return float((votes.argmax(dim=1) == labels).float().mean())


@torch.no_grad()
def estimate_similarity(
    model: nn.Module, items: list, *, transform, device: torch.device, imagenet_head: bool, seed: int, batch_size: int = 32
) -> dict:
    rng = random.Random(seed)
    sample = list(items)
    rng.shuffle(sample)
    sample = sample[:MAX_IMAGES]
    model.eval().to(device)
    early, fc7, confidence, labels = [], [], [], []
    for images, y in DataLoader(ImageDataset(sample, transform), batch_size=batch_size):
        images = images.to(device)
        block3 = model.features[:EARLY_BLOCK_END](images)
        early.append(block3.mean(dim=(2, 3)).cpu())
        pooled = torch.flatten(model.avgpool(model.features[EARLY_BLOCK_END:](block3)), 1)
        codes = model.classifier[:6](pooled)
        fc7.append(codes.cpu())
        if imagenet_head:
            confidence.append(model.classifier[6](codes).softmax(dim=1).max(dim=1).values.cpu())
        labels.append(y)
    labels_t = torch.cat(labels)
    evidence = {
        "images": len(sample),
        "early_block": "conv3",
        "early_knn_top1": knn_leave_one_out_accuracy(torch.cat(early), labels_t),
        "fc7_knn_top1": knn_leave_one_out_accuracy(torch.cat(fc7), labels_t),
        "k": KNN_K,
    }
    if confidence:
        evidence["imagenet_head_mean_confidence"] = float(torch.cat(confidence).mean())
    return evidence
