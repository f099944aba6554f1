"""VGG's own layer names (conv1_1 ... conv5_3, fc6, fc7, fc8) for the nodes of an exported graph, so a
report can say which layer stayed out of INT8 rather than `node_conv2d_7`."""

from __future__ import annotations

import os

import onnx

from vgg_deploy.widths import CONV_NAMES


def vgg_layer_names(model_path: str | os.PathLike[str]) -> dict[str, str]:
    """{node name: VGG name}. The convolutions take widths.CONV_NAMES in graph order (pruning narrows layers,
    it never removes one); the fully connected layers count on from fc6."""
    graph = onnx.load(str(model_path), load_external_data=False).graph
    convs = [node.name for node in graph.node if node.op_type == "Conv"]
    if len(convs) != len(CONV_NAMES):
        raise ValueError(f"{model_path} has {len(convs)} convolutions, not VGG16's {len(CONV_NAMES)}")
    fcs = [node.name for node in graph.node if node.op_type in ("Gemm", "MatMul")]
    return {**dict(zip(convs, CONV_NAMES)), **{name: f"fc{index}" for index, name in enumerate(fcs, 6)}}
