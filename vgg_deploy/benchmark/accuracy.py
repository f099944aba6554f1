from __future__ import annotations

import numpy as np

from vgg_deploy.metrics import topk_accuracy
from vgg_deploy.parity import compare


def accuracy_figures(logits: np.ndarray, labels: np.ndarray, baseline: np.ndarray, class_names: list[str]) -> dict:
    """A benchmark row's accuracy: parity.compare against the baseline's logits (the figures export checks),
    under report.json's keys, plus top-5 and per-class top-1."""
    parity = compare(baseline, logits, labels)
    predictions = logits.argmax(axis=1)
    per_class = {}
    for index, name in enumerate(class_names):
        mask = labels == index
        per_class[name] = float((predictions[mask] == index).mean()) if mask.any() else None
    return {
        "images": parity.images,
        "top1": parity.top1,
        "top5": topk_accuracy(logits, labels, 5),
        "agreement": parity.top1_agreement,
        "max_abs_logit_diff": parity.max_abs_logit_diff,
        "mean_abs_logit_diff": parity.mean_abs_logit_diff,
        "non_finite_logits": parity.non_finite,
        "per_class_top1": per_class,
    }
