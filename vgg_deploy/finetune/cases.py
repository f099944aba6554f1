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

# The recipe is AdamW with a rate per layer group (measured in benchmarks/README.md, "From scratch" and
# "The four cases"). `--lr` is the new head's rate when layers keep their features (pretrained, or
# frozen), and the conv layers' rate when every layer trains from scratch.
DEFAULT_HEAD_LR = 1e-3
DEFAULT_SCRATCH_LR = 1e-4
# Pretrained conv layers relative to the new head: low enough not to wipe what they learned
# (Adam on a VGG without BatchNorm wants about 1e-5..1e-4 there).
PRETRAINED_LR_FACTOR = {"small-different": 0.1, "large-similar": 0.01, "large-different": 0.1}
# fc6/fc7 (and, from scratch, fc8) relative to the conv layers. Their fan-ins (25088, 4096) of positive,
# post-ReLU inputs make one Adam step move every output unit together by about lr x fan-in x mean input,
# so at the conv layers' rate they blow the logits up (measured: loss spikes to 3.4 at 1e-4, none at 1e-5).
FC_LR_FACTOR = 0.1
FC_HIDDEN = ("fc6", "fc7")


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
    batch_norm_folded: bool = False  # trained as VGG16-BN, saved with each BatchNorm folded into its conv

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
            lines.append("frozen part runs once; its FP32 fc7 outputs are cached")
        if self.batch_norm_folded:
            lines.append("trained as VGG16-BN; each BatchNorm is folded into its conv when saved")
        return lines


def plan_for_case(case: str, *, lr: float | None = None, pretrained: bool, epochs: int) -> FreezePlan:
    if case not in CASES:
        raise ValueError(f"unknown case {case!r}; choose from {', '.join(CASES)}")
    if case == "small-similar":
        frozen = tuple(g for g in GROUP_NAMES if g != HEAD)
    elif case == "small-different":
        frozen = ("conv1", "conv2", "conv3")
    else:
        frozen = ()
    trained = tuple(g for g in GROUP_NAMES if g not in frozen)
    if pretrained or frozen:
        # A new head on layers that keep (pretrained or, with --weights none, random) features.
        head = lr if lr is not None else DEFAULT_HEAD_LR
        conv = head * PRETRAINED_LR_FACTOR.get(case, 1.0)
    else:
        conv = lr if lr is not None else DEFAULT_SCRATCH_LR
        head = conv * FC_LR_FACTOR
    rates = {g: head if g == HEAD else conv * FC_LR_FACTOR if g in FC_HIDDEN else conv for g in trained}
    warmup = max(1, round(0.2 * epochs)) if case == "large-similar" and pretrained and epochs > 1 else 0
    return FreezePlan(
        case=case,
        frozen=frozen,
        trained=trained,
        reinitialised=(HEAD,),
        lr=rates,
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


def decide_size(train_counts: list[int], *, small_max: int = SMALL_MAX_IMAGES_PER_CLASS) -> tuple[str, str]:
    per_class = sum(train_counts) / len(train_counts)
    size = "small" if per_class < small_max else "large"
    sign = "<" if size == "small" else ">="
    return size, f"size: {size} ({per_class:.0f} training images per class {sign} {small_max})"


def decide_similarity(early_knn: float, fc7_knn: float) -> tuple[str, str]:
    similar = fc7_knn >= early_knn - SIMILARITY_MARGIN
    verdict = "similar" if similar else "different"
    relation = ">=" if similar else "<"
    return verdict, (
        f"similarity: {verdict} (k-NN accuracy on fc7 features {fc7_knn:.3f} {relation} "
        f"conv3 features {early_knn:.3f} - {SIMILARITY_MARGIN})"
    )


def decide_case(*, train_counts: list[int], pretrained: bool, similarity: dict | None,
                small_max: int = SMALL_MAX_IMAGES_PER_CLASS) -> CaseDecision:
    """`similarity` holds k-NN accuracies from `similarity.estimate_similarity` (None without pretrained weights)."""
    size, size_reason = decide_size(train_counts, small_max=small_max)
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
