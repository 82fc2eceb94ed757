"""Exact resumption: a run interrupted after any checkpoint and continued with resume=auto ends with the
same weights, losses and counters, bit for bit, as the run that was never interrupted.

Fast tests interrupt in-process (a callback raises at a chosen step) with dropout switched on, so the
global RNG matters and its restoration is tested too; the slow tests SIGKILL the real CLI in a
subprocess at an arbitrary step, for mlm, clm and t5_span with 0 and 2 data-loader workers.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from safetensors.torch import load_file

from lmbench.config import compose_config
from lmbench.pretrain import run_pretraining
from lmbench.results import empty_record, read_results

SMALL = ["data.builtin_documents=300", "data.tokenizer.vocab_size=800", "data.seq_len=64", "data.batch_size=8",
         "trainer=smoke", "task=[]", "trainer.checkpoint=true", "audit_batches=0"]
DROPOUT = {  # dropout on, so training draws from the global torch RNG and a resume must restore it
    "mlm": ["+backbone.config_overrides.hidden_dropout_prob=0.1"],
    "clm": ["+backbone.config_overrides.resid_pdrop=0.1", "+backbone.config_overrides.embd_pdrop=0.1"],
    "t5_span": ["+backbone.config_overrides.dropout_rate=0.1"],
}
COMPARED = ("train_loss", "val_loss", "steps", "tokens_seen", "supervised_tokens", "config_hash")


def compose_run(out: Path, cache: Path, overrides: list[str]):
    return compose_config([*SMALL, f"data.cache_dir={cache}", *overrides, f"output_dir={out}"])


class Crash(pl.Callback):
    """Stand-in for a kill: raise just before optimizer step `at` (checkpoints up to it are on disk)."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step == self.at:
            raise KeyError("simulated crash")


class Recorder(pl.Callback):
    """Per training step: a fingerprint of the batch and one draw from each global generator."""

    def __init__(self) -> None:
        self.steps: dict[int, tuple] = {}
        self.batches_per_epoch = 0

    def on_train_batch_start(self, trainer: pl.Trainer, module: pl.LightningModule, batch: dict, idx: int) -> None:
        self.batches_per_epoch = trainer.datamodule.train_batches.batches_per_epoch
        ids = batch["input_ids"]
        self.steps[trainer.global_step] = (ids.sum().item(), ids[:, :4].tolist(),
                                           torch.rand(()).item(), float(np.random.rand()), random.random())


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "model" / "model.safetensors")


def assert_same_run(resumed: Path, reference: Path, compared: tuple[str, ...] = COMPARED) -> None:
    a, b = weights(resumed), weights(reference)
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"weights differ after resume: {different[:5]}"
    ra, rb = read_results(resumed / "results.json"), read_results(reference / "results.json")
    assert ra["status"] == rb["status"] == "completed"
    for key in compared:
        assert ra[key] == rb[key], (key, ra[key], rb[key])


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # bit-identical runs need a fixed thread count


def train(out: Path, cache: Path, overrides: list[str], callbacks: list[pl.Callback] = ()) -> dict[str, Any]:
    return run_pretraining(compose_run(out, cache, overrides), empty_record(), callbacks=list(callbacks))


@pytest.mark.parametrize("objective,workers", [("mlm", 0), ("clm", 0), ("t5_span", 0), ("mlm", 2)])
def test_interrupted_run_resumes_bit_identically(objective: str, workers: int, tmp_path: Path, cache: Path) -> None:
    overrides = [f"objective={objective}", *DROPOUT[objective], "trainer.max_steps=8",
                 "trainer.checkpoint_every_n_steps=2", f"data.num_workers={workers}"]
    full, cut = Recorder(), Recorder()
    train(tmp_path / "full", cache, overrides, [full])
    with pytest.raises(KeyError, match="simulated crash"):
        train(tmp_path / "cut", cache, overrides, [Crash(at=5), cut])
    assert sorted(p.name for p in (tmp_path / "cut" / "checkpoints").glob("step-*.ckpt")) == \
        ["step-0000002.ckpt", "step-0000004.ckpt"]
    assert read_results(tmp_path / "cut" / "results.json")["status"] == "running"
    record = train(tmp_path / "cut", cache, [*overrides, "resume=auto"], [cut])
    assert_same_run(tmp_path / "cut", tmp_path / "full")
    assert record["resumes"] == [{"from_checkpoint": str(tmp_path / "cut" / "checkpoints" / "step-0000004.ckpt"),
                                  "step": 4}]
    assert read_results(tmp_path / "cut" / "results.json")["resumes"] == record["resumes"]
    # steps 0-4 ran before the crash, steps 4-7 again after it: the same batches and the same RNG draws
    assert cut.steps == full.steps and len(full.steps) == 8


