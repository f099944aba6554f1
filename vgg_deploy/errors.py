"""Typed errors. The CLI turns each into a one-line message and a non-zero exit, never a traceback."""

from __future__ import annotations


class VggDeployError(Exception):
    """Base class: a problem with the user's input or environment, explained in one line."""

    exit_code = 1


class DataError(VggDeployError):
    """The data folder is missing, malformed, or holds bad images."""


class WeightsError(VggDeployError):
    """Weights could not be found, fetched or trusted."""


class RunFolderError(VggDeployError):
    """A run folder is missing, incomplete, or inconsistent with its weights."""


class ExportError(VggDeployError):
    """An artifact could not be built, or failed its parity or accuracy check."""


class UnavailableError(VggDeployError):
    """What was asked for needs software or hardware this machine lacks (TensorRT, a GPU)."""


class AccuracyGateError(VggDeployError):
    """An artifact lost more accuracy than the user allowed."""

    exit_code = 3


class ArtifactFailedError(VggDeployError):
    """An artifact could not be run or measured; the report still lists every figure."""

    exit_code = 4
