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
# "similar" when the probe at the depth the model ships (fc7, or pool5 for the pooled head) classifies val as
# well as the best probe at any depth, within this margin or one standard error of the best, whichever is
# larger: the top of the pretrained stack then still fits, and nothing below it needs to move.
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


CLASSIC_HEAD = "classic"  # torchvision's fc6, fc7, fc8
POOLED_HEAD = "pooled"  # global average pool + one linear layer (heads.py)
BODY_GROUPS = tuple(g for g in GROUP_NAMES if g != HEAD)


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
    pretrained_groups: tuple[str, ...] = ()  # groups that came with learned weights
    head: str = CLASSIC_HEAD
    fixed: tuple[str, ...] = ()  # the pooled head's fc6 (the average) and fc7 (a pass-through): no weights to learn
    head_init: str = "random"  # random, or "probe": fc8 starts as the linear probe auto fitted, and is kept unless beaten

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> list[str]:
        lines = [f"case: {self.case}" + (" (from scratch: no pretrained weights)" if self.from_scratch else "")]
        if not self.from_scratch:
            lines.append(f"pretrained: {', '.join(self.pretrained_groups)}")
        lines.append(f"frozen: {', '.join(self.frozen) or 'none'}")
        rates = ", ".join(f"{g} {self.lr[g]:.2g}" for g in self.trained)
        lines.append(f"trained (lr): {rates}")
        lines.append(f"re-initialised: {', '.join(self.reinitialised)}")
        if self.head == POOLED_HEAD:
            lines.append("head: pooled (global average of conv5's output, then one linear layer; fc6 averages and "
                         "fc7 passes through, fixed)")
        if self.head_init == "probe":
            lines.append("fc8 starts as auto's linear probe (val epoch 0); training must beat it on val to replace it")
        if self.head_warmup_epochs:
            lines.append(f"head-only warm-up (LP-FT): {self.head_warmup_epochs} epoch(s)")
        if self.cache_features:
            lines.append("frozen part runs once; its FP32 " + ("pooled" if self.head == POOLED_HEAD else "fc7")
                         + " codes are cached")
        if self.batch_norm_folded:
            lines.append("trained as VGG16-BN; each BatchNorm is folded into its conv when saved")
        return lines


def _frozen_for_case(case: str) -> tuple[str, ...]:
    if case == "small-similar":
        return BODY_GROUPS
    if case == "small-different":
        return ("conv1", "conv2", "conv3")
    return ()


