from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from vgg_deploy.errors import UnavailableError
from vgg_deploy.runners import OnnxRuntimeRunner, TorchRunner


def test_onnxruntime_runner_matches_a_plain_session(tiny_onnx, tiny_batches):
    expected = ort.InferenceSession(str(tiny_onnx)).run(None, {"input": tiny_batches[0]})[0]
    with OnnxRuntimeRunner(tiny_onnx, threads=1) as runner:
        assert runner.is_active
        np.testing.assert_allclose(runner.infer(tiny_batches[0]), expected, rtol=1e-5, atol=1e-6)
        assert runner.describe() == {"backend": "onnxruntime", "precision": "fp32", "provider": "cpu", "threads": 1,
                                     "io_binding": False}
    assert not runner.is_active


def test_io_binding_gives_the_same_logits_and_reruns_the_bound_input(tiny_onnx, tiny_batches):
    """The GPU providers' path (input bound on the device in prepare, output kept there until to_numpy),
    exercised on the CPU device, where it must equal a plain session.run."""
    expected = ort.InferenceSession(str(tiny_onnx)).run(None, {"input": tiny_batches[0]})[0]
    with OnnxRuntimeRunner(tiny_onnx, threads=1, io_binding=True) as runner:
        prepared = runner.prepare(tiny_batches[0])
        first = runner.to_numpy(runner.run(prepared))
        again = runner.to_numpy(runner.run(prepared))  # what a timing loop does: the same bound input
        np.testing.assert_allclose(first, expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(first, again)
        np.testing.assert_allclose(runner.infer(tiny_batches[1]), ort.InferenceSession(str(tiny_onnx)).run(
            None, {"input": tiny_batches[1]})[0], rtol=1e-5, atol=1e-6)
        assert runner.describe()["io_binding"] is True
    assert OnnxRuntimeRunner(tiny_onnx, provider="cuda").io_binding  # on by default where it saves copies


def test_torch_runner_interface(tiny_batches):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 4))
    runner = TorchRunner(model)
    with pytest.raises(RuntimeError, match="before activate"):
        runner.infer(tiny_batches[0])
    with runner:
        out = runner.infer(tiny_batches[0])
        prepared = runner.prepare(tiny_batches[0])
        assert isinstance(prepared, torch.Tensor)
        np.testing.assert_allclose(runner.to_numpy(runner.run(prepared)), out)
    expected = model(torch.from_numpy(tiny_batches[0])).detach().numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def test_missing_execution_provider_is_unavailable_not_a_silent_cpu_fallback(tiny_onnx):
    if "TensorrtExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the TensorRT provider")
    with pytest.raises(UnavailableError, match="TensorrtExecutionProvider"):
        OnnxRuntimeRunner(tiny_onnx, provider="tensorrt").activate()


def test_openvino_runs_an_fp32_file_in_fp32(tiny_onnx, tiny_batches):
    """OpenVINO's CPU default computes float parts in bf16 where the CPU has it; the runner asks for FP32, the
    file's precision, and records what was compiled."""
    pytest.importorskip("openvino")
    from vgg_deploy.runners.openvino_runner import OpenVINORunner

    reference = ort.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"])
    with OpenVINORunner(tiny_onnx) as runner:
        assert runner.describe()["inference_precision"] == "f32"
        for batch in tiny_batches:
            expected = reference.run(None, {"input": batch})[0]
            # bf16 keeps 8 bits of mantissa (relative error ~4e-3); FP32 agrees to ~1e-6.
            np.testing.assert_allclose(runner.infer(batch), expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())
