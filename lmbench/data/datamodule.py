"""The Lightning datamodule: a step-indexed stream of corrupted batches, exactly resumable.

A plain shuffled DataLoader is neither reproducible across worker counts nor resumable mid-epoch, and a
fair comparison needs both. Here item k of the training dataset *is* batch k, a pure function of
(seed, k): epoch e = k // batches_per_epoch visits every block once in an order drawn from a generator
seeded by (seed, e), batch k takes its slice of that order, and the objective corrupts it with a
generator seeded by (seed, k). Workers, restarts and resumption therefore cannot change what a step sees;
resuming is starting the sampler at the number of batches already consumed.

Data parallel (DDP, FSDP): `data.batch_size` stays the global batch. Every rank builds and corrupts the
same batch k and keeps its contiguous share of the rows (`shard_batch`), so a run on N devices reads
exactly the tokens, in exactly the order, of the run on one device: the budget and the comparison do not
depend on the hardware. The samplers subclass DistributedSampler so Lightning does not wrap them in a
sampler that would hand each rank different batches.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Iterator

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from lmbench.data.blocks import BlockView
from lmbench.objectives.base import Batch, Objective


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any tuple of parts, stable across processes and Python versions."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def seeded_generator(*parts: object) -> torch.Generator:
    """A CPU torch.Generator seeded from `parts` (see `derive_seed`)."""
    return torch.Generator().manual_seed(derive_seed(*parts))


def check_shardable(batch_size: int, world_size: int) -> None:
    """The global batch must split evenly over the data-parallel ranks (equal rows, equal loss weights)."""
    if int(world_size) > 1 and int(batch_size) % int(world_size):
        raise ValueError(f"data.batch_size={batch_size} does not split evenly over {world_size} data-parallel "
                         f"processes (trainer.devices x nodes); allowed values: a multiple of {world_size}")


def shard_batch(batch: Batch, rank: int, world_size: int) -> Batch:
    """Rank `rank`'s contiguous share of every per-row tensor of `batch` (first dim B); other entries as they are."""
    if world_size <= 1:
        return batch
    rows = next(v.shape[0] for v in batch.values() if isinstance(v, torch.Tensor) and v.dim() > 0)
    lo, hi = rank * rows // world_size, (rank + 1) * rows // world_size
    return {k: v[lo:hi] if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == rows else v
            for k, v in batch.items()}  # (B / world_size, ...)


class TrainBatches(Dataset):
    """Map-style dataset whose item k is corrupted training batch k (k = 0 .. total_batches - 1)."""

    def __init__(self, view: BlockView, objective: Objective, batch_size: int, seed: int,
                 total_batches: int) -> None:
        if int(batch_size) <= 0:
            raise ValueError(f"data.batch_size={batch_size!r}; allowed values: an integer > 0")
        self.view, self.objective = view, objective
        self.batch_size, self.seed, self.total_batches = int(batch_size), int(seed), int(total_batches)
        self.batches_per_epoch = len(view) // self.batch_size
        if self.batches_per_epoch == 0:
            raise ValueError(f"corpus too small: the training split holds {len(view)} blocks of {view.block_len} "
                             f"tokens, fewer than one batch of data.batch_size={self.batch_size}; use a larger "
                             "corpus or a smaller data.batch_size / data.seq_len")
        self._epoch = -1
        self._order = torch.empty(0, dtype=torch.int64)
        self.rank, self.world_size = 0, 1  # set by PretrainDataModule.setup under data parallelism

    def __len__(self) -> int:
        return self.total_batches

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """The block order of `epoch`: a permutation of all blocks (N,), cached for the current epoch."""
        if epoch != self._epoch:
            self._order = torch.randperm(len(self.view), generator=seeded_generator(self.seed, "epoch", epoch))
            self._epoch = epoch
        return self._order

    def block_indices(self, k: int) -> torch.Tensor:
        """Indices (B,) of the blocks in batch k (the incomplete last batch of an epoch is never used)."""
        epoch, j = divmod(int(k), self.batches_per_epoch)
        return self.epoch_order(epoch)[j * self.batch_size:(j + 1) * self.batch_size]

    def __getitem__(self, k: int) -> Batch:
        if not 0 <= int(k) < self.total_batches:
            raise IndexError(f"batch {k} outside [0, {self.total_batches})")
        blocks = self.view.get(self.block_indices(k))  # (B, L)
        batch = self.objective.corrupt(blocks, seeded_generator(self.seed, "train", int(k)))
        return shard_batch(batch, self.rank, self.world_size)  # (B / world_size, ...) under data parallelism


