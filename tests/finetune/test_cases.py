"""Each case's freeze plan, checked on the real VGG16: after an optimizer step, exactly the planned
parameters changed; frozen parameters never reach the optimizer; frozen layers stay in eval mode."""

from __future__ import annotations

import pytest
import torch

from vgg_deploy.finetune import cases
from vgg_deploy.finetune import optimization
from vgg_deploy.model import GROUP_NAMES, group_modules, group_of_parameter, new_vgg16, replace_head


@pytest.fixture(scope="module")
def vgg():
    torch.manual_seed(0)
    return new_vgg16(1000)


CONV_ONLY = ("conv1", "conv2", "conv3", "conv4", "conv5")


SOURCES = [pytest.param(cases.BODY_GROUPS, cases.CLASSIC_HEAD, case, id=f"whole-body-{case}") for case in cases.CASES]
SOURCES += [pytest.param(CONV_ONLY, cases.POOLED_HEAD, case, id=f"conv-only-pooled-{case}") for case in cases.CASES]
SOURCES += [pytest.param(CONV_ONLY, cases.CLASSIC_HEAD, "small-similar", id="conv-only-classic-small-similar")]


@pytest.mark.parametrize("groups, head, case", SOURCES)
def test_after_a_step_exactly_the_planned_parameters_changed(vgg, case, groups, head):
    from vgg_deploy.heads import with_pooled_head

    model = with_pooled_head(vgg, 3) if head == cases.POOLED_HEAD else vgg
    replace_head(model, 3, seed=0)
    plan = cases.plan_for_case(case, lr=1e-3, pretrained_groups=groups, epochs=10, head=head)
    optimization.apply_freeze(model, plan)
    optimizer = optimization.build_optimizer(model, plan, weight_decay=0.05)
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimization.set_train_mode(model, plan)
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([0, 2])
    loss = torch.nn.functional.cross_entropy(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    for name, param in model.named_parameters():
        group = group_of_parameter(name)
        changed = not torch.equal(before[name], param.detach())
        planned = group in plan.trained
        assert changed == planned, f"{case}: {name} ({group}) changed={changed}, planned={planned}"
        assert (id(param) in in_optimizer) == planned
    for group in (*plan.frozen, *plan.fixed):
        assert all(not m.training for m in group_modules(model, group))
    for group in plan.trained:
        assert all(m.training for m in group_modules(model, group))


@pytest.mark.parametrize("case", cases.CASES)
def test_a_conv_only_source_never_freezes_its_random_layers(case):
    classic = cases.plan_for_case(case, pretrained_groups=CONV_ONLY, epochs=10)
    assert set(classic.frozen) <= set(CONV_ONLY) and {"fc6", "fc7", "fc8"} <= set(classic.trained)
    # Random fc6/fc7 learn at the new head's rate (scaled for their fan-in), never at a pretrained layer's.
    assert classic.lr["fc6"] == pytest.approx(cases.FC_LR_FACTOR * classic.lr["fc8"])
    for group in CONV_ONLY:
        assert group in classic.frozen or classic.lr[group] == pytest.approx(
            classic.lr["fc8"] * cases.PRETRAINED_LR_FACTOR.get(case, 1.0))
    pooled = cases.plan_for_case(case, pretrained_groups=CONV_ONLY, epochs=10, head=cases.POOLED_HEAD)
    assert pooled.fixed == ("fc6", "fc7") and not set(pooled.fixed) & set(pooled.frozen + pooled.trained)
    assert pooled.cache_features == (case == "small-similar")
    assert not classic.cache_features  # random fc6/fc7 train, so nothing below fc8 can be cached


def test_plans_follow_the_recipe_table():
    small_similar = cases.plan_for_case("small-similar", lr=1e-3, pretrained=True, epochs=10)
    assert small_similar.trained == ("fc8",) and small_similar.cache_features and small_similar.lr == {"fc8": 1e-3}
    small_different = cases.plan_for_case("small-different", lr=1e-3, pretrained=True, epochs=10)
    assert small_different.frozen == ("conv1", "conv2", "conv3")
    assert small_different.lr["conv4"] == pytest.approx(1e-4) and small_different.lr["fc6"] == pytest.approx(1e-5)
    large_similar = cases.plan_for_case("large-similar", lr=1e-3, pretrained=True, epochs=10)
    assert large_similar.frozen == () and large_similar.head_warmup_epochs == 2
    # Pretrained convs of a VGG without BatchNorm stay within Adam's 1e-5..1e-4 that keeps their features.
    assert large_similar.lr["conv1"] == pytest.approx(1e-5)
    large_different = cases.plan_for_case("large-different", lr=1e-3, pretrained=True, epochs=10)
    assert large_different.lr["conv1"] == pytest.approx(1e-4) and large_different.head_warmup_epochs == 0
    for plan in (small_different, large_similar, large_different):
        assert plan.lr["fc6"] == plan.lr["fc7"] == pytest.approx(cases.FC_LR_FACTOR * plan.lr["conv5"])
    scratch = cases.plan_for_case("large-different", pretrained=False, epochs=10)
    assert scratch.from_scratch and scratch.lr["conv1"] == cases.DEFAULT_SCRATCH_LR
    assert scratch.lr["fc8"] == scratch.lr["fc6"] == pytest.approx(cases.FC_LR_FACTOR * cases.DEFAULT_SCRATCH_LR)
    for plan in (small_similar, small_different, large_similar, large_different, scratch):
        assert plan.reinitialised == ("fc8",)
        assert set(plan.frozen) | set(plan.trained) == set(GROUP_NAMES)


def test_early_stopping_waits_for_the_warmup():
    plan = cases.plan_for_case("large-similar", lr=1e-3, pretrained=True, epochs=10)
    # LP-FT: 2 head-only epochs, then the backbone warms up over 10% of its 80 steps (8 of them).
    assert optimization.warmup_epochs(plan, steps_per_epoch=10, epochs=10) == 3
    scratch = cases.plan_for_case("large-different", pretrained=False, epochs=20)
    assert optimization.warmup_epochs(scratch, steps_per_epoch=3, epochs=20) == 2  # 6 of 60 steps


def _probes(**scores):
    return [{"depth": d, "val_top1": v, "val_se": 0.01} for d, v in scores.items()]


def test_auto_decision_prints_thresholds_and_reasons():
    small = cases.decide_case(train_counts=[40, 50], pretrained=True,
                              probes=_probes(pool3=0.5, pool4=0.7, pool5=0.8, fc7=0.9))
    # Small data: similar, yet the top blocks fine-tune from the probe, kept only if they beat it on val.
    assert small.case == "small-different" and small.similarity == "similar"
    assert str(cases.SMALL_MAX_IMAGES_PER_CLASS) in small.reasons[0]
    assert "fc7" in small.reasons[1] and "0.900" in small.reasons[1] and "beats the probe" in small.reasons[2]
    large = cases.decide_case(train_counts=[4000, 5000], pretrained=True,
                              probes=_probes(pool3=0.5, pool4=0.7, pool5=0.8, fc7=0.9))
    assert large.case == "large-similar"
    different = cases.decide_case(train_counts=[4000, 5000], pretrained=True,
                                  probes=_probes(pool3=0.6, pool4=0.8, pool5=0.7), shipped_depth="pool5")
    assert different.case == "large-different" and "pool4" in different.reasons[1]
    assert different.evidence["shipped_depth"] == "pool5" and len(different.evidence["probes"]) == 3
    scratch = cases.decide_case(train_counts=[10, 10], pretrained=False, probes=None)
    assert scratch.case == "large-different" and "from scratch" in scratch.reasons[1]


def test_similarity_allows_the_best_probes_standard_error():
    # The best probe wins by less than its standard error: not evidence that the top blocks must move.
    probes = [{"depth": "pool4", "val_top1": 0.80, "val_se": 0.05}, {"depth": "pool5", "val_top1": 0.76, "val_se": 0.05}]
    assert cases.decide_similarity(probes, shipped_depth="pool5")[0] == "similar"
    probes[0]["val_se"] = 0.01
    assert cases.decide_similarity(probes, shipped_depth="pool5")[0] == "different"


def test_lp_ft_backbone_waits_for_the_head_warmup():
    plan = cases.plan_for_case("large-similar", lr=1.0, pretrained=True, epochs=5)
    model = new_vgg16(3)
    optimizer = optimization.build_optimizer(model, plan, weight_decay=0.0)
    scheduler = optimization.build_scheduler(optimizer, plan, steps_per_epoch=10, epochs=5)
    backbone = [g for g in optimizer.param_groups if g["layer_group"] == "conv1"][0]
    head = [g for g in optimizer.param_groups if g["layer_group"] == "fc8"][0]
    assert backbone["lr"] == 0.0 and head["lr"] > 0.0
    for _ in range(plan.head_warmup_epochs * 10 + 1):
        optimizer.step()
        scheduler.step()
    assert backbone["lr"] > 0.0
