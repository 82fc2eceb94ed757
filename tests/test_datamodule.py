"""The step-indexed datamodule: batch k is a pure function of (seed, k); exact resume; fixed validation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from lmbench.data.blocks import BlockView, TokenStream
from lmbench.data.datamodule import PretrainDataModule, seeded_generator
from lmbench.objectives.base import Batch, Blocks, LossOutput, Objective, ObjectiveConfig, TokenInfo

L = 8  # block length
N_BLOCKS = 50  # training blocks; 50 // 4 = 12 batches per epoch, 2 blocks left out per epoch


class NoisyIdentity(Objective):
    """Test objective: passes blocks through and draws noise from the generator it is given."""

    name = "noisy_identity"
    backbone_kinds = ("encoder",)
    config_class = ObjectiveConfig

    def corrupt(self, blocks: Blocks, generator: torch.Generator) -> Batch:
        noise = torch.rand(blocks.input_ids.shape, generator=generator)  # (B, L)
        return {"input_ids": blocks.input_ids, "noise": noise}

    def loss(self, model: torch.nn.Module, batch: Batch) -> LossOutput:
        return LossOutput(loss=model(batch["noise"]).mean())


def write_stream(path: Path, n_tokens: int) -> TokenStream:
    """A token cache whose token at position i is i (so a block is identified by its first token)."""
    path.mkdir(parents=True, exist_ok=True)
    np.arange(n_tokens, dtype=np.int32).tofile(path / "tokens.bin")
    np.ones(n_tokens, dtype=np.uint8).tofile(path / "word_starts.bin")
    (path / "meta.json").write_text(json.dumps({"n_tokens": n_tokens, "dtype": "int32", "eos_id": -1}))
    return TokenStream.open(path)


@pytest.fixture
def views(tmp_path: Path) -> tuple[BlockView, BlockView]:
    stream = write_stream(tmp_path / "tokens", (N_BLOCKS + 10) * L)
    return BlockView(stream.slice(0, N_BLOCKS * L), L), BlockView(stream.slice(N_BLOCKS * L, stream.n_tokens), L)


@pytest.fixture
def objective(token_info: TokenInfo) -> NoisyIdentity:
    return NoisyIdentity(ObjectiveConfig(name="noisy_identity"), token_info)


def make(views: tuple, objective: Objective, **kw: object) -> PretrainDataModule:
    args = dict(batch_size=4, seed=7, total_batches=30, num_workers=0, val_batches=2)
    args.update(kw)
    return PretrainDataModule(views[0], views[1], objective, **args)


def collect(loader: torch.utils.data.DataLoader) -> list[Batch]:
    return [batch for batch in loader]


def same(a: list[Batch], b: list[Batch]) -> bool:
    return len(a) == len(b) and all(x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
                                    for x, y in zip(a, b))


def test_batches_are_a_function_of_seed_and_step(views: tuple, objective: Objective) -> None:
    first = collect(make(views, objective).train_dataloader())
    assert len(first) == 30 and first[0]["input_ids"].shape == (4, L)
    assert same(first, collect(make(views, objective).train_dataloader()))
    assert not same(first, collect(make(views, objective, seed=8).train_dataloader()))
    assert not torch.equal(first[0]["noise"], first[1]["noise"])  # a generator per step, not one reused


def test_workers_do_not_change_batches(views: tuple, objective: Objective) -> None:
    serial = collect(make(views, objective).train_dataloader())
    loader = make(views, objective, num_workers=2).train_dataloader()
    assert loader.persistent_workers and loader.num_workers == 2
    assert same(serial, collect(loader))


def test_resume_from_start_batch(views: tuple, objective: Objective) -> None:
    full = collect(make(views, objective).train_dataloader())
    for k in (1, 12, 17):  # 12 = first batch of epoch 1
        assert same(full[k:], collect(make(views, objective, start_batch=k).train_dataloader()))
    dm = make(views, objective)
    dm.set_start_batch(25)
    assert same(full[25:], collect(dm.train_dataloader()))
    with pytest.raises(ValueError, match="start batch 31"):
        dm.set_start_batch(31)


def test_each_block_once_per_epoch(views: tuple, objective: Objective) -> None:
    dm = make(views, objective)
    blocks = [int(row[0]) // L for batch in collect(dm.train_dataloader()) for row in batch["input_ids"]]
    per_epoch = 12 * 4
    epoch0, epoch1 = blocks[:per_epoch], blocks[per_epoch:2 * per_epoch]
    assert len(set(epoch0)) == per_epoch and len(set(epoch1)) == per_epoch  # no block twice in an epoch
    assert set(epoch0) <= set(range(N_BLOCKS)) and epoch0 != epoch1  # a new order each epoch
    assert len(set(blocks[2 * per_epoch:])) == 6 * 4  # batches 24..29 start epoch 2
    reference = torch.randperm(N_BLOCKS, generator=seeded_generator(7, "epoch", 1))[:per_epoch]
    assert epoch1 == reference.tolist()  # the drawn order, the incomplete last batch dropped
    assert dm.train_batches.batches_per_epoch == 12 and dm.tokens_per_batch == 4 * L


def test_validation_fixed_and_in_order(views: tuple, objective: Objective) -> None:
    dm = make(views, objective, val_batches=5)
    first, second = collect(dm.val_dataloader()), collect(dm.val_dataloader())
    assert same(first, second) and same(first, collect(make(views, objective, val_batches=5).val_dataloader()))
    assert [b["input_ids"].shape[0] for b in first] == [4, 4, 2]  # 10 blocks: two full batches and the rest
    firsts = torch.cat([b["input_ids"][:, 0] for b in first]) // L
    assert firsts.tolist() == list(range(N_BLOCKS, N_BLOCKS + 10))
    assert len(collect(make(views, objective, val_batches=1).val_dataloader())) == 1


def test_too_few_blocks_for_a_batch(views: tuple, objective: Objective) -> None:
    with pytest.raises(ValueError, match=r"corpus too small: the training split holds 50 blocks.*batch_size=64"):
        make(views, objective, batch_size=64)


class Recorder(pl.LightningModule):
    """Trains a scalar on the noise and records the first block id of every batch it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.seen: list[int] = []

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        self.seen.append(int(batch["input_ids"][0, 0]) // L)
        return ((batch["noise"] - self.w) ** 2).mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit(dm: PretrainDataModule, max_steps: int, root: Path, ckpt: str | None = None) -> list[int]:
    """Train with 2 accumulated batches per step, checkpointing every 3 steps (on train batch end)."""
    module = Recorder()
    every3 = pl.callbacks.ModelCheckpoint(dirpath=root, every_n_train_steps=3, save_top_k=-1,
                                          filename="{step}", save_on_train_epoch_end=False)
    trainer = pl.Trainer(max_steps=max_steps, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, accumulate_grad_batches=2,
                         callbacks=[every3], default_root_dir=str(root))
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt)
    return module.seen


def test_lightning_checkpoint_resume_is_exact(views: tuple, objective: Objective, tmp_path: Path) -> None:
    full = fit(make(views, objective, total_batches=16), 8, tmp_path / "full")
    assert len(full) == 16
    ckpt = torch.load(tmp_path / "full" / "step=3.ckpt", weights_only=True)  # a mid-run checkpoint
    assert ckpt["PretrainDataModule"] == {"batches_consumed": 6, "seed": 7}  # 3 steps x 2 batches
    assert ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"batches_consumed": 6, "seed": 7}]
    rest = fit(make(views, objective, total_batches=16), 8, tmp_path / "resumed",
               ckpt=str(tmp_path / "full" / "step=3.ckpt"))
    assert rest == full[6:]
