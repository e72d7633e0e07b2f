"""Batches from the window cache: memory-mapped reads in DataLoader workers, or the whole split on the GPU.

`BatchSource(cache_root, indices, ...)` yields `Batch`es of one epoch in a fixed order per
(seed, epoch): `DistributedSampler` shards and shuffles (one replica without DDP, so both paths
share the code), `EpochBatchSampler` cuts it into batches and skips the ones a resumed run has already
seen. Items are whole batches (one gather per batch from the memory-mapped records), read in worker
processes with pinned memory on CUDA. With `gpu_cache=True` the split's windows are copied once to
the GPU in fp16 (24 kB per window: the paper's ≈ 1.5 M pretraining windows take about 37 GB) and each
batch is an on-device gather, so the GPU never waits for the disk.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler

from physioserve.cache import WindowCache


@dataclass
class Batch:
    signals: torch.Tensor  # [B, M, S] float32 on the device
    mask: torch.Tensor  # [B, M] bool on the device
    mask_cpu: torch.Tensor  # [B, M] bool on the CPU (masking plans are drawn there, no sync)
    index: torch.Tensor  # [B] int64 global window indices (CPU)
    position: torch.Tensor  # [B] int64 positions in the dataset (CPU): rows of per-dataset label arrays


class WindowBatchDataset(Dataset):
    """Map-style dataset over `indices` (global window indices) whose items are whole batches.

    `dataset[positions]` gathers the windows at `indices[positions]`: {signals [B, M, S], mask [B, M],
    index [B]}. The cache is opened lazily in each process (memory maps do not travel to workers).
    `modality_keep` ([M] bool) restricts the presence mask (probing's unimodal rows).
    """

    def __init__(self, cache_root: str | Path, indices: np.ndarray, modality_keep: np.ndarray | None = None):
        self.cache_root = Path(cache_root)
        self.indices = np.asarray(indices, np.int64)
        self.modality_keep = None if modality_keep is None else np.asarray(modality_keep, bool)
        self._cache: WindowCache | None = None

    @property
    def cache(self) -> WindowCache:
        if self._cache is None:
            self._cache = WindowCache(self.cache_root)
        return self._cache

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_cache": None}

    def __len__(self) -> int:
        return len(self.indices)

    def masks(self, positions: np.ndarray | None = None) -> np.ndarray:
        """Presence masks [n, M] of the windows at `positions` (all when None), restricted to modality_keep."""
        idx = self.indices if positions is None else self.indices[np.asarray(positions, np.int64)]
        mask = self.cache.mask[idx]  # [n, M]
        return mask & self.modality_keep[None, :] if self.modality_keep is not None else mask

    def __getitem__(self, positions) -> dict[str, torch.Tensor]:
        positions = np.asarray(positions, np.int64)
        idx = self.indices[positions]
        return {
            "signals": torch.from_numpy(self.cache.windows(idx)),  # [B, M, S]
            "mask": torch.from_numpy(self.masks(positions)),  # [B, M]
            "index": torch.from_numpy(idx),  # [B]
            "position": torch.from_numpy(positions),  # [B]
        }


class EpochBatchSampler:
    """Batches of positions for one epoch: DistributedSampler order for (seed, epoch), minus `skip` batches.

    Set the epoch (and, on resume, the batches already consumed) with `set_epoch` before iterating;
    the DataLoader iterates it in the main process, so this works with persistent workers.
    """

    def __init__(self, dataset: Dataset, batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0,
                 shuffle: bool = True, drop_last: bool = True):
        self.sampler = DistributedSampler(
            dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last
        )
        self.batch_size, self.drop_last = batch_size, drop_last
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.sampler.set_epoch(epoch)
        self.skip = skip

    def batches_per_epoch(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __len__(self) -> int:
        return max(self.batches_per_epoch() - self.skip, 0)

    def __iter__(self):
        batches = BatchSampler(self.sampler, self.batch_size, self.drop_last)
        return itertools.islice(iter(batches), self.skip, None)


def default_workers(device: torch.device) -> int:
    """0 on CPU (workers would compete with the compute for the cores); up to 8 per process on CUDA."""
    if device.type != "cuda":
        return 0
    local = max(int(os.environ.get("LOCAL_WORLD_SIZE", "1")), 1)
    return max(1, min(8, (os.cpu_count() or 2) // local - 1))


class GpuWindowCache:
    """A split's windows held on the GPU in fp16 ([n, M, S]) plus masks; batches are on-device gathers."""

    def __init__(self, dataset: WindowBatchDataset, device: torch.device, chunk: int = 2048,
                 dtype: torch.dtype = torch.float16):
        n = len(dataset)
        first = dataset[np.arange(min(1, n))]["signals"]
        self.windows = torch.empty((n, *first.shape[1:]), dtype=dtype, device=device)  # [n, M, S]
        for start in range(0, n, chunk):
            part = dataset[np.arange(start, min(start + chunk, n))]["signals"]  # [c, M, S]
            self.windows[start : start + len(part)] = part.to(device=device, dtype=dtype)
        self.mask_cpu = torch.from_numpy(dataset.masks())  # [n, M]
        self.mask = self.mask_cpu.to(device)
        self.index = torch.from_numpy(dataset.indices)
        self.device = device

    def batch(self, positions) -> Batch:
        pos = torch.as_tensor(np.asarray(positions, np.int64))
        pos_dev = pos.to(self.device, non_blocking=True)
        return Batch(self.windows[pos_dev].float(), self.mask[pos_dev], self.mask_cpu[pos], self.index[pos], pos)


class BatchSource:
    """One epoch's batches on the device, through DataLoader workers or from a GpuWindowCache."""

    def __init__(self, dataset: WindowBatchDataset, batch_size: int, device: torch.device, *, rank: int = 0,
                 world_size: int = 1, seed: int = 0, shuffle: bool = True, drop_last: bool = True,
                 workers: int | None = None, gpu_cache: bool = False):
        self.dataset, self.device = dataset, device
        self.sampler = EpochBatchSampler(dataset, batch_size, rank, world_size, seed, shuffle, drop_last)
        self.gpu = GpuWindowCache(dataset, device) if gpu_cache else None
        self.loader = None
        if self.gpu is None:
            workers = default_workers(device) if workers is None else workers
            self.loader = DataLoader(
                dataset,
                sampler=self.sampler,
                batch_size=None,  # items are whole batches
                num_workers=workers,
                pin_memory=device.type == "cuda",
                persistent_workers=workers > 0,
                prefetch_factor=4 if workers > 0 else None,
                generator=torch.Generator().manual_seed(seed),  # keeps the global RNG untouched
            )

    def batches_per_epoch(self) -> int:
        return self.sampler.batches_per_epoch()

    def epoch(self, epoch: int, skip: int = 0):
        """Iterate the batches of `epoch`, skipping the first `skip` (resume)."""
        self.sampler.set_epoch(epoch, skip)
        if self.gpu is not None:
            for positions in self.sampler:
                yield self.gpu.batch(positions)
            return
        for item in self.loader:
            yield Batch(
                item["signals"].to(self.device, non_blocking=True),
                item["mask"].to(self.device, non_blocking=True),
                item["mask"],
                item["index"],
                item["position"],
            )
