"""Linear probes on frozen features at several depths: the measurement `--case auto` decides by, and the
pooled head's starting point.

One eval-mode pass over train and val caches globally average-pooled features after pool3, pool4 and pool5
(and fc7 when fc6/fc7 came pretrained). A standardised logistic regression (scikit-learn, its L2 strength
chosen by cross-validation on train alone) is fitted per depth and scored on val. Head2Toe and
intermediate-layer probing (../shared/research/auto_choice.md) found earlier depths often transfer better
than the last; Sorkhei et al. 2025 found such plain probes on frozen features track transfer as well as
dedicated transferability scores.

"pool5" is the mean over torchvision's 7x7 adaptive average pool, exactly what the pooled head computes
(at 224 px, plain global average pooling).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

# features[:end] ends at that block's max-pool.
POOL_ENDS = {"pool3": 17, "pool4": 24, "pool5": 31}
PROBE_CS = (0.01, 0.1, 1.0, 10.0)


@torch.no_grad()
def pooled_features(model: nn.Module, batches, *, device: torch.device, depths: tuple[str, ...]) -> tuple[dict, torch.Tensor]:
    """{depth: [N, C] float32} and the labels, in one FP32 eval pass."""
    model.eval()
    out: dict[str, list[torch.Tensor]] = {d: [] for d in depths}
    labels = []
    for inputs, y in batches:
        x, start = inputs.to(device), 0
        for depth, end in POOL_ENDS.items():
            x = model.features[start:end](x)
            start = end
            if depth in out:
                out[depth].append(x.mean(dim=(2, 3)).float().cpu() if depth != "pool5" else
                                  model.avgpool(x).mean(dim=(2, 3)).float().cpu())
        if "fc7" in out:
            out["fc7"].append(model.classifier[:6](torch.flatten(model.avgpool(x), 1)).float().cpu())
        labels.append(y)
    return {d: torch.cat(v) for d, v in out.items()}, torch.cat(labels)


@dataclass
class ProbeResult:
    depth: str
    val_top1: float
    val_se: float  # binomial standard error of val_top1
    train_top1: float
    c: float  # the L2 strength cross-validation chose (scikit-learn's C)
    weight: torch.Tensor  # [classes, C] on raw (unstandardised) features
    bias: torch.Tensor  # [classes]

    def summary(self) -> dict:
        return {"depth": self.depth, "val_top1": round(self.val_top1, 4), "val_se": round(self.val_se, 4),
                "train_top1": round(self.train_top1, 4), "C": self.c}


def fit_probe(depth: str, train_x: torch.Tensor, train_y: torch.Tensor, val_x: torch.Tensor, val_y: torch.Tensor,
              *, num_classes: int, seed: int = 0) -> ProbeResult:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.preprocessing import StandardScaler

    x, y = train_x.double().numpy(), train_y.numpy()
    scaler = StandardScaler().fit(x)
    folds = min(3, int(np.bincount(y)[np.unique(y)].min()))
    if folds >= 2:
        search = GridSearchCV(LogisticRegression(max_iter=2000), {"C": list(PROBE_CS)},
                              cv=StratifiedKFold(folds, shuffle=True, random_state=seed)).fit(scaler.transform(x), y)
        probe, c = search.best_estimator_, float(search.best_params_["C"])
    else:  # a class with a single training image: nothing to cross-validate on, scikit-learn's default strength
        c = 1.0
        probe = LogisticRegression(C=c, max_iter=2000).fit(scaler.transform(x), y)
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    # Logits on raw features: W (x - mean) / scale + b.
    coef = np.zeros((num_classes, x.shape[1]))
    intercept = np.full(num_classes, -1e4)  # a class absent from train can never win
    if len(probe.classes_) == 2:  # scikit-learn's binary form: one row for class 1
        rows = np.stack([-probe.coef_[0] / 2, probe.coef_[0] / 2])
        offsets = np.array([-probe.intercept_[0] / 2, probe.intercept_[0] / 2])
    else:
        rows, offsets = probe.coef_, probe.intercept_
    for row, offset, cls in zip(rows, offsets, probe.classes_):
        coef[cls] = row / scale
        intercept[cls] = offset - (row / scale) @ scaler.mean_
    weight, bias = torch.from_numpy(coef).float(), torch.from_numpy(intercept).float()
    val_top1 = _top1(weight, bias, val_x, val_y)
    n = max(len(val_y), 1)
    return ProbeResult(depth, val_top1, math.sqrt(max(val_top1 * (1 - val_top1), 1e-12) / n),
                       _top1(weight, bias, train_x, train_y), c, weight, bias)


def _top1(weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> float:
    if len(y) == 0:
        return 0.0
    return float(((x.float() @ weight.T + bias).argmax(1) == y).float().mean())


def probe_depths(model: nn.Module, train_items: list, val_items: list, *, transform, device: torch.device,
                 depths: tuple[str, ...], num_classes: int, seed: int, batch_size: int = 32) -> dict[str, ProbeResult]:
    """A probe per depth, fitted on train and scored on val (shallow to deep)."""
    from torch.utils.data import DataLoader

    from vgg_deploy.data import ImageDataset

    def features(items):
        return pooled_features(model, DataLoader(ImageDataset(items, transform), batch_size=batch_size),
                               device=device, depths=depths)

    (train_x, train_y), (val_x, val_y) = features(train_items), features(val_items)
    return {d: fit_probe(d, train_x[d], train_y, val_x[d], val_y, num_classes=num_classes, seed=seed) for d in depths}
