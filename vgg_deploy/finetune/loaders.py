"""The batches one training run reads: augmented images and eval-transformed val, or (small-similar) the frozen
network's codes, computed once. The training order is a function of (seed, epoch) alone, so a resumed run sees
the batches an unbroken one would."""

from __future__ import annotations

import time

import torch
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from vgg_deploy.console import console
from vgg_deploy.data import ImageDataset
from vgg_deploy.finetune.distributed import Distributed
from vgg_deploy.finetune.probe import Standardiser, extract_codes


def eval_loader(items, transform, *, batch_size: int, workers: int) -> DataLoader:
    return DataLoader(ImageDataset(items, transform), batch_size=batch_size, shuffle=False, num_workers=workers)


class RunBatches:
    def __init__(self, *, data, dist: Distributed, seed: int, batch_size: int, workers: int, channels_last: bool):
        self.data, self.dist, self.seed = data, dist, seed
        self.global_batch, self.workers, self.channels_last = batch_size, workers, channels_last
        self.per_rank_batch = batch_size // dist.world_size
        self.shuffle_generator = torch.Generator()
        self.train_sampler: DistributedSampler | None = None
        self.standardiser: Standardiser | None = None  # set by cached_codes: folded into fc8 on save
        self.cache_seconds = 0.0

    def start_epoch(self, epoch: int) -> None:
        self.shuffle_generator.manual_seed(self.seed * 100_003 + epoch)
        if self.train_sampler is not None:
            self.train_sampler.set_epoch(epoch)

    def _train_loader(self, dataset, *, workers: int = 0) -> DataLoader:
        """Each rank a disjoint shard; the tail that does not divide evenly rotates out by epoch."""
        sampler = None
        if self.dist.enabled:
            sampler = self.train_sampler = DistributedSampler(
                dataset, num_replicas=self.dist.world_size, rank=self.dist.rank, shuffle=True,
                seed=self.seed, drop_last=True)
        return DataLoader(dataset, batch_size=self.per_rank_batch, sampler=sampler, shuffle=sampler is None,
                          num_workers=workers, generator=self.shuffle_generator)

    def images(self) -> tuple[DataLoader, DataLoader]:
        pp, dist = self.data.preprocessing, self.dist
        train = self._train_loader(ImageDataset(self.data.train_items, pp.train_transform()), workers=self.workers)
        val = eval_loader(self.data.val_items[dist.rank :: dist.world_size], pp.eval_transform(),
                          batch_size=self.per_rank_batch, workers=self.workers)
        return train, val

    def cached_codes(self, model, *, device, head_is_probe: bool) -> tuple[DataLoader, DataLoader]:
        """small-similar: conv1..fc7 run once; epochs then cost only fc8. Under torchrun each rank extracts
        its own shard; the codes are then shared."""
        started = time.perf_counter()
        dist, eval_t = self.dist, self.data.preprocessing.eval_transform()

        def codes_of(items):
            shard = items[dist.rank :: dist.world_size]
            loader = eval_loader(shard, eval_t, batch_size=self.per_rank_batch, workers=self.workers)
            return extract_codes(model, loader, device=device, channels_last=self.channels_last)

        local_train, val_codes = codes_of(self.data.train_items), codes_of(self.data.val_items)
        train_codes = (dist.all_gather_tensor(local_train[0]), dist.all_gather_tensor(local_train[1]))
        # Standardised so the probe trains well whatever the codes' scale; folded back into fc8 on save.
        self.standardiser = standardise = Standardiser.fit(train_codes[0])
        if head_is_probe:
            standardise.unfold(model.classifier[6])  # the probe, fitted on raw codes, now on standardised ones
        train = self._train_loader(TensorDataset(standardise(train_codes[0]), train_codes[1]))
        val = DataLoader(TensorDataset(standardise(val_codes[0]), val_codes[1]), batch_size=max(self.global_batch, 256))
        self.cache_seconds = time.perf_counter() - started
        console.print(f"cached FP32 fc7 codes of {len(train_codes[0])} train + {len(self.data.val_items)} val images "
                      f"in {self.cache_seconds:.1f}s")
        return train, val
