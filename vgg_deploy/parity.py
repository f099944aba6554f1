"""How closely an artifact's logits follow a reference's, on the same images."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from vgg_deploy.metrics import topk_accuracy

# (min top-1 agreement, max |dlogit| relative to the reference's logit range)
TOLERANCES = {"fp32": (0.99, 1e-3), "fp16": (0.98, 2e-2)}


@dataclass(frozen=True)
class Parity:
    images: int
    top1_agreement: float
    max_abs_logit_diff: float
    mean_abs_logit_diff: float
    reference_logit_range: float
    top1: float | None = None
    reference_top1: float | None = None
    non_finite: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    def with_drop(self) -> dict:
        """to_dict plus the top-1 lost against the reference, in points (needs labels)."""
        return {**self.to_dict(), "drop_points": 100.0 * (self.reference_top1 - self.top1)}

    def within(self, precision: str) -> bool:
        min_agreement, rel_diff = TOLERANCES[precision]
        return (
            self.non_finite == 0
            and self.top1_agreement >= min_agreement
            and self.max_abs_logit_diff <= rel_diff * max(1.0, self.reference_logit_range)
        )

    def summary(self) -> str:
        text = (f"top-1 agreement {self.top1_agreement:.4f}, max |dlogit| {self.max_abs_logit_diff:.3g} "
                f"(logit range {self.reference_logit_range:.3g}) on {self.images} images")
        if self.top1 is not None:
            text += f", top-1 {self.top1:.4f} vs {self.reference_top1:.4f}"
        return text


def compare(reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray | None = None) -> Parity:
    finite = np.isfinite(candidate)
    diff = np.abs(np.where(finite, candidate, 0.0) - reference)
    return Parity(
        images=int(reference.shape[0]),
        top1_agreement=float((reference.argmax(axis=1) == candidate.argmax(axis=1)).mean()),
        max_abs_logit_diff=float(diff.max()) if diff.size else 0.0,
        mean_abs_logit_diff=float(diff.mean()) if diff.size else 0.0,
        reference_logit_range=float(np.ptp(reference)) if reference.size else 0.0,
        top1=None if labels is None else topk_accuracy(candidate, labels, 1),
        reference_top1=None if labels is None else topk_accuracy(reference, labels, 1),
        non_finite=int((~finite).sum()),
    )