def test_epoch_boundary_resume_keeps_next_epochs_order(tmp_path: Path, cache: Path) -> None:
    tiny = ["objective=mlm", *DROPOUT["mlm"], "data.val_fraction=0.95", "data.batch_size=16"]
    probe = Recorder()
    train(tmp_path / "probe", cache, [*tiny, "trainer.max_steps=1", "trainer.checkpoint=false"], [probe])
    epoch = probe.batches_per_epoch  # a handful of steps: the training split is 5% of a small corpus
    assert 2 <= epoch <= 8, epoch
    overrides = [*tiny, f"trainer.max_steps={3 * epoch}", f"trainer.checkpoint_every_n_steps={epoch}"]
    full, cut = Recorder(), Recorder()
    train(tmp_path / "full", cache, overrides, [full])
    with pytest.raises(KeyError):
        train(tmp_path / "cut", cache, overrides, [Crash(at=epoch), cut])  # killed on the epoch's last step
    assert max(cut.steps) == epoch - 1
    record = train(tmp_path / "cut", cache, [*overrides, "resume=auto"], [cut])
    assert record["resumes"][0]["step"] == epoch
    assert [cut.steps[k][:2] for k in range(epoch, 2 * epoch)] == [full.steps[k][:2] for k in range(epoch, 2 * epoch)]
    assert cut.steps == full.steps
    assert [full.steps[k][1] for k in range(epoch)] != [full.steps[k][1] for k in range(epoch, 2 * epoch)]
    assert_same_run(tmp_path / "cut", tmp_path / "full")


def test_validation_does_not_change_training(tmp_path: Path, cache: Path) -> None:
    base = ["objective=mlm", *DROPOUT["mlm"], "trainer.max_steps=6", "trainer.checkpoint=false"]
    often, rarely = Recorder(), Recorder()
    train(tmp_path / "often", cache, [*base, "trainer.val_check_interval=1"], [often])
    train(tmp_path / "rarely", cache, [*base, "trainer.val_check_interval=6"], [rarely])
    assert often.steps == rarely.steps
    a, b = weights(tmp_path / "often"), weights(tmp_path / "rarely")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_at_the_end_keeps_results(tmp_path: Path, cache: Path) -> None:
    overrides = ["objective=clm", "trainer.max_steps=4", "trainer.checkpoint_every_n_steps=2"]
    first = train(tmp_path / "run", cache, overrides)
    again = train(tmp_path / "run", cache, [*overrides, "resume=auto"])
    for key in COMPARED:
        assert first[key] == again[key], key
    assert again["resumes"] == [{"from_checkpoint": str(tmp_path / "run" / "checkpoints" / "step-0000004.ckpt"),
                                 "step": 4}]


def test_resume_auto_without_checkpoints_starts_from_scratch(tmp_path: Path, cache: Path) -> None:
    record = train(tmp_path / "run", cache, ["objective=clm", "trainer.max_steps=2", "resume=auto"])
    assert record["status"] == "completed" and record["resumes"] == [] and record["steps"] == 2


# ---- the real thing: SIGKILL the CLI -----------------------------------------------------------
CLI_SMALL = [*SMALL, "trainer.max_steps=30", "trainer.checkpoint_every_n_steps=3", "trainer.val_check_interval=10"]


def cli(args: list[str], cache: Path) -> subprocess.Popen:
    env = {**os.environ, "LMBENCH_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled",
           "OMP_NUM_THREADS": "1"}  # every run of a comparison with the same thread count (and fast when busy)
    return subprocess.Popen([sys.executable, "-m", "lmbench.cli.main", *args], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 300) -> None:
    _, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]


def newest_manifest_step(run: Path) -> int:
    steps = [json.loads(p.read_text())["step"] for p in (run / "checkpoints").glob("*.manifest.json")]
    return max(steps, default=-1)


def kill_after_checkpoint(proc: subprocess.Popen, run: Path, step: int, timeout: float = 300) -> None:
    """SIGKILL the whole process group (workers too) once a checkpoint for >= `step` is complete."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if newest_manifest_step(run) >= step:
                break
        except (OSError, ValueError):  # a manifest being replaced right now
            pass
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed; raise trainer.max_steps"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL


@pytest.fixture(scope="module")
def cli_reference(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("cli")
    done: dict[str, Path] = {}

    def reference(objective: str) -> tuple[Path, Path]:
        if objective not in done:
            run = root / f"ref_{objective}"
            finish(cli([f"objective={objective}", *DROPOUT[objective], *CLI_SMALL, f"hydra.run.dir={run}"],
                       root / "cache"))
            done[objective] = run
        return done[objective], root

    return reference


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("objective", ["mlm", "clm", "t5_span"])
def test_sigkill_and_resume_auto_is_bit_identical(objective: str, workers: int, cli_reference) -> None:
    reference, root = cli_reference(objective)
    run = root / f"killed_{objective}_{workers}"
    args = [f"objective={objective}", *DROPOUT[objective], *CLI_SMALL, f"data.num_workers={workers}",
            f"hydra.run.dir={run}"]
    kill_after_checkpoint(cli(args, root / "cache"), run, step=6)
    assert read_results(run / "results.json")["status"] == "running"
    finish(cli([*args, "resume=auto"], root / "cache"))
    same = COMPARED if workers == 0 else tuple(k for k in COMPARED if k != "config_hash")  # num_workers is hashed
    assert_same_run(run, reference, same)  # workers 0 or 2, killed or not: the same run
    resumes = read_results(run / "results.json")["resumes"]
    assert len(resumes) == 1 and resumes[0]["step"] >= 6 and resumes[0]["step"] % 3 == 0
