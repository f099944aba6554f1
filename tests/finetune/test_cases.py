"""Each case's freeze plan, checked on the real VGG16: after an optimizer step, exactly the planned
parameters changed; frozen parameters never reach the optimizer; frozen layers stay in eval mode."""

from __future__ import annotations

import pytest
import torch

from vgg_deploy.finetune import cases
from vgg_deploy.finetune import optimization as O
from vgg_deploy.model import GROUP_NAMES, group_modules, group_of_parameter, new_vgg16, replace_head


@pytest.fixture(scope="module")
def vgg():
    torch.manual_seed(0)
    return new_vgg16(1000)


@pytest.mark.parametrize("case", cases.CASES)
def test_after_a_step_exactly_the_planned_parameters_changed(vgg, case):
    model = vgg
    replace_head(model, 3, seed=0)
    plan = cases.plan_for_case(case, lr=1e-3, pretrained=True, epochs=10)
    O.apply_freeze(model, plan)
    optimizer = O.build_optimizer(model, plan, weight_decay=0.05)
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    O.set_train_mode(model, plan)
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
    for group in plan.frozen:
        assert all(not m.training for m in group_modules(model, group))
    for group in plan.trained:
        assert all(m.training for m in group_modules(model, group))


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
    assert O.warmup_epochs(plan, steps_per_epoch=10, epochs=10) == 3
    scratch = cases.plan_for_case("large-different", pretrained=False, epochs=20)
    assert O.warmup_epochs(scratch, steps_per_epoch=3, epochs=20) == 2  # 6 of 60 steps


def test_auto_decision_prints_thresholds_and_reasons():
    small = cases.decide_case(train_counts=[40, 50], pretrained=True,
                              similarity={"early_knn_top1": 0.5, "fc7_knn_top1": 0.9})
    assert small.case == "small-similar"
    assert str(cases.SMALL_MAX_IMAGES_PER_CLASS) in small.reasons[0]
    different = cases.decide_case(train_counts=[4000, 5000], pretrained=True,
                                  similarity={"early_knn_top1": 0.8, "fc7_knn_top1": 0.6})
    assert different.case == "large-different" and "conv3" in different.reasons[1]
    scratch = cases.decide_case(train_counts=[10, 10], pretrained=False, similarity=None)
    assert scratch.case == "large-different" and "from scratch" in scratch.reasons[1]


def test_lp_ft_backbone_waits_for_the_head_warmup():
    plan = cases.plan_for_case("large-similar", lr=1.0, pretrained=True, epochs=5)
    model = new_vgg16(3)
    optimizer = O.build_optimizer(model, plan, weight_decay=0.0)
    scheduler = O.build_scheduler(optimizer, plan, steps_per_epoch=10, epochs=5)
    backbone = [g for g in optimizer.param_groups if g["layer_group"] == "conv1"][0]
    head = [g for g in optimizer.param_groups if g["layer_group"] == "fc8"][0]
    assert backbone["lr"] == 0.0 and head["lr"] > 0.0
    for _ in range(plan.head_warmup_epochs * 10 + 1):
        optimizer.step()
        scheduler.step()
    assert backbone["lr"] > 0.0
