"""One runner interface for every backend (after Polygraphy's backend/base/runner.py).

activate -> prepare/run -> deactivate, usable as a context manager; measuring code is written once.
Optional backends (tensorrt, openvino, onnxruntime-gpu providers) are imported only on activate.
"""

from vgg_deploy.runners.base import Runner
from vgg_deploy.runners.onnxruntime_runner import OnnxRuntimeRunner
from vgg_deploy.runners.torch_runner import TorchRunner

__all__ = ["OnnxRuntimeRunner", "Runner", "TorchRunner"]
