import pytest
import torch
from torch import nn

from vgg_deploy.prune import targets
from vgg_deploy.prune.distill import DistillationLoss
from vgg_deploy.prune.scores import channel_scores
from vgg_deploy.prune.surgery import channels_to_remove, prune_to_widths
from vgg_deploy.widths import DENSE_WIDTHS, PRUNABLE, multiply_adds, scaled_widths, vgg16_with_widths, widths_of

SMALL = {**{name: 16 for name in PRUNABLE}, "fc6": 32, "fc7": 32}


def _dead(model: nn.Module, layer: nn.Module, index: int) -> None:
    """A unit whose ReLU output is always 0: removing it cannot change anything downstream."""
    with torch.no_grad():
        layer.weight[index].zero_()
        layer.bias[index].fill_(-1.0)


def test_removing_dead_channels_keeps_the_logits_across_the_flatten():
    torch.manual_seed(0)
    model = vgg16_with_widths(3, SMALL).eval()
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    _dead(model, convs[3], 5)  # conv2_2: takes conv3_1's inputs with it
    _dead(model, convs[12], 7)  # conv5_3: takes 49 of fc6's input columns with it
    _dead(model, model.classifier[0], 2)  # fc6
    x = torch.randn(4, 3, 32, 32)
    before = model(x)
    scores = {name: torch.ones(w) for name, w in SMALL.items()}
    scores["conv2_2"][5] = scores["conv5_3"][7] = scores["fc6"][2] = 0.0
    target = {**SMALL, "conv2_2": 15, "conv5_3": 15, "fc6": 31}
    prune_to_widths(model, target, scores)
    assert widths_of(model) == target
    assert model.classifier[0].in_features == 15 * 49 and convs[4].in_channels == 15
    torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-6)


def test_removing_a_live_channel_changes_the_logits():
    torch.manual_seed(0)
    model = vgg16_with_widths(3, SMALL).eval()
    x = torch.randn(2, 3, 32, 32)
    before = model(x)
    prune_to_widths(model, {**SMALL, "conv5_3": 8}, {n: torch.arange(w, dtype=torch.float) for n, w in SMALL.items()})
    assert not torch.allclose(model(x), before)


def test_pruning_cannot_widen():
    model = vgg16_with_widths(3, SMALL)
    with pytest.raises(ValueError, match="cannot widen"):
        prune_to_widths(model, {**SMALL, "fc7": 64}, {n: torch.ones(w) for n, w in SMALL.items()})


def test_lowest_scores_go_first_and_ties_break_by_index():
    assert channels_to_remove(torch.tensor([3.0, 1.0, 2.0, 1.0]), keep=2) == [1, 3]


def test_norm_and_taylor_scores_find_a_dead_channel():
    torch.manual_seed(0)
    model = vgg16_with_widths(3, SMALL)
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        convs[6].weight[4].mul_(1e-3)  # conv3_3: tiny weights
    _dead(model, convs[9], 2)  # conv4_3: never active
    l1 = channel_scores(model, "l1")
    assert int(l1["conv3_3"].argmin()) == 4
    batches = [(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])) for _ in range(2)]
    taylor = channel_scores(model, "taylor", batches=batches, loss_fn=nn.CrossEntropyLoss(), device=torch.device("cpu"))
    assert set(taylor) == set(PRUNABLE) and all(taylor[n].shape == (w,) for n, w in SMALL.items())
    assert float(taylor["conv4_3"][2]) == 0.0 and float(taylor["conv4_3"].max()) > 0
    assert all(p.grad is None for p in model.parameters())  # scoring leaves no gradients behind


def test_keep_for_macs_is_the_largest_keep_under_the_target():
    keep = targets.keep_for_macs(DENSE_WIDTHS, 0.5, image_size=224, num_classes=10, round_to=8)
    full = multiply_adds(DENSE_WIDTHS, image_size=224, num_classes=10)

    def macs(k):
        return multiply_adds(scaled_widths(DENSE_WIDTHS, k, round_to=8), image_size=224, num_classes=10)

    assert macs(keep) <= 0.5 * full < macs(keep + 0.001)
    with pytest.raises(Exception, match="fraction"):
        targets.keep_for_macs(DENSE_WIDTHS, 1.5, image_size=224, num_classes=10, round_to=8)


def test_keep_for_speedup_bisects_on_measured_speedups():
    # A fake runtime whose speed-up is 1 / MACs fraction: the answer is keep_for_macs's at 1/target.
    full = multiply_adds(DENSE_WIDTHS, image_size=64, num_classes=10)

    def speedup_of(widths, _workdir):
        return full / multiply_adds(widths, image_size=64, num_classes=10)

    def uniform(keep):
        return scaled_widths(DENSE_WIDTHS, keep, round_to=8)

    keep, probes = targets.keep_for_speedup(2.0, widths_for=uniform, speedup_of=speedup_of)
    assert len(probes) == targets.SEARCH_ITERATIONS
    assert speedup_of(scaled_widths(DENSE_WIDTHS, keep, round_to=8), None) >= 2.0
    assert speedup_of(scaled_widths(DENSE_WIDTHS, keep + 1 / 32, round_to=8), None) < 2.0
    with pytest.raises(Exception, match="not reached"):
        targets.keep_for_speedup(2.0, widths_for=uniform, speedup_of=lambda w, d: 1.1)


def test_distillation_loss_is_the_hard_loss_at_weight_zero_and_zero_when_matching_the_teacher():
    logits, labels = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 0, 1])
    hard = nn.CrossEntropyLoss()
    assert DistillationLoss(hard, temperature=4, soft_weight=0.0)(logits, labels, torch.randn(6, 4)) == hard(logits, labels)
    assert DistillationLoss(hard, temperature=4, soft_weight=1.0)(logits, labels, logits.clone()).abs() < 1e-6
    assert DistillationLoss(hard, temperature=4, soft_weight=1.0)(logits, labels, -logits) > 0.1
