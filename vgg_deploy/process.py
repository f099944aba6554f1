"""Process-wide settings (logging levels, torch's thread count), made by an entry point: the CLI, or a timing
worker's `main`. Library functions never set them, so a caller's own settings survive every call."""

from __future__ import annotations

import logging

# Libraries whose logging a command-line user should not see below ERROR: onnxruntime's quantizer warns on the
# root logger about optional pre-processing on every call, its FP16 converter logs each blocked node, and
# torch.onnx reports every exported op. The steps say what matters themselves, on the console.
QUIET_LOGGERS = ("", "torch.onnx", "onnxruntime")


def quiet_library_logging() -> None:
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def use_threads(threads: int | None) -> None:
    """torch's intra-op threads for this process (onnxruntime and OpenVINO take theirs per session)."""
    if threads:
        import torch

        torch.set_num_threads(threads)
