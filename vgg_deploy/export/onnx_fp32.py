"""FP32 ONNX from the fine-tuned checkpoint: dynamic batch, checked, labelled with its preprocessing."""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from vgg_deploy.errors import ExportError
from vgg_deploy.fileio import atomic_path
from vgg_deploy.preprocessing import Preprocessing

OPSET = 18
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
MAX_BATCH = 1024


def export_fp32(model: nn.Module, *, preprocessing: Preprocessing, class_names: list[str], out: Path) -> dict:
    """Export with torch.onnx (the dynamo exporter), then check, infer shapes and attach metadata."""
    model = model.eval().cpu()
    example = torch.zeros(2, 3, preprocessing.image_size, preprocessing.image_size)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    with atomic_path(out) as tmp:
        raw = tmp.with_name(tmp.name + ".raw.onnx")
        try:
            # The exporter reports progress on stdout and warns about things that do not concern users.
            with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    model, (example,), str(raw), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                    dynamic_shapes={"x": {0: batch}}, opset_version=OPSET, external_data=False,
                )
            proto = onnx.load(str(raw))
        except Exception as err:  # noqa: BLE001 - the exporter raises many types; the user needs one message
            raise ExportError(f"torch.onnx export failed: {str(err).splitlines()[0]}") from None
        finally:
            raw.unlink(missing_ok=True)
        metadata = {
            "class_names": json.dumps(class_names),
            **preprocessing.onnx_metadata(),
            "producer": "vgg-deploy",
        }
        set_metadata(proto, metadata)
        onnx.save(proto, str(tmp))
        onnx.checker.check_model(str(tmp), full_check=True)
        onnx.shape_inference.infer_shapes_path(str(tmp), str(tmp), check_type=True, strict_mode=True)
    return {"opset": OPSET, "input": INPUT_NAME, "output": OUTPUT_NAME, "dynamic_batch": [1, MAX_BATCH]}


def set_metadata(proto: onnx.ModelProto, metadata: dict[str, str]) -> None:
    existing = {p.key: p for p in proto.metadata_props}
    for key, value in metadata.items():
        if key in existing:
            existing[key].value = value
        else:
            proto.metadata_props.add(key=key, value=value)

