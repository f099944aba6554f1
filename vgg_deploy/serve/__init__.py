"""`vgg-deploy serve`: the exported artifacts behind a real Triton Inference Server, on the CPU."""

from vgg_deploy.serve.server import ServeError, ServeOptions, TritonServer

__all__ = ["ServeError", "ServeOptions", "TritonServer"]
