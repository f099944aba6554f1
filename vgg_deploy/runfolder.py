"""The RUN/ folder contract written by finetune and read by export, benchmark and users' scripts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from vgg_deploy.data import Split
from vgg_deploy.errors import RunFolderError
from vgg_deploy.fileio import atomic_path, read_json, write_json
from vgg_deploy.preprocessing import Preprocessing
from vgg_deploy.heads import CLASSIC, check_head
from vgg_deploy.widths import check_widths, vgg16_with_widths

WEIGHTS = "model.safetensors"
MODEL_JSON = "model.json"
SPLIT_JSON = "split.json"
CONFIG_JSON = "config.json"
EPOCH_LOG = "epochs.jsonl"
CURVES_PNG = "curves.png"
SKIPPED_JSON = "skipped_images.json"
RESUME_STATE = "resume.pt"
DISTRIBUTED_JSON = "distributed.json"


def save_weights(model: nn.Module, path: Path, *, overrides: dict[str, torch.Tensor] | None = None) -> None:
    from safetensors.torch import save_file

    state = {**model.state_dict(), **(overrides or {})}
    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in state.items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt", "arch": "vgg16"})


def write_model_json(run: Path, info: dict) -> None:
    write_json(run / MODEL_JSON, info)


@dataclass
class Run:
    path: Path
    info: dict

    @property
    def class_names(self) -> list[str]:
        return list(self.info["class_names"])

    @property
    def widths(self) -> dict[str, int] | None:
        """Layer widths of a pruned run (`vgg-deploy prune`); None for torchvision's dense VGG16."""
        return self.info.get("widths")

    @property
    def head(self) -> str:
        """classic (torchvision's fc6-fc8) or pooled (heads.py); runs before heads existed are classic."""
        return self.info.get("head", {}).get("kind", CLASSIC)

    @property
    def preprocessing(self) -> Preprocessing:
        return Preprocessing.from_dict(self.info["preprocessing"])

    def split(self) -> Split:
        path = self.path / SPLIT_JSON
        if not path.is_file():
            raise RunFolderError(f"{path} is missing; was {self.path} written by `vgg-deploy finetune`?")
        return Split.from_dict(read_json(path))

    def load_model(self) -> nn.Module:
        return load_weights(self.path / WEIGHTS, num_classes=len(self.class_names), widths=self.widths)


def open_run(run: str | Path) -> Run:
    run = Path(run)
    if not run.is_dir():
        raise RunFolderError(f"run folder {run} does not exist")
    model_json = run / MODEL_JSON
    if not model_json.is_file():
        raise RunFolderError(f"{model_json} is missing; is {run} a finished `vgg-deploy finetune` run?")
    try:
        info = read_json(model_json)
        Preprocessing.from_dict(info["preprocessing"])
        if len(info["class_names"]) < 2:
            raise ValueError("fewer than two class names")
        if info.get("widths") is not None:
            check_widths(info["widths"])
        check_head(info.get("head", {}).get("kind", CLASSIC), info.get("widths"))
    except (ValueError, KeyError, TypeError) as err:
        raise RunFolderError(f"{model_json} is not a valid model description ({err})") from None
    return Run(run, info)


def load_weights(path: Path, *, num_classes: int, widths: dict[str, int] | None = None) -> nn.Module:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise RunFolderError(f"{path} is missing")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise RunFolderError(f"{path} is unreadable or truncated ({err})") from None
    model = vgg16_with_widths(num_classes, widths)
    expected = model.state_dict()
    if set(state) != set(expected):
        raise RunFolderError(f"{path} does not hold VGG16 weights (keys differ from torchvision's VGG16)")
    head = state["classifier.6.weight"]
    if head.shape[0] != num_classes:
        raise RunFolderError(
            f"{path} has a {head.shape[0]}-class head but model.json lists {num_classes} class names"
        )
    bad = [k for k in expected if expected[k].shape != state[k].shape]
    if bad:
        recorded = "the widths model.json records" if widths else "torchvision's VGG16"
        raise RunFolderError(f"{path}: {bad[0]} has shape {tuple(state[bad[0]].shape)}, expected "
                             f"{tuple(expected[bad[0]].shape)} ({recorded})")
    model.load_state_dict(state)
    return model.eval()
