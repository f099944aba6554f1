from __future__ import annotations

import numpy as np

from vgg_deploy.metrics import topk_accuracy


def accuracy_figures(logits: np.ndarray, labels: np.ndarray, baseline: np.ndarray, class_names: list[str]) -> dict:
    predictions = logits.argmax(axis=1)
    per_class = {}
    for index, name in enumerate(class_names):
        mask = labels == index
        per_class[name] = float((predictions[mask] == index).mean()) if mask.any() else None
    diff = np.abs(logits.astype(np.float64) - baseline)
    return {
        "images": int(labels.size),
        "top1": topk_accuracy(logits, labels, 1),
        "top5": topk_accuracy(logits, labels, 5),
        "agreement": float((predictions == baseline.argmax(axis=1)).mean()),
        "max_abs_logit_diff": float(diff.max()),
        "mean_abs_logit_diff": float(diff.mean()),
        "non_finite_logits": int((~np.isfinite(logits)).sum()),
        "per_class_top1": per_class,
    }
