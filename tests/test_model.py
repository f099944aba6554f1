from __future__ import annotations

import pickle
import urllib.error

import pytest
import torch
from safetensors.torch import save_file

from vgg_deploy.errors import WeightsError
from vgg_deploy.model import new_vgg16, pretrained_vgg16


@pytest.fixture(scope="module")
def reference_state():
    torch.manual_seed(1)
    return {k: v.contiguous() for k, v in new_vgg16(1000).state_dict().items()}


def test_safetensors_and_weights_only_torch_files_load(tmp_path, reference_state):
    st = tmp_path / "vgg.safetensors"
    save_file(reference_state, str(st))
    pt = tmp_path / "vgg.pth"
    torch.save({"state_dict": reference_state}, pt)
    for path in (st, pt):
        model, info = pretrained_vgg16(str(path))
        assert info["pretrained"] and info["imagenet_head"]
        assert torch.equal(model.features[0].weight, reference_state["features.0.weight"])


def test_a_conv_only_state_dict_loads_its_convolutions_and_gets_the_pooled_head(tmp_path, reference_state):
    from vgg_deploy.finetune.step import _resolve_head

    features = {k: v for k, v in reference_state.items() if k.startswith("features.")}
    for path, save in ((tmp_path / "conv.safetensors", lambda p: save_file(features, str(p))),
                       (tmp_path / "conv.pt", lambda p: torch.save(features, p))):
        save(path)
        model, info = pretrained_vgg16(str(path))
        assert info["pretrained_groups"] == ["conv1", "conv2", "conv3", "conv4", "conv5"]
        assert torch.equal(model.features[28].weight, reference_state["features.28.weight"])
        assert not torch.equal(model.classifier[0].weight, reference_state["classifier.0.weight"])
        assert _resolve_head("auto", info) == "pooled" and _resolve_head("classic", info) == "classic"
    whole = tmp_path / "whole.safetensors"
    save_file(reference_state, str(whole))
    assert _resolve_head("auto", pretrained_vgg16(str(whole))[1]) == "classic"
    # Half a body is neither: refused by name.
    partial = {k: v for k, v in reference_state.items() if not k.startswith("classifier.3")}
    save_file(partial, str(tmp_path / "partial.safetensors"))
    with pytest.raises(WeightsError, match="classifier.3"):
        pretrained_vgg16(str(tmp_path / "partial.safetensors"))


def test_pickled_code_is_never_run(tmp_path):
    class Exploit:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    path = tmp_path / "evil.pt"
    with open(path, "wb") as handle:
        pickle.dump({"features.0.weight": Exploit()}, handle)
    with pytest.raises(WeightsError, match="refusing weights file"):
        pretrained_vgg16(str(path))
    assert not (tmp_path / "pwned").exists()


def test_wrong_architecture_is_named(tmp_path, reference_state):
    state = dict(reference_state)
    state["features.0.weight"] = torch.zeros(8, 3, 3, 3)
    path = tmp_path / "wrong.safetensors"
    save_file(state, str(path))
    with pytest.raises(WeightsError, match="features.0.weight has shape"):
        pretrained_vgg16(str(path))
    del state["features.0.weight"]
    save_file(state, str(path))
    with pytest.raises(WeightsError, match="missing"):
        pretrained_vgg16(str(path))


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        pretrained_vgg16(str(tmp_path / "nope.safetensors"))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(WeightsError, match="refusing"):
        pretrained_vgg16(str(bad))


def test_imagenet_offline_names_the_alternatives(monkeypatch):
    from torchvision.models import VGG16_Weights

    def offline(self, *args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(VGG16_Weights, "get_state_dict", offline)
    with pytest.raises(WeightsError) as err:
        pretrained_vgg16("imagenet")
    assert "--weights PATH" in str(err.value) and "--weights none" in str(err.value)


def test_batch_norm_folds_exactly_into_a_plain_vgg16():
    from vgg_deploy.model import fold_batch_norm, has_batch_norm

    torch.manual_seed(0)
    model = new_vgg16(5, batch_norm=True)
    model.train()
    with torch.no_grad():  # non-trivial running statistics and affine terms
        for _ in range(3):
            model(torch.randn(4, 3, 32, 32) * 3 + 1)
        for module in model.features:
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 2.0)
                module.bias.uniform_(-0.5, 0.5)
    model.eval()
    plain = fold_batch_norm(model)
    assert not has_batch_norm(plain)
    assert set(plain.state_dict()) == set(new_vgg16(5).state_dict())
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected, folded = model(x), plain(x)
    assert expected.abs().max() > 1e-3
    torch.testing.assert_close(folded, expected, rtol=1e-4, atol=1e-5 * float(expected.abs().max()))
