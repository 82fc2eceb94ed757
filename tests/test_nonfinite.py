"""Non-finite training loss: `trainer.nonfinite=fail` stops with an error naming the step and never writes a
checkpoint from a poisoned state; `skip` leaves parameters and optimizer state exactly as they were for
that step, counts skips in results.json and stops after `max_consecutive_skips` in a row.

NaN is injected by wrapping `PretrainModule.training_step` at chosen steps, or, end to end through the
CLI, by an absurd learning rate.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional

import pytest
import pytorch_lightning as pl
import torch

from lmbench.config import compose_config
from lmbench.pretrain import run_pretraining
from lmbench.results import empty_record, read_results
from lmbench.train.checkpointing import scan_checkpoints
from lmbench.train.module import PretrainModule
from lmbench.train.nonfinite import NonFiniteGuard, NonFiniteLossError

SMALL = ["data.builtin_documents=300", "data.tokenizer.vocab_size=800", "data.seq_len=64", "data.batch_size=8",
         "trainer=smoke", "task=[]", "audit_batches=0", "objective=clm", "save_model=false"]


def compose_run(out: Path, cache: Path, overrides: list[str]):
    return compose_config([*SMALL, f"data.cache_dir={cache}", *overrides, f"output_dir={out}"])


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # bit-identical runs need a fixed thread count


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


def poison(monkeypatch: pytest.MonkeyPatch, steps: set[int], micro_batch: Optional[int] = None) -> None:
    """Make the training loss NaN at the given optimizer steps (only one micro-batch of them if given)."""
    original = PretrainModule.training_step

    def training_step(self: PretrainModule, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = original(self, batch, batch_idx)
        accumulate = self.trainer.accumulate_grad_batches
        if self.global_step in steps and (micro_batch is None or batch_idx % accumulate == micro_batch):
            return loss * float("nan")
        return loss

    monkeypatch.setattr(PretrainModule, "training_step", training_step)


class StepWatch(pl.Callback):
    """Parameters and AdamW state before and after each optimizer step."""

    def __init__(self) -> None:
        self.before: dict[int, tuple] = {}
        self.after: dict[int, tuple] = {}

    @staticmethod
    def snapshot(module: pl.LightningModule, trainer: pl.Trainer) -> tuple:
        params = [p.detach().clone() for p in module.parameters()]
        state = [t.clone() for s in trainer.optimizers[0].state.values() for t in s.values() if torch.is_tensor(t)]
        return params, state

    def on_train_batch_start(self, trainer: pl.Trainer, module: pl.LightningModule, batch: Any, idx: int) -> None:
        if idx % trainer.accumulate_grad_batches == 0:
            self.before[trainer.global_step] = self.snapshot(module, trainer)

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, *args: Any) -> None:
        if trainer.global_step - 1 not in self.after and trainer.global_step - 1 in self.before:
            self.after[trainer.global_step - 1] = self.snapshot(module, trainer)

    def unchanged(self, step: int) -> bool:
        (p0, s0), (p1, s1) = self.before[step], self.after[step]
        return len(s0) == len(s1) and all(torch.equal(a, b) for a, b in zip(p0 + s0, p1 + s1))


@pytest.mark.parametrize("bad,ckpt_every,log_every,detected", [
    (3, 2, 10, r"before writing the checkpoint of step 4"),  # deferred check: caught before the next checkpoint
    (1, 100, 2, r"after 2 steps"),  # no checkpoint soon: caught at the next logging step
])
def test_fail_names_step_and_keeps_last_good_checkpoint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                        cache: Path, bad: int, ckpt_every: int, log_every: int,
                                                        detected: str) -> None:
    poison(monkeypatch, {bad})
    run = tmp_path / "run"
    cfg = compose_run(run, cache, ["trainer.max_steps=8", "trainer.checkpoint=true",
                                   f"trainer.checkpoint_every_n_steps={ckpt_every}",
                                   f"trainer.log_every_n_steps={log_every}"])
    record = empty_record()
    with pytest.raises(NonFiniteLossError, match=rf"non-finite training loss at step {bad} .*{detected}"):
        run_pretraining(cfg, record)
    assert record["status"] != "completed" and read_results(run / "results.json")["status"] == "running"
    newest = scan_checkpoints(run / "checkpoints").newest
    if bad == 3:  # the step-2 checkpoint is the last good one, and it is intact and finite
        assert newest is not None and newest.step == 2
        assert sorted(p.name for p in (run / "checkpoints").glob("*.ckpt")) == ["last.ckpt", "step-0000002.ckpt"]
        state = torch.load(newest.path, weights_only=True)["state_dict"]
        assert all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point())
    else:
        assert newest is None


@pytest.mark.parametrize("accumulate", [1, 2])
def test_skip_leaves_parameters_and_optimizer_unchanged(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                        cache: Path, accumulate: int) -> None:
    poison(monkeypatch, {2, 5}, micro_batch=0 if accumulate > 1 else None)  # with accumulation: one micro-batch
    watch = StepWatch()
    cfg = compose_run(tmp_path / "run", cache, ["trainer.max_steps=8", "trainer.nonfinite=skip",
                                                f"trainer.accumulate_grad_batches={accumulate}"])
    record = run_pretraining(cfg, empty_record(), callbacks=[watch])
    assert watch.unchanged(2) and watch.unchanged(5)
    assert not watch.unchanged(3) and not watch.unchanged(6)  # the other steps do train
    assert record["status"] == "completed" and record["steps"] == 8
    assert record["skipped_steps"] == 2 and record["skipped_at"] == [2, 5]
    saved = read_results(tmp_path / "run" / "results.json")
    assert saved["skipped_steps"] == 2 and saved["train_loss"] == record["train_loss"]
    assert torch.isfinite(torch.tensor(saved["train_loss"])) and torch.isfinite(torch.tensor(saved["val_loss"]))


def test_skip_stops_after_max_consecutive(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cache: Path) -> None:
    poison(monkeypatch, {1, 2, 4, 5, 6})
    cfg = compose_run(tmp_path / "run", cache, ["trainer.max_steps=8", "trainer.nonfinite=skip",
                                                "trainer.max_consecutive_skips=3"])
    record = empty_record()
    with pytest.raises(NonFiniteLossError, match=r"3 consecutive steps \(steps 4\.\.6\).*max_consecutive_skips=3"):
        run_pretraining(cfg, record)
    assert record["skipped_steps"] == 5 and record["skipped_at"] == [1, 2, 4, 5, 6]


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA to prove the fail policy never syncs with the host"))])
def test_fail_policy_records_first_bad_step_without_host_sync(device: str) -> None:
    guard = NonFiniteGuard("fail", check_every=1000)
    trainer = SimpleNamespace(global_step=0)
    losses = torch.tensor([1.0, 2.0, float("nan"), 3.0, float("inf")], device=device)
    if device == "cuda":
        torch.cuda.set_sync_debug_mode("error")  # any device-to-host sync in the hooks raises
    try:
        for step in range(len(losses)):
            trainer.global_step = step
            guard.on_before_backward(trainer, None, losses[step])
            guard.on_before_optimizer_step(trainer, None, None)
    finally:
        if device == "cuda":
            torch.cuda.set_sync_debug_mode(0)
    with pytest.raises(NonFiniteLossError, match=r"non-finite training loss at step 2 "):
        guard.raise_if_failed("now")


def test_bad_policy_is_rejected_before_work(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"trainer.nonfinite='ignore'; allowed values: fail, skip"):
        run_pretraining(compose_run(tmp_path / "run", tmp_path / "cache", ["trainer.nonfinite=ignore"]), empty_record())
    with pytest.raises(ValueError, match=r"trainer.max_consecutive_skips=0; allowed values: >= 1"):
        run_pretraining(compose_run(tmp_path / "run", tmp_path / "cache", ["trainer.max_consecutive_skips=0"]),
                        empty_record())
    assert not (tmp_path / "cache").exists()


@pytest.mark.slow
def test_cli_divergence_fails_with_step_in_results(tmp_path: Path) -> None:
    env = {**os.environ, "LMBENCH_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled",
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "lmbench.cli.main", *SMALL, "trainer.max_steps=6",
                           "trainer.optim.lr=1e30", f"hydra.run.dir={tmp_path / 'run'}"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["status"] == "failed" and results["error"]["type"] == "NonFiniteLossError"
    assert "non-finite training loss at step 1" in results["error"]["message"]
    assert "non-finite training loss at step 1" in proc.stderr
