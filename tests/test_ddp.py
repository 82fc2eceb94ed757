"""Data parallelism: a 2-process CPU DDP run (gloo, ddp_spawn) trains the same model as one process.

`data.batch_size` is the global batch: every rank corrupts the same batch k and keeps its half of the
rows, so DDP's averaged gradient is the one-process gradient (exactly for clm, where every token is
supervised and both halves weigh the same) and the weights after training agree to float round-off.
Only rank 0 writes: one results.json, one model, one metrics.csv without duplicated rows.

The fast tests check the sharding itself; the slow one starts 2 processes twice (fit, then validate),
which costs ~1 minute on 2 cores.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import DistributedSampler

from lmbench.data.datamodule import PretrainDataModule, StartAtSampler, check_shardable, shard_batch
from lmbench.objectives.base import Blocks
from lmbench_plugins.clm import CausalLM, CLMConfig
from lmbench_plugins.mlm import MaskedLM, MLMConfig


class ToyView:
    """An in-memory BlockView stand-in: `get` returns Blocks of fixed random token blocks."""

    def __init__(self, n_blocks: int = 64, block_len: int = 16) -> None:
        g = torch.Generator().manual_seed(0)
        self.blocks = torch.randint(20, 800, (n_blocks, block_len), generator=g)  # (N, L)
        self.block_len = block_len

    def __len__(self) -> int:
        return len(self.blocks)

    def get(self, indices: torch.Tensor) -> Blocks:
        ids = self.blocks[torch.as_tensor(indices)]  # (B, L)
        return Blocks(ids, torch.ones_like(ids, dtype=torch.bool))


def datamodule(objective, rank: int, world_size: int) -> PretrainDataModule:
    """A datamodule as rank `rank` of `world_size` sees it once Lightning has called setup."""
    dm = PretrainDataModule(ToyView(), ToyView(), objective, batch_size=8, seed=3, total_batches=20, val_batches=2)
    dm.trainer = SimpleNamespace(world_size=world_size, global_rank=rank)
    dm.setup("fit")
    return dm


def test_shards_partition_the_global_batch() -> None:
    batch = {"input_ids": torch.arange(24).view(8, 3), "prefix_len": torch.arange(8), "scale": torch.tensor(2.0)}
    shards = [shard_batch(batch, r, 4) for r in range(4)]
    assert [s["input_ids"].shape[0] for s in shards] == [2, 2, 2, 2]
    assert torch.equal(torch.cat([s["input_ids"] for s in shards]), batch["input_ids"])  # contiguous, in order
    assert torch.equal(torch.cat([s["prefix_len"] for s in shards]), batch["prefix_len"])
    assert all(s["scale"] is batch["scale"] for s in shards)  # not per-row: passed through
    assert shard_batch(batch, 0, 1) is batch
    with pytest.raises(ValueError, match=r"data.batch_size=10 does not split evenly over 4 .*multiple of 4"):
        check_shardable(10, 4)
    check_shardable(8, 4)


@pytest.mark.parametrize("objective_cls,config_cls", [(CausalLM, CLMConfig), (MaskedLM, MLMConfig)])
def test_each_rank_gets_its_rows_of_the_same_corrupted_batch(token_info, objective_cls, config_cls) -> None:
    """Rank shards of batch k, concatenated, are the one-process batch k (corruption draws included)."""
    objective = objective_cls(config_cls(), token_info)
    full = datamodule(objective, 0, 1)
    shards = [datamodule(objective, r, 2) for r in range(2)]
    for k in (0, 5):
        whole = full.train_batches[k]
        parts = [dm.train_batches[k] for dm in shards]
        for key, value in whole.items():
            assert torch.equal(torch.cat([p[key] for p in parts]), value), key
    val = full.val_batches[0]
    assert torch.equal(torch.cat([dm.val_batches[0]["input_ids"] for dm in shards]), val["input_ids"])
    loaders = [full.train_dataloader(), full.val_dataloader()]
    assert all(isinstance(dl.sampler, StartAtSampler) and isinstance(dl.sampler, DistributedSampler)
               for dl in loaders)  # Lightning keeps a DistributedSampler: every rank walks batches 0, 1, 2, ...
    assert list(full.train_dataloader().sampler)[:3] == [0, 1, 2]


TINY = ["objective=clm", "task=[]", "data.builtin_documents=200", "data.tokenizer.vocab_size=400", "data.seq_len=32",
        "data.batch_size=8", "trainer=smoke", "trainer.max_steps=6", "trainer.val_check_interval=3",
        "trainer.limit_val_batches=2", "trainer.accelerator=cpu", "trainer.precision=32-true", "audit_batches=2",
        "trainer.checkpoint=true"]


def run(tmp_path: Path, name: str, extra: list[str]) -> tuple[Path, dict]:
    from lmbench.config import compose_config
    from lmbench.pretrain import run_pretraining
    from lmbench.results import empty_record

    out = tmp_path / name
    cfg = compose_config([*TINY, f"data.cache_dir={tmp_path / 'cache'}", f"output_dir={out}", *extra])
    record = run_pretraining(cfg, empty_record())
    return out, record


def last_val_loss(out: Path) -> float:
    with open(out / "logs" / "metrics.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("val/loss")]
    return float(rows[-1]["val/loss"])


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict]]:
    tmp = tmp_path_factory.mktemp("ddp")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {"single": run(tmp, "single", []),
                "ddp": run(tmp, "ddp", ["trainer.strategy=ddp_spawn", "trainer.devices=2"])}
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
def test_two_process_ddp_matches_one_process_at_equal_global_batch(runs) -> None:
    (single, _), (ddp, _) = runs["single"], runs["ddp"]
    a, b = load_file(single / "model" / "model.safetensors"), load_file(ddp / "model" / "model.safetensors")
    assert a.keys() == b.keys()
    gap = max((a[k] - b[k]).abs().max().item() for k in a)
    assert gap < 1e-4, gap  # same weights after 6 AdamW steps, up to float round-off
    assert last_val_loss(ddp) == pytest.approx(last_val_loss(single), abs=1e-4)  # val/loss synced over ranks


@pytest.mark.slow
def test_only_rank_zero_writes(runs) -> None:
    ddp, _ = runs["ddp"]
    record = json.loads((ddp / "results.json").read_text())
    assert record["status"] == "completed"
    assert sorted(p.name for p in ddp.rglob("results.json")) == ["results.json"]
    assert sorted(p.parent.name for p in ddp.rglob("model.safetensors")) == ["model"]
    assert sorted(p.relative_to(ddp).as_posix() for p in ddp.rglob("metrics.csv")) == ["logs/metrics.csv"]
    ckpts = sorted(p.name for p in (ddp / "checkpoints").glob("step-*.ckpt"))
    assert ckpts == ["step-0000003.ckpt", "step-0000006.ckpt"]  # written once, by rank 0


@pytest.mark.slow
def test_ddp_record_counts_the_run(runs) -> None:
    """spawn trains in child processes; rank 0's counters come back through lmbench.train.fit_summary, and
    the final model's validation runs inside fit, so metrics.csv keeps rank 0's whole history, once."""
    (single_dir, single), (ddp_dir, ddp) = runs["single"], runs["ddp"]
    assert ddp["steps"] == single["steps"] == 6
    assert ddp["tokens_seen"] == single["tokens_seen"] > 0
    assert ddp["supervised_tokens"] == single["supervised_tokens"] > 0  # summed over both ranks' shards
    assert ddp["val_loss"] == pytest.approx(single["val_loss"], abs=1e-4)
    assert single["val_loss"] == pytest.approx(last_val_loss(single_dir), abs=1e-6)  # the final model's
    assert ddp["train_time_s"] > 0 and ddp["flops"] == single["flops"]
    assert json.loads((ddp_dir / "results.json").read_text())["steps"] == 6
    for out in (single_dir, ddp_dir):
        with open(out / "logs" / "metrics.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        train_steps = [r["step"] for r in rows if r.get("pretrain/loss")]
        val_steps = [int(r["step"]) for r in rows if r.get("val/loss")]
        assert train_steps and len(train_steps) == len(set(train_steps))  # rank 0's history, once
        assert val_steps == [2, 5]  # after steps 3 and 6 (CSV rows count from 0): the last one is the final model
