"""The four transfer-learning cases: which layers freeze, train and re-initialise, at what learning rate.

Sources (../shared/design.md): CS231n's transfer-learning notes (the four cases, lower rates for
pretrained layers); Yosinski et al. 2014 (early layers generic, later specific); Kumar et al. 2022
(LP-FT: train the head first, then everything).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from vgg_deploy.model import GROUP_NAMES, HEAD

CASES = ("small-similar", "small-different", "large-similar", "large-different")

# No source gives numbers for "small" and "large"; these are ours, printed with every decision.
# Below this many training images per class (on average) a data set is "small": too few to move
# 138M parameters without overfitting (CS231n's concern), plenty for a linear probe.
SMALL_MAX_IMAGES_PER_CLASS = 1000
# "similar" when fc7 features classify the user's images at least as well as an early block's,
# within this margin (k-NN accuracy, leave-one-out): ImageNet's top features then still fit.
SIMILARITY_MARGIN = 0.02

# Learning-rate factor of pretrained layers relative to the new head.
PRETRAINED_LR_FACTOR = {"small-different": 0.1, "large-similar": 0.1, "large-different": 0.5}


@dataclass(frozen=True)
class FreezePlan:
    case: str
    frozen: tuple[str, ...]
    trained: tuple[str, ...]
    reinitialised: tuple[str, ...]
    lr: dict[str, float]  # trained group -> learning rate
    head_warmup_epochs: int  # LP-FT: epochs in which only the head trains
    cache_features: bool  # everything below the head is frozen: run it once, cache its outputs
    from_scratch: bool

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> list[str]:
        lines = [f"case: {self.case}" + (" (from scratch: no pretrained weights)" if self.from_scratch else "")]
        lines.append(f"frozen: {', '.join(self.frozen) or 'none'}")
        rates = ", ".join(f"{g} {self.lr[g]:.2g}" for g in self.trained)
        lines.append(f"trained (lr): {rates}")
        lines.append(f"re-initialised: {', '.join(self.reinitialised)}")
        if self.head_warmup_epochs:
            lines.append(f"head-only warm-up (LP-FT): {self.head_warmup_epochs} epoch(s)")
        if self.cache_features:
            lines.append("frozen part runs once; its fc7 outputs are cached")
        return lines


def plan_for_case(case: str, *, head_lr: float, pretrained: bool, epochs: int) -> FreezePlan:
    if case not in CASES:
        raise ValueError(f"unknown case {case!r}; choose from {', '.join(CASES)}")
    if case == "small-similar":
        frozen = tuple(g for g in GROUP_NAMES if g != HEAD)
    elif case == "small-different":
        frozen = ("conv1", "conv2", "conv3")
    else:
        frozen = ()
    trained = tuple(g for g in GROUP_NAMES if g not in frozen)
    factor = PRETRAINED_LR_FACTOR.get(case, 1.0) if pretrained else 1.0
    lr = {g: head_lr if g == HEAD else head_lr * factor for g in trained}
    warmup = max(1, round(0.2 * epochs)) if case == "large-similar" and pretrained and epochs > 1 else 0
    return FreezePlan(
        case=case,
        frozen=frozen,
        trained=trained,
        reinitialised=(HEAD,),
        lr=lr,
        head_warmup_epochs=warmup,
        cache_features=case == "small-similar",
        from_scratch=not pretrained,
    )


@dataclass(frozen=True)
class CaseDecision:
    case: str
    size: str  # small | large
    similarity: str  # similar | different | unknown
    reasons: list[str]
    evidence: dict

    def to_dict(self) -> dict:
        return asdict(self)


def decide_size(train_counts: list[int]) -> tuple[str, str]:
    per_class = sum(train_counts) / len(train_counts)
    size = "small" if per_class < SMALL_MAX_IMAGES_PER_CLASS else "large"
    sign = "<" if size == "small" else ">="
    return size, f"size: {size} ({per_class:.0f} training images per class {sign} {SMALL_MAX_IMAGES_PER_CLASS})"


def decide_similarity(early_knn: float, fc7_knn: float) -> tuple[str, str]:
    similar = fc7_knn >= early_knn - SIMILARITY_MARGIN
    verdict = "similar" if similar else "different"
    relation = ">=" if similar else "<"
    return verdict, (
        f"similarity: {verdict} (k-NN accuracy on fc7 features {fc7_knn:.3f} {relation} "
        f"conv3 features {early_knn:.3f} - {SIMILARITY_MARGIN})"
    )


def decide_case(*, train_counts: list[int], pretrained: bool, similarity: dict | None) -> CaseDecision:
    """`similarity` holds k-NN accuracies from `similarity.estimate_similarity` (None without pretrained weights)."""
    size, size_reason = decide_size(train_counts)
    if not pretrained:
        return CaseDecision(
            case="large-different",
            size=size,
            similarity="unknown",
            reasons=[size_reason, "weights: none, so there is nothing to transfer: every layer trains from scratch"],
            evidence={},
        )
    assert similarity is not None
    verdict, sim_reason = decide_similarity(similarity["early_knn_top1"], similarity["fc7_knn_top1"])
    return CaseDecision(
        case=f"{size}-{verdict}", size=size, similarity=verdict, reasons=[size_reason, sim_reason], evidence=similarity
    )
