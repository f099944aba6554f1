"""What a runner is, as data: enough to build the same runner again in another process or command."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RunnerSpec:
    """Everything a fresh process (a benchmark row's timing worker, `predict`) needs to build a runner."""

    kind: str  # torch | onnxruntime | openvino | tensorrt
    name: str
    path: str  # the run folder for torch, else the artifact file
    precision: str = "fp32"
    threads: int | None = None
    provider: str = "cpu"
    device: str = "cpu"
    channels_last: bool = False
    cache_dir: str | None = None  # onnxruntime's TensorRT provider: where its engines are cached


def build_runner(spec: RunnerSpec):
    if spec.kind == "torch":
        from vgg_deploy.runfolder import open_run
        from vgg_deploy.runners import TorchRunner

        return TorchRunner(open_run(spec.path).load_model(), name=spec.name, device=spec.device,
                           precision=spec.precision, channels_last=spec.channels_last)
    if spec.kind == "onnxruntime":
        from vgg_deploy.runners import OnnxRuntimeRunner

        return OnnxRuntimeRunner(spec.path, name=spec.name, provider=spec.provider, threads=spec.threads,
                                 precision=spec.precision, cache_dir=spec.cache_dir)
    if spec.kind == "openvino":
        from vgg_deploy.runners.openvino_runner import OpenVINORunner

        return OpenVINORunner(spec.path, name=spec.name, threads=spec.threads, precision=spec.precision)
    if spec.kind == "tensorrt":
        from vgg_deploy.runners.tensorrt_runner import TensorRTRunner

        return TensorRTRunner(spec.path, name=spec.name, precision=spec.precision)
    raise ValueError(f"unknown runner kind {spec.kind!r}")
