"""The finetune step: DATA (ImageFolder) -> RUN/ (weights, model.json, split, logs).

cases (which layers freeze and at what rates), depth_probes (linear probes at several depths: what auto decides by),
optimization (optimizer, schedule, freezing), epoch (one pass), probe (the cached linear probe),
loop (epochs, checkpoints, resume), distributed (torchrun), step (the whole step).
"""

from vgg_deploy.finetune.step import FinetuneConfig, finetune

__all__ = ["FinetuneConfig", "finetune"]
