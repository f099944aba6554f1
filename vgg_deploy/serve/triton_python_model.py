"""Triton Python-backend model that runs one exported ONNX file on the CPU with onnxruntime or OpenVINO.

`vgg-deploy serve` copies this file into its model repository as `1/model.py`. It runs inside Triton's
Python stub, not in vgg-deploy's process, so it imports nothing of vgg_deploy: only numpy, the runtime and
Triton's `triton_python_backend_utils`. Everything it needs comes from the model config's parameters.

Tensors cross between Triton and numpy by DLPack, never by the stub's `as_numpy()` / `Tensor(name, array)`: the
wheel's stub was compiled against numpy 1.x, and under numpy 2 those read the array descriptor wrongly (seen
here: every input row arrived identical and every output arrived empty).
"""

import json
import os
import sys

# The stub's embedded interpreter ignores PYTHONPATH, so serve hands over its own import path by name; without
# it the stub cannot see the environment's numpy and onnxruntime.
sys.path[:0] = [p for p in os.environ.get("VGG_DEPLOY_SYS_PATH", "").split(os.pathsep) if p and p not in sys.path]

import numpy as np
import triton_python_backend_utils as pb_utils


def _onnxruntime_session(path: str, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    return lambda batch: session.run(None, {input_name: batch})[0]


def _openvino_model(path: str, threads: int):
    import openvino as ov

    core = ov.Core()
    if threads:
        core.set_property("CPU", {"INFERENCE_NUM_THREADS": threads})
    # Without the hint OpenVINO computes float parts in bf16 on CPUs with native bf16 (vgg_deploy's OpenVINO
    # runner does the same, for the same reason).
    compiled = core.compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return lambda batch: compiled(batch)[0]


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        parameters = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        self.input_name = config["input"][0]["name"]
        self.output_name = config["output"][0]["name"]
        path = os.path.join(args["model_repository"], args["model_version"], parameters["model_file"])
        threads = int(parameters.get("threads", "0"))
        runtime = parameters["runtime"]
        if runtime == "onnxruntime":
            self.run = _onnxruntime_session(path, threads)
        elif runtime == "openvino":
            self.run = _openvino_model(path, threads)
        else:
            raise pb_utils.TritonModelException(f"unknown runtime {runtime!r} in the model config")

    def execute(self, requests):
        """The dynamic batcher hands over several requests at once: the good ones run as one batch, and each
        bad one gets its own error without failing the others."""
        responses = [None] * len(requests)
        good = []
        for index, request in enumerate(requests):
            batch = np.from_dlpack(pb_utils.get_input_tensor_by_name(request, self.input_name))
            if not np.isfinite(batch).all():
                responses[index] = pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(f"input '{self.input_name}' holds NaN or infinite values"))
            else:
                good.append((index, batch))
        if good:
            try:
                logits = np.asarray(self.run(np.concatenate([batch for _, batch in good])), dtype=np.float32)
            except Exception as err:  # the runtime's own message goes back to each client of this batch
                for index, _ in good:
                    responses[index] = pb_utils.InferenceResponse(error=pb_utils.TritonError(f"inference failed: {err}"))
            else:
                start = 0
                for index, batch in good:
                    part = logits[start:start + len(batch)].copy()
                    start += len(batch)
                    responses[index] = pb_utils.InferenceResponse([pb_utils.Tensor.from_dlpack(self.output_name, part)])
        return responses
