import pytest
import torch

from vgg_deploy.widths import (DENSE_WIDTHS, PRUNABLE, check_widths, multiply_adds, parameter_count, scaled_widths,
                               vgg16_with_widths, widths_of)


def test_dense_figures_are_torchvision_vgg16s():
    from torchvision.models import vgg16

    reference = vgg16(weights=None)
    assert parameter_count(None, num_classes=1000) == sum(p.numel() for p in reference.parameters()) == 138_357_544
    assert multiply_adds(None, image_size=224, num_classes=1000) == pytest.approx(15.47e9, rel=1e-3)
    built = vgg16_with_widths(1000)
    assert {k: v.shape for k, v in built.state_dict().items()} == {k: v.shape for k, v in reference.state_dict().items()}


def test_a_narrow_model_has_its_widths_and_counts():
    widths = scaled_widths(DENSE_WIDTHS, 0.5, round_to=8)
    model = vgg16_with_widths(5, widths)
    assert widths_of(model) == widths
    assert model.classifier[0].in_features == widths["conv5_3"] * 49
    assert sum(p.numel() for p in model.parameters()) == parameter_count(widths, num_classes=5)
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 5)


def test_widths_round_to_multiples_and_stay_within_the_source():
    widths = scaled_widths(DENSE_WIDTHS, 0.37, round_to=16)
    assert all(w % 16 == 0 and 16 <= w <= DENSE_WIDTHS[n] for n, w in widths.items())
    assert scaled_widths(DENSE_WIDTHS, 0.01, round_to=8)["conv1_1"] == 8  # never below one tile
    assert scaled_widths(DENSE_WIDTHS, 1.0, round_to=8) == DENSE_WIDTHS


@pytest.mark.parametrize("bad", [{**DENSE_WIDTHS, "fc6": 5000}, {**DENSE_WIDTHS, "conv1_1": 0},
                                 {k: v for k, v in DENSE_WIDTHS.items() if k != "fc7"}, {**DENSE_WIDTHS, "fc6": 2.5}])
def test_bad_widths_are_refused(bad):
    with pytest.raises(ValueError):
        check_widths(bad)
    assert set(check_widths(DENSE_WIDTHS)) == set(PRUNABLE)
