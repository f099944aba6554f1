"""Per-layer widths from measured sensitivity (prune --allocation sensitivity)."""

import json

import pytest
import torch

from tests.conftest import PRUNE_SETTINGS
from vgg_deploy.errors import VggDeployError
from vgg_deploy.prune import PruneConfig, allocation
from vgg_deploy.prune.pipeline import Pruning
from vgg_deploy.prune.allocation import (
    SENSITIVITY_KEEPS,
    allocate_widths,
    measure_sensitivity,
    step_widths,
)
from vgg_deploy.prune.scores import weight_norm_scores
from vgg_deploy.prune.surgery import prune_to_widths
from vgg_deploy.widths import CONV_NAMES, DENSE_WIDTHS, PRUNABLE, multiply_adds, vgg16_with_widths


def _table(steep: tuple[str, ...]) -> dict[str, dict[float, float]]:
    """Val loss 1.0 unpruned; the `steep` layers lose 2.0 per unit of width cut, the others 0.01."""
    return {layer: {1.0: 1.0, **{k: 1.0 + (2.0 if layer in steep else 0.01) * (1 - k) for k in SENSITIVITY_KEEPS}}
            for layer in PRUNABLE}


def test_widths_go_where_they_cost_least_and_meet_the_target():
    steep = ("conv1_1", "conv1_2", "conv2_1", "conv2_2")
    full = multiply_adds(DENSE_WIDTHS, image_size=224, num_classes=6)
    widths = allocate_widths(DENSE_WIDTHS, _table(steep), target_macs=0.5, image_size=224, num_classes=6, round_to=8)
    assert multiply_adds(widths, image_size=224, num_classes=6) <= 0.5 * full
    assert all(widths[layer] == DENSE_WIDTHS[layer] for layer in steep)  # the sensitive layers are spared
    # With every layer but conv5 and the fc layers steep, those are what go.
    flat = ("conv5_1", "conv5_2", "conv5_3", "fc6", "fc7")
    widths_late = allocate_widths(DENSE_WIDTHS, _table(tuple(n for n in PRUNABLE if n not in flat)), target_macs=0.95,
                                  image_size=224, num_classes=6, round_to=8)
    assert {n for n in PRUNABLE if widths_late[n] < DENSE_WIDTHS[n]} <= set(flat)
    assert widths_late["conv5_1"] < DENSE_WIDTHS["conv5_1"]
    # Never below the smallest fraction measured, always on the rounding grid.
    assert all(widths[n] >= min(SENSITIVITY_KEEPS) * DENSE_WIDTHS[n] and widths[n] % 8 == 0 for n in PRUNABLE)
    # A target that needs more than the measured range allows is refused, not met by guessing.
    with pytest.raises(Exception, match="not reachable"):
        allocate_widths(DENSE_WIDTHS, _table(()), target_macs=0.01, image_size=224, num_classes=6, round_to=8)


def test_tied_layers_follow_their_leader_and_steps_approach_the_final_widths():
    table = {layer: points for layer, points in _table(()).items() if layer in CONV_NAMES}
    pooled = {**DENSE_WIDTHS, "fc6": 512, "fc7": 512}
    widths = allocate_widths(pooled, table, target_macs=0.4, image_size=64, num_classes=3, round_to=8,
                             ties={"conv5_3": ("fc6", "fc7")})
    assert widths["fc6"] == widths["fc7"] == widths["conv5_3"]
    steps = [step_widths(pooled, widths, step=k, steps=3, round_to=8) for k in (1, 2, 3)]
    assert steps[-1] == widths
    for layer in PRUNABLE:
        assert pooled[layer] >= steps[0][layer] >= steps[1][layer] >= steps[2][layer] == widths[layer]