def _frozen(case: str, pretrained_groups: tuple[str, ...], fixed: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(g for g in _frozen_for_case(case) if g not in fixed and (g in pretrained_groups or not pretrained_groups))


def resolved_lr(case: str, *, lr: float | None, pretrained_groups: tuple[str, ...], head: str = CLASSIC_HEAD) -> float:
    """What `--lr` means for this plan: the given rate, or its default (the new head's rate when layers keep
    their features, the conv layers' rate when every layer trains from scratch). Saved in config.json."""
    if lr is not None:
        return lr
    pretrained_groups = tuple(g for g in BODY_GROUPS if g in pretrained_groups)
    keeps_features = pretrained_groups or _frozen(case, pretrained_groups, FC_HIDDEN if head == POOLED_HEAD else ())
    return DEFAULT_HEAD_LR if keeps_features else DEFAULT_SCRATCH_LR


def plan_for_case(case: str, *, lr: float | None = None, pretrained: bool | None = None,
                  pretrained_groups: tuple[str, ...] | None = None, epochs: int, head: str = CLASSIC_HEAD,
                  head_init: str = "random") -> FreezePlan:
    """The case's plan for a source whose `pretrained_groups` hold learned weights (all of the body when only
    `pretrained=True` is given). A group without learned weights is never frozen and never gets a pretrained
    layer's rate; only with no pretrained weights at all (`--weights none`) does a freezing case freeze random
    layers, as asked."""
    if case not in CASES:
        raise ValueError(f"unknown case {case!r}; choose from {', '.join(CASES)}")
    if pretrained_groups is None:
        pretrained_groups = BODY_GROUPS if pretrained else ()
    pretrained_groups = tuple(g for g in BODY_GROUPS if g in pretrained_groups)
    is_pretrained = bool(pretrained_groups)
    fixed = FC_HIDDEN if head == POOLED_HEAD else ()
    frozen = _frozen(case, pretrained_groups, fixed)
    trained = tuple(g for g in GROUP_NAMES if g not in frozen and g not in fixed)
    base_lr = resolved_lr(case, lr=lr, pretrained_groups=pretrained_groups, head=head)
    if is_pretrained or frozen:
        # A new head on layers that keep (pretrained or, with --weights none, random) features.
        head_lr = base_lr
        pretrained_lr = head_lr * PRETRAINED_LR_FACTOR.get(case, 1.0)
        random_conv_lr = DEFAULT_SCRATCH_LR if is_pretrained else pretrained_lr
    else:
        pretrained_lr = random_conv_lr = base_lr
        head_lr = pretrained_lr * FC_LR_FACTOR
    lp_done = head_init == "probe"
    if lp_done and trained != (HEAD,):
        # LP-FT's second stage (Kumar et al. 2022): the head is already fitted, so it moves no faster than the
        # pretrained layers beneath it; a new-head rate would undo the probe before the features adapt.
        head_lr = pretrained_lr
    rates = {}
    for g in trained:
        if g == HEAD:
            rates[g] = head_lr
        elif g in FC_HIDDEN:
            # New fc6/fc7 learn at the head's rate, pretrained ones at the pretrained rate; both scaled for fan-in.
            rates[g] = (pretrained_lr if g in pretrained_groups or not is_pretrained else head_lr) * FC_LR_FACTOR
        else:
            rates[g] = pretrained_lr if g in pretrained_groups else random_conv_lr
    warmup = max(1, round(0.2 * epochs)) if case == "large-similar" and is_pretrained and epochs > 1 and not lp_done else 0
    return FreezePlan(
        case=case,
        frozen=frozen,
        trained=trained,
        reinitialised=(*fixed, HEAD),
        lr=rates,
        head_warmup_epochs=warmup,
        cache_features=trained == (HEAD,),
        from_scratch=not is_pretrained,
        pretrained_groups=pretrained_groups,
        head=head,
        fixed=fixed,
        head_init=head_init,
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


def decide_similarity(probes: list[dict], *, shipped_depth: str) -> tuple[str, str]:
    """`probes`: each {depth, val_top1, val_se}, shallow to deep. Similar when the shipped depth's probe is as good
    as the best one, within the margin (or one standard error of the best)."""
    by_depth = {p["depth"]: p for p in probes}
    shipped = by_depth[shipped_depth]
    best = max(reversed(probes), key=lambda p: p["val_top1"])  # ties go to the deeper probe
    slack = max(SIMILARITY_MARGIN, best["val_se"])
    similar = shipped["val_top1"] >= best["val_top1"] - slack
    verdict = "similar" if similar else "different"
    relation = ">=" if similar else "<"
    scores = ", ".join(f"{p['depth']} {p['val_top1']:.3f}" for p in probes)
    return verdict, (
        f"similarity: {verdict} (linear probes on val: {scores}; {shipped_depth}, the depth the head reads, "
        f"{shipped['val_top1']:.3f} {relation} best {best['val_top1']:.3f} ({best['depth']}) - {slack:.3f})"
    )


def decide_case(*, train_counts: list[int], pretrained: bool, probes: list[dict] | None,
                shipped_depth: str = "fc7", small_max: int = SMALL_MAX_IMAGES_PER_CLASS) -> CaseDecision:
    """`probes` from depth_probes (None without pretrained weights)."""
    size, size_reason = decide_size(train_counts, small_max=small_max)
    if not pretrained:
        return CaseDecision(
            case="large-different",
            size=size,
            similarity="unknown",
            reasons=[size_reason, "weights: none, so there is nothing to transfer: every layer trains from scratch"],
            evidence={},
        )
    assert probes is not None
    verdict, sim_reason = decide_similarity(probes, shipped_depth=shipped_depth)
    if size == "small":
        # The probe-first procedure: the probe is candidate A (epoch 0), a fine-tune of the top two blocks from
        # it is candidate B, and B is kept only where it beats A on val. So small data always gets the chance
        # to fine-tune, and never ships below the probe: the classic small-similar plan is A itself.
        case = "small-different"
        plan_reason = ("plan: small-different from the probe: conv4-5 and the head fine-tune from it, and an epoch "
                       "is kept only if it beats the probe on val (otherwise the probe, small-similar's model, ships)")
    else:
        case = f"large-{verdict}"
        plan_reason = f"plan: {case} from the probe (its rates follow the similarity), kept only if it beats it on val"
    return CaseDecision(
        case=case, size=size, similarity=verdict, reasons=[size_reason, sim_reason, plan_reason],
        evidence={"probes": probes, "shipped_depth": shipped_depth},
    )
