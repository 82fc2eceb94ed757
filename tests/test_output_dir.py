"""Output directory problems: an unwritable directory or too little free space stops the run at start with
a message naming the directory and the fix; a disk that fills up mid-run fails the run cleanly, leaves
the earlier checkpoints intact and never a results.json that says "completed" or a half-written model.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from collections import namedtuple
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

import lmbench.pretrain
from lmbench.config import compose_config
from lmbench.pretrain import OutputDirError, run_pretraining, save_model_atomically
from lmbench.results import empty_record, read_results
from lmbench.train.checkpointing import CheckpointError, scan_checkpoints

SMALL = ["data.builtin_documents=300", "data.tokenizer.vocab_size=800", "data.seq_len=64", "data.batch_size=8",
         "trainer=smoke", "task=[]", "audit_batches=0", "objective=clm"]
DiskUsage = namedtuple("DiskUsage", "total used free")


def compose_run(out: Path, cache: Path, overrides: list[str]):
    return compose_config([*SMALL, f"data.cache_dir={cache}", *overrides, f"output_dir={out}"])


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # bit-identical runs need a fixed thread count


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


def fake_free_space(monkeypatch: pytest.MonkeyPatch, free_mib: int) -> None:
    monkeypatch.setattr(lmbench.pretrain.shutil, "disk_usage",
                        lambda path: DiskUsage(1 << 40, (1 << 40) - free_mib * 2**20, free_mib * 2**20))


# ---- at start ---------------------------------------------------------------------------------
def test_output_dir_under_a_file_fails_first(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(OutputDirError, match=rf"{blocker / 'run'}.*not writable.*output_dir="):
        run_pretraining(compose_run(blocker / "run", tmp_path / "cache", []), empty_record())
    assert not (tmp_path / "cache").exists()


def test_full_disk_at_the_write_probe_fails_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(self: Path, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(OutputDirError, match=r"not writable: No space left on device"):
        run_pretraining(compose_run(tmp_path / "run", tmp_path / "cache", []), empty_record())
    assert not (tmp_path / "cache").exists()


def test_too_little_free_space_fails_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_free_space(monkeypatch, 10)
    with pytest.raises(OutputDirError, match=rf"{tmp_path / 'run'}.* has 10 MiB free, but min_free_disk_mb needs "
                                             r"100 MiB.*min_free_disk_mb \(0: no check\)"):
        run_pretraining(compose_run(tmp_path / "run", tmp_path / "cache", []), empty_record())
    assert not (tmp_path / "cache").exists() and not (tmp_path / "run" / "results.json").exists()


def test_free_space_for_checkpoints_is_checked_before_training(tmp_path: Path, cache: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    fake_free_space(monkeypatch, 20)  # tiny clm: ~11 MiB per checkpoint, 3 at the peak
    cfg = compose_run(tmp_path / "run", cache, ["min_free_disk_mb=1", "trainer.checkpoint=true"])
    with pytest.raises(OutputDirError, match=r"has 20 MiB free, but this run's checkpoints \(2 kept \+ 1 being "
                                             r"written\) and model needs \d+ MiB"):
        run_pretraining(cfg, empty_record())
    assert not (tmp_path / "run" / "checkpoints").exists()
    record = run_pretraining(compose_run(tmp_path / "run", cache, ["min_free_disk_mb=0", "trainer.checkpoint=true"]),
                             empty_record())  # 0 switches the checks off
    assert record["status"] == "completed"


@pytest.mark.slow
def test_cli_reports_low_disk_in_results(tmp_path: Path) -> None:
    env = {**os.environ, "LMBENCH_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    proc = subprocess.run([sys.executable, "-m", "lmbench.cli.main", *SMALL, "min_free_disk_mb=1000000000",
                           f"hydra.run.dir={tmp_path / 'run'}"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "min_free_disk_mb" in proc.stderr
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["status"] == "failed" and results["error"]["type"] == "OutputDirError"
    assert "MiB free" in results["error"]["message"]



def test_only_rank_zero_records_a_failure(tmp_path: Path) -> None:
    """Under Slurm (`trainer.strategy=ddp`) every rank runs the whole job in the same output dir: the write
    probe is per process and only rank 0 writes results.json, so ranks never race on one file."""
    env = {**os.environ, "LMBENCH_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled",
           "RANK": "1", "SLURM_PROCID": "1"}
    proc = subprocess.run([sys.executable, "-m", "lmbench.cli.main", *SMALL, "min_free_disk_mb=1000000000",
                           f"hydra.run.dir={tmp_path / 'run'}"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "min_free_disk_mb" in proc.stderr  # the rank still fails, loudly
    assert (tmp_path / "run").is_dir() and not (tmp_path / "run" / "results.json").exists()
    assert not list((tmp_path / "run").glob(".lmbench-write-probe*"))

# ---- mid-run ----------------------------------------------------------------------------------
def test_disk_full_while_checkpointing_fails_cleanly_and_resumes(tmp_path: Path, cache: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    overrides = ["trainer.max_steps=6", "trainer.checkpoint=true", "trainer.checkpoint_every_n_steps=2"]
    reference = run_pretraining(compose_run(tmp_path / "ref", cache, overrides), empty_record())
    real_save, calls = torch.save, []

    def save_until_disk_full(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        calls.append(1)
        if len(calls) == 2:  # the step-4 checkpoint: half written, then the disk is full
            f.write(b"PK\x03\x04" + b"\0" * 4096)
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_until_disk_full)
    run = tmp_path / "run"
    with pytest.raises(CheckpointError, match=r"could not write checkpoint .*step-0000004\.ckpt: No space left"):
        run_pretraining(compose_run(run, cache, overrides), empty_record())
    monkeypatch.undo()
    assert read_results(run / "results.json")["status"] == "running"  # never "completed"
    assert not (run / "model").exists()
    assert sorted(p.name for p in (run / "checkpoints").iterdir() if not p.is_symlink()) == \
        ["step-0000002.ckpt", "step-0000002.ckpt.manifest.json"]  # no temp file, the earlier one intact
    assert scan_checkpoints(run / "checkpoints").newest.step == 2
    record = run_pretraining(compose_run(run, cache, [*overrides, "resume=auto"]), empty_record())  # space freed
    for key in ("train_loss", "val_loss", "tokens_seen", "supervised_tokens", "steps"):
        assert record[key] == reference[key], key
    a, b = load_file(run / "model" / "model.safetensors"), load_file(tmp_path / "ref" / "model" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


class _Model:
    def save_pretrained(self, folder: Path) -> None:
        (Path(folder) / "model.safetensors").write_bytes(b"new weights")


class _FullDiskTokenizer:
    def save_pretrained(self, folder: Path) -> None:
        (Path(folder) / "tokenizer.json").write_text('{"trunc')
        raise OSError(errno.ENOSPC, "No space left on device")


def test_model_directory_is_replaced_atomically(tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    with pytest.raises(OSError, match="No space left"):
        save_model_atomically(_Model(), _FullDiskTokenizer(), model_dir)
    assert list(tmp_path.iterdir()) == []  # nothing half-written, no temp folder
    model_dir.mkdir()
    (model_dir / "model.safetensors").write_bytes(b"old weights")
    with pytest.raises(OSError):
        save_model_atomically(_Model(), _FullDiskTokenizer(), model_dir)
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    assert (model_dir / "model.safetensors").read_bytes() == b"old weights"
    shutil.rmtree(model_dir)
