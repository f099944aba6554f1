"""CUDA paths: mixed-precision training and the CUDA runners. Skipped cleanly without a GPU (conftest)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vgg_deploy.errors import UnavailableError

pytestmark = pytest.mark.gpu


def test_auto_precision_on_cuda_is_mixed():
    from vgg_deploy.finetune import devices

    assert devices.resolve_precision("auto", torch.device("cuda")) in ("bf16", "fp16")


def test_cuda_training_step_with_autocast_moves_only_trained_layers():
    from vgg_deploy.finetune import cases
    from vgg_deploy.finetune import devices
    from vgg_deploy.finetune.epoch import run_epoch
    from vgg_deploy.finetune import optimization
    from vgg_deploy.model import new_vgg16

    device = torch.device("cuda")
    model = new_vgg16(3).to(device).to(memory_format=torch.channels_last)
    plan = cases.plan_for_case("small-different", lr=1e-3, pretrained=True, epochs=2)
    optimization.apply_freeze(model, plan)
    optimizer = optimization.build_optimizer(model, plan, weight_decay=0.0)
    precision = devices.resolve_precision("auto", device)
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    frozen_before = model.features[0].weight.detach().clone()
    trained_before = model.classifier[6].weight.detach().clone()
    batches = [(torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 2, 0]))]
    stats = run_epoch(model, batches, loss_fn=torch.nn.CrossEntropyLoss(), device=device, precision=precision,
                        channels_last=True, optimizer=optimizer, scaler=scaler)
    assert np.isfinite(stats.loss)
    assert torch.equal(model.features[0].weight, frozen_before)
    assert not torch.equal(model.classifier[6].weight, trained_before)


def test_cuda_torch_runner_fp16_follows_fp32():
    from vgg_deploy.model import new_vgg16
    from vgg_deploy.runners import TorchRunner

    torch.manual_seed(0)
    model = new_vgg16(10)
    batch = np.random.default_rng(0).standard_normal((4, 3, 64, 64)).astype(np.float32)
    with TorchRunner(model, device="cuda") as fp32:
        reference = fp32.infer(batch)
    with TorchRunner(model, device="cuda", precision="fp16", channels_last=True) as fp16:
        out = fp16.infer(batch)
    assert np.abs(out - reference).max() < 0.05 * max(1.0, np.ptp(reference))


def test_tensorrt_engine_round_trip(tmp_path):
    pytest.importorskip("tensorrt")
    from vgg_deploy.export.onnx_fp32 import export_fp32
    from vgg_deploy.export.tensorrt_build import build_engine
    from vgg_deploy.artifacts.tensorrt_meta import BatchProfile, detect_environment, make_sidecar, write_sidecar
    from vgg_deploy.model import new_vgg16
    from vgg_deploy.preprocessing import Preprocessing
    from vgg_deploy.runners.tensorrt_runner import TensorRTRunner

    env = detect_environment()
    model = new_vgg16(3).eval()
    onnx_path, engine = tmp_path / "m.onnx", tmp_path / "m.engine"
    export_fp32(model, preprocessing=Preprocessing.for_image_size(32), class_names=["a", "b", "c"], out=onnx_path)
    build_engine(onnx_path, engine, env=env, input_name="input", image_size=32, profile=BatchProfile(1, 2, 4),
                 workspace_bytes=1 << 30, timing_cache=tmp_path / "t.cache")
    write_sidecar(engine, make_sidecar(env=env, precision="fp32", profile=BatchProfile(1, 2, 4), source_onnx="m.onnx",
                                       source_sha256="0", input_name="input", output_name="logits", image_size=32,
                                       strongly_typed=True, workspace_bytes=1 << 30))
    batch = np.random.default_rng(0).standard_normal((7, 3, 32, 32)).astype(np.float32)
    with TensorRTRunner(engine, precision="fp32") as runner:
        out = runner.infer(batch)  # 7 images through a profile of at most 4: split into 4 + 3
        with pytest.raises(UnavailableError, match="runs batches of 1 to 4"):
            runner.prepare(batch)
        prepared = runner.prepare(batch[:2])
        first = runner.to_numpy(runner.run(prepared))
        np.testing.assert_array_equal(first, runner.to_numpy(runner.run(prepared)))  # the timing loop's reuse
    reference = model(torch.from_numpy(batch)).detach().numpy()
    assert out.shape == reference.shape
    assert np.abs(out - reference).max() < 1e-2 * max(1.0, np.ptp(reference))


def test_onnxruntime_cuda_io_binding_follows_the_cpu(tiny_onnx, tiny_batches):
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("this onnxruntime has no CUDA provider (onnxruntime-gpu)")
    from vgg_deploy.runners import OnnxRuntimeRunner

    with OnnxRuntimeRunner(tiny_onnx) as cpu, OnnxRuntimeRunner(tiny_onnx, provider="cuda") as cuda:
        assert cuda.io_binding
        prepared = cuda.prepare(tiny_batches[0])
        out = cuda.to_numpy(cuda.run(prepared))
        np.testing.assert_allclose(out, cpu.infer(tiny_batches[0]), rtol=1e-3, atol=1e-4)