class ValBatches(Dataset):
    """The first `n_batches` batches of the validation view in order, corrupted once and kept."""

    def __init__(self, view: BlockView, objective: Objective, batch_size: int, seed: int, n_batches: int) -> None:
        self.view, self.objective, self.batch_size, self.seed = view, objective, int(batch_size), int(seed)
        available = -(-len(view) // self.batch_size)  # the last, partial batch counts here: nothing is dropped
        self.n_batches = max(0, min(int(n_batches), available))
        self._cache: dict[int, Batch] = {}
        self.rank, self.world_size = 0, 1  # set by PretrainDataModule.setup under data parallelism

    def __len__(self) -> int:
        return self.n_batches

    def __getitem__(self, j: int) -> Batch:
        if not 0 <= int(j) < self.n_batches:
            raise IndexError(f"validation batch {j} outside [0, {self.n_batches})")
        if j not in self._cache:
            stop = min((j + 1) * self.batch_size, len(self.view))
            blocks = self.view.get(torch.arange(j * self.batch_size, stop))  # (B, L)
            batch = self.objective.corrupt(blocks, seeded_generator(self.seed, "val", int(j)))
            self._cache[j] = shard_batch(batch, self.rank, self.world_size)
        return self._cache[j]


class StartAtSampler(DistributedSampler):
    """Yields start, start + 1, ..., n - 1: the step-indexed sampler, resumable at any batch.

    `len` is the whole stream (n) even when starting later: Lightning resumes mid-epoch by counting on
    from the batches already done and ends the epoch when that count reaches the loader's length.
    Every data-parallel rank walks the same batch indices (the datasets shard inside each batch); being a
    DistributedSampler tells Lightning not to replace it.
    """

    def __init__(self, n: int, start: int = 0) -> None:
        super().__init__(range(int(n)), num_replicas=1, rank=0, shuffle=False)
        self.n, self.start = int(n), int(start)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.n))

    def __len__(self) -> int:
        return self.n


class ResumableDataLoader(DataLoader):
    """A DataLoader whose position Lightning saves and restores (it implements `state_dict`), so a
    mid-epoch checkpoint resumes exactly; the state lives in the datamodule."""

    def __init__(self, *args: Any, datamodule: PretrainDataModule, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.datamodule = datamodule

    def state_dict(self) -> dict[str, Any]:
        return self.datamodule.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.datamodule.load_state_dict(state_dict)


class PretrainDataModule(pl.LightningDataModule):
    """Training batches 0..total_batches-1 (resumable via `set_start_batch` or a checkpoint) and a fixed
    validation set. Batch k is a pure function of (seed, k) whatever `num_workers` is.

    Resume: Lightning saves `state_dict()` (batches consumed = global_step * accumulate_grad_batches)
    in checkpoints and calls `load_state_dict` before building dataloaders, so `trainer.fit(...,
    ckpt_path=...)` continues with exactly the batches the uninterrupted run would have seen.
    """

    def __init__(self, train: BlockView, val: BlockView, objective: Objective, batch_size: int, seed: int,
                 total_batches: int, num_workers: int = 0, val_batches: int = 20, start_batch: int = 0) -> None:
        super().__init__()
        if int(num_workers) < 0:
            raise ValueError(f"data.num_workers={num_workers!r}; allowed values: an integer >= 0")
        self.train_batches = TrainBatches(train, objective, batch_size, seed, total_batches)
        self.val_batches = ValBatches(val, objective, batch_size, seed, val_batches)
        self.batch_size, self.seed, self.num_workers = int(batch_size), int(seed), int(num_workers)
        self.block_len = train.block_len
        self._sampler = StartAtSampler(total_batches)
        self.set_start_batch(start_batch)

    @property
    def tokens_per_batch(self) -> int:
        """Raw corpus tokens one training batch consumes (batch_size * block_len)."""
        return self.batch_size * self.block_len

    @property
    def start_batch(self) -> int:
        return self._sampler.start

    def setup(self, stage: str) -> None:
        """Under data parallelism (called in every rank's process): shard each batch by the trainer's rank."""
        trainer = getattr(self, "trainer", None)
        world_size = int(getattr(trainer, "world_size", 1) or 1)
        check_shardable(self.batch_size, world_size)
        rank = int(getattr(trainer, "global_rank", 0) or 0)
        for dataset in (self.train_batches, self.val_batches):
            if (dataset.rank, dataset.world_size) != (rank, world_size):
                dataset.rank, dataset.world_size = rank, world_size
                if isinstance(dataset, ValBatches):
                    dataset._cache.clear()

    def set_start_batch(self, k: int) -> None:
        """Make the next training epoch start at batch k (k batches already consumed)."""
        if not 0 <= int(k) <= self.train_batches.total_batches:
            raise ValueError(f"start batch {k} outside [0, {self.train_batches.total_batches}]")
        self._sampler.start = int(k)

    def train_dataloader(self) -> DataLoader:
        if self.num_workers > 0:  # workers are forked after tokenisation used its thread pool
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        return ResumableDataLoader(self.train_batches, batch_size=None, sampler=self._sampler,
                                   num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                                   pin_memory=torch.cuda.is_available(), datamodule=self)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_batches, batch_size=None, sampler=StartAtSampler(len(self.val_batches)),
                          num_workers=0, pin_memory=torch.cuda.is_available())

    def state_dict(self) -> dict[str, Any]:
        """{"batches_consumed": global_step * accumulate_grad_batches (start_batch without a trainer), "seed"}."""
        trainer = getattr(self, "trainer", None)
        consumed = self.start_batch
        if trainer is not None:
            consumed = int(trainer.global_step) * int(trainer.accumulate_grad_batches)
        return {"batches_consumed": consumed, "seed": self.seed}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume at the saved position; refuses a checkpoint written with another seed."""
        if int(state_dict.get("seed", self.seed)) != self.seed:
            raise ValueError(f"checkpoint was written with seed={state_dict['seed']}, this run has seed={self.seed}")
        self.set_start_batch(int(state_dict["batches_consumed"]))