def test_masking_a_layer_computes_what_removing_its_channels_does():
    """The measurement masks channels (zeroes their ReLU output) instead of cutting them: the same logits."""
    torch.manual_seed(0)
    widths = {name: 16 for name in CONV_NAMES} | {"fc6": 32, "fc7": 32}
    model = vgg16_with_widths(3, widths).eval()
    scores = weight_norm_scores(model, p=1)
    images = torch.randn(4, 3, 32, 32)
    seen = {}

    def val_loss(m):
        seen.setdefault("logits", []).append(m(images).detach())
        return float(seen["logits"][-1].sum())

    measure_sensitivity(model, scores, val_loss=val_loss, layers=("conv3_2",), keeps=(0.5,))
    masked = seen["logits"][1]
    reference = vgg16_with_widths(3, widths).eval()
    reference.load_state_dict(model.state_dict())
    pruned = prune_to_widths(reference, {**widths, "conv3_2": 8}, scores)
    torch.testing.assert_close(pruned(images), masked, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(seen["logits"][0], model(images))  # the hooks are gone afterwards


def test_a_sensitivity_prune_records_and_reaches_its_widths(pruned_run):
    """The session prune (conftest's PRUNE_SETTINGS) allocates by sensitivity."""
    info = json.loads((pruned_run / "model.json").read_text())
    target = json.loads((pruned_run / "prune_target.json").read_text())
    assert target["allocation"] == PRUNE_SETTINGS["allocation"] == "sensitivity"
    assert set(target["sensitivity"]) == set(PRUNABLE)
    assert all(set(points) == {"1.0", *map(str, SENSITIVITY_KEEPS)} for points in target["sensitivity"].values())
    assert info["widths"] == target["widths"]
    full = multiply_adds(DENSE_WIDTHS, image_size=32, num_classes=3)
    assert multiply_adds(info["widths"], image_size=32, num_classes=3) <= PRUNE_SETTINGS["target_macs"] * full
    assert len({info["widths"][n] / DENSE_WIDTHS[n] for n in PRUNABLE}) > 1  # not one fraction for all
    assert target["sensitivity_from"] is None and target["sensitivity_seconds"] > 0
    assert target["sensitivity_basis"]["criterion"] == "taylor" and target["sensitivity_basis"]["layers"] == list(PRUNABLE)


def _target_reusing(learned_run, out, table_from, **changes) -> dict:
    settings = {**PRUNE_SETTINGS, **changes}
    state = Pruning(PruneConfig(run=str(learned_run), out=str(out), sensitivity_from=str(table_from), **settings), out)
    return state.final_target()


def test_a_reused_table_allocates_as_the_measured_one_did(pruned_run, learned_run, tmp_path, monkeypatch):
    def measure(*_args, **_kwargs):
        raise AssertionError("the table was measured again")

    monkeypatch.setattr(allocation, "measure_sensitivity", measure)
    recorded = json.loads((pruned_run / "prune_target.json").read_text())
    target = _target_reusing(learned_run, tmp_path / "p", pruned_run)
    assert target["widths"] == recorded["widths"] and target["sensitivity_from"] == str(pruned_run)
    assert json.loads(json.dumps(target["sensitivity"])) == recorded["sensitivity"]
    assert "sensitivity_seconds" not in target
    # Another target from the same table: narrower, within it.
    lower = _target_reusing(learned_run, tmp_path / "q", pruned_run, target_macs=0.4)
    full = multiply_adds(DENSE_WIDTHS, image_size=32, num_classes=3)
    assert multiply_adds(lower["widths"], image_size=32, num_classes=3) <= 0.4 * full
    assert all(lower["widths"][n] <= target["widths"][n] for n in PRUNABLE) and lower["widths"] != target["widths"]


def _edited_target(pruned_run, folder, edit):
    folder.mkdir()
    target = json.loads((pruned_run / "prune_target.json").read_text())
    edit(target)
    (folder / "prune_target.json").write_text(json.dumps(target))
    return folder


@pytest.mark.parametrize("edit, changes, message", [
    (None, {"criterion": "l1"}, "measured with --criterion taylor, this prune asks for l1"),
    (None, {"sensitivity_images": 7}, "--sensitivity-images"),
    (lambda t: t["sensitivity_basis"].update(source_weights_sha256="0" * 64), {}, "another source run's weights"),
    (lambda t: t.pop("sensitivity_basis"), {}, "does not record what it was measured on"),
    (lambda t: t.pop("sensitivity"), {}, "measured no sensitivity"),
])
def test_a_table_measured_otherwise_is_refused(pruned_run, learned_run, tmp_path, edit, changes, message):
    table_from = pruned_run if edit is None else _edited_target(pruned_run, tmp_path / "edited", edit)
    with pytest.raises(VggDeployError, match=message):
        _target_reusing(learned_run, tmp_path / "p", table_from, **changes)


def test_a_table_from_a_folder_that_is_not_a_prune_names_it(learned_run, tmp_path):
    with pytest.raises(VggDeployError, match="holds no prune_target.json"):
        _target_reusing(learned_run, tmp_path / "p", learned_run)
