"""VGG's own layer names (conv1_1 ... conv5_3, fc6, fc7, fc8) for the nodes of an exported graph, so a
report can say which layer stayed out of INT8 rather than `node_conv2d_7`."""

from __future__ import annotations

import os

import onnx


def vgg_layer_names(model_path: str | os.PathLike[str]) -> dict[str, str]:
    """{node name: VGG name}. Convolutions are numbered by block (a MaxPool closes a block) and position
    in it; the fully connected layers count on from fc6, in graph order."""
    graph = onnx.load(str(model_path), load_external_data=False).graph
    names: dict[str, str] = {}
    block, position, fc = 1, 0, 6
    for node in graph.node:
        if node.op_type == "MaxPool":
            if position:
                block, position = block + 1, 0
        elif node.op_type == "Conv":
            position += 1
            names[node.name] = f"conv{block}_{position}"
        elif node.op_type in ("Gemm", "MatMul"):
            names[node.name] = f"fc{fc}"
            fc += 1
    return names
