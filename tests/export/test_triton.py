"""The Triton model repository, read back with Triton's own ModelConfig protobuf and checked against the
ONNX artifacts' inputs and outputs."""

from __future__ import annotations

import json

import onnx
import pytest

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
from google.protobuf import text_format  # noqa: E402

from vgg_deploy.export.triton import model_name, write_triton_repo  # noqa: E402

ONNX_TO_TRITON = {onnx.TensorProto.FLOAT: model_config_pb2.TYPE_FP32}


def test_repository_matches_the_onnx_artifacts(exported_run, tmp_path):
    export_dir = exported_run / "export"
    manifest = json.loads((export_dir / "manifest.json").read_text())
    repo = tmp_path / "models"
    (repo / "someone_elses_model").mkdir(parents=True)
    names = write_triton_repo(export_dir, manifest, repo, max_batch_size=32, preferred_batch_sizes=[8, 32])
    assert names == [model_name(a["name"]) for a in manifest["artifacts"]]
    assert (repo / "someone_elses_model").is_dir()
    for entry in manifest["artifacts"]:
        folder = repo / model_name(entry["name"])
        config = text_format.Parse((folder / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
        assert config.name == folder.name and config.backend == "onnxruntime"
        assert config.max_batch_size == 32
        assert list(config.dynamic_batching.preferred_batch_size) == [8, 32]
        graph = onnx.load(str(folder / "1" / "model.onnx"), load_external_data=False).graph
        for declared, actual in ((config.input[0], graph.input[0]), (config.output[0], graph.output[0])):
            shape = actual.type.tensor_type.shape.dim
            assert declared.name == actual.name
            assert declared.data_type == ONNX_TO_TRITON[actual.type.tensor_type.elem_type]
            assert list(declared.dims) == [d.dim_value for d in shape[1:]]  # batch dim is Triton's
        assert config.output[0].label_filename == "labels.txt"
        assert (folder / "labels.txt").read_text().split() == manifest["class_names"]


def test_rewriting_replaces_our_models_in_place(exported_run, tmp_path):
    export_dir = exported_run / "export"
    manifest = json.loads((export_dir / "manifest.json").read_text())
    manifest["artifacts"] = manifest["artifacts"][:1]
    repo = tmp_path / "models"
    write_triton_repo(export_dir, manifest, repo, max_batch_size=8, preferred_batch_sizes=[4])
    write_triton_repo(export_dir, manifest, repo, max_batch_size=16, preferred_batch_sizes=[4])
    config = text_format.Parse((repo / "vgg16_onnx" / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert config.max_batch_size == 16
    assert sorted(p.name for p in repo.iterdir()) == ["vgg16_onnx"]


def test_engine_config_uses_the_tensorrt_backend_and_its_profile():
    from vgg_deploy.export.triton import build_config

    entry = {"name": "trt-int8", "format": "tensorrt", "engine": {"profile": {"min": 1, "opt": 8, "max": 16}}}
    config = build_config(entry, name="vgg16_trt_int8", input_name="input", output_name="logits", image_size=224, num_classes=6, max_batch_size=16,
                          preferred_batch_sizes=[8, 16])
    assert config.backend == "tensorrt" and config.default_model_filename == "model.plan"
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    assert list(config.input[0].dims) == [3, 224, 224] and list(config.output[0].dims) == [6]
