"""Checkpoint files: atomic writes, manifests, integrity checks before loading, and config checks on resume.

A crash or a full disk while a checkpoint is written must leave the previous checkpoints loadable; a
truncated, empty or altered file must be named in a clear error (never a raw zip-reader error) and
passed over by resume=auto; resuming with another model or run config must name the keys that differ.
"""

from __future__ import annotations

import errno
import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lmbench.config import compose_config
from lmbench.pretrain import run_pretraining
from lmbench.results import empty_record, read_results
from lmbench.train.checkpointing import (AtomicCheckpointIO, CheckpointError, manifest_path, scan_checkpoints,
                                         verify_checkpoint)
from lmbench.train.resume import plan_resume

SMALL = ["data.builtin_documents=300", "data.tokenizer.vocab_size=800", "data.seq_len=64", "data.batch_size=8",
         "trainer=smoke", "task=[]", "trainer.checkpoint=true", "audit_batches=0", "objective=clm"]


def compose_run(out: Path, cache: Path, overrides: list[str]):
    return compose_config([*SMALL, f"data.cache_dir={cache}", *overrides, f"output_dir={out}"])


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # bit-identical runs need a fixed thread count


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A finished 6-step clm run with checkpoints at steps 2, 4 and 6 (all kept); returns (run, cache)."""
    root = tmp_path_factory.mktemp("ckpt")
    cache, run = root / "cache", root / "run"
    run_pretraining(compose_run(run, cache, ["trainer.max_steps=6", "trainer.checkpoint_every_n_steps=2",
                                             "trainer.keep_checkpoints=3"]), empty_record())
    return run, cache


def copy_run(finished: tuple[Path, Path], dest: Path) -> Path:
    import shutil

    shutil.copytree(finished[0], dest, symlinks=True)
    return dest


def ckpt(run: Path, step: int) -> Path:
    return run / "checkpoints" / f"step-{step:07d}.ckpt"


# ---- what a run writes -----------------------------------------------------------------------
def test_manifests_describe_each_checkpoint(finished: tuple[Path, Path]) -> None:
    run, _ = finished
    results = read_results(run / "results.json")
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["last.ckpt", *[f"step-{s:07d}.ckpt{m}" for s in (2, 4, 6) for m in ("", ".manifest.json")]]
    assert (run / "checkpoints" / "last.ckpt").resolve() == ckpt(run, 6).resolve()
    for step in (2, 4, 6):
        manifest = json.loads(manifest_path(ckpt(run, step)).read_text())
        data = ckpt(run, step).read_bytes()
        assert manifest["sha256"] == hashlib.sha256(data).hexdigest() and manifest["size"] == len(data)
        assert manifest["step"] == step == torch.load(ckpt(run, step), weights_only=True)["global_step"]
        assert manifest["config_hash"] == results["config_hash"]
        assert manifest["model_config"]["n_embd"] == 128 and len(manifest["model_config_hash"]) == 64
    assert not list((run / "checkpoints").glob(".tmp-*"))


def test_keep_checkpoints_removes_old_files_and_their_manifests(tmp_path: Path, finished: tuple[Path, Path]) -> None:
    run = tmp_path / "run"
    run_pretraining(compose_run(run, finished[1], ["trainer.max_steps=6", "trainer.checkpoint_every_n_steps=2",
                                                   "trainer.keep_checkpoints=1"]), empty_record())
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == \
        ["last.ckpt", "step-0000006.ckpt", "step-0000006.ckpt.manifest.json"]


# ---- atomic writes ---------------------------------------------------------------------------
def test_crash_while_saving_keeps_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    io = AtomicCheckpointIO({"config_hash": "x"})
    target = tmp_path / "checkpoints" / "step-0000002.ckpt"
    io.save_checkpoint({"global_step": 2, "w": torch.arange(1000.0)}, target)
    before = target.read_bytes()

    def half_then_disk_full(obj: object, fh) -> None:
        fh.write(b"PK\x03\x04" + b"\0" * 5000)  # the first bytes of a zip, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", half_then_disk_full)
    with pytest.raises(CheckpointError, match=r"step-0000002\.ckpt.*No space left on device"):
        io.save_checkpoint({"global_step": 4, "w": torch.zeros(1000)}, target)  # overwrite the same name
    with pytest.raises(CheckpointError, match=r"step-0000004\.ckpt.*No space left"):
        io.save_checkpoint({"global_step": 4}, target.with_name("step-0000004.ckpt"))
    monkeypatch.undo()
    assert target.read_bytes() == before  # the old file and its manifest are untouched, no temp file is left
    assert sorted(p.name for p in target.parent.iterdir()) == ["step-0000002.ckpt", "step-0000002.ckpt.manifest.json"]
    assert scan_checkpoints(target.parent).newest.path == target
    assert torch.equal(io.load_checkpoint(target)["w"], torch.arange(1000.0))


def test_killed_writer_leaves_only_a_temp_file_that_resume_ignores(finished: tuple[Path, Path], tmp_path: Path) -> None:
    run = copy_run(finished, tmp_path / "run")
    partial = run / "checkpoints" / ".tmp-step-0000008.ckpt.abc123"
    partial.write_bytes(ckpt(run, 6).read_bytes()[:3000])  # a write killed halfway
    plan = plan_resume("auto", run)
    assert plan.checkpoint is not None and plan.checkpoint.path == ckpt(run, 6) and plan.rejected == []
    assert not partial.exists()


# ---- damaged files ---------------------------------------------------------------------------
@pytest.mark.parametrize("damage,message", [
    ("truncate", r"truncated or altered: it has 4096 bytes"),
    ("empty", r"empty \(0 bytes\)"),
    ("flip", r"corrupt: its sha256 .* does not match"),
    ("no_manifest", r"has no manifest"),
])
def test_damaged_checkpoint_is_named_before_loading(finished: tuple[Path, Path], tmp_path: Path, damage: str,
                                                    message: str) -> None:
    run = copy_run(finished, tmp_path / "run")
    path = ckpt(run, 6)
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        path.write_bytes(bytes(data[:4096]))
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "flip":
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
    else:
        manifest_path(path).unlink()
    with pytest.raises(CheckpointError, match=rf"{path}.*{message}|{message}.*{path}") as info:
        verify_checkpoint(path)
    assert str(path) in str(info.value)
    plan = plan_resume("auto", run)  # auto passes over it to the newest valid one and reports it
    assert plan.checkpoint.path == ckpt(run, 4)
    assert plan.rejected == [{"path": str(path), "error": str(info.value)}]


def test_truncated_checkpoint_without_manifest_names_the_file(finished: tuple[Path, Path], tmp_path: Path) -> None:
    path = tmp_path / "plain.ckpt"
    path.write_bytes(ckpt(finished[0], 2).read_bytes()[:5000])  # e.g. written by plain Lightning, cut off
    with pytest.raises(CheckpointError, match=rf"{path} is truncated or not a torch checkpoint"):
        AtomicCheckpointIO().load_checkpoint(path)
    with pytest.raises(CheckpointError, match=rf"{path} is truncated or not a torch checkpoint"):
        plan_resume(str(path), tmp_path)


def test_resume_auto_uses_newest_valid_and_reports_bad_one(finished: tuple[Path, Path], tmp_path: Path) -> None:
    run, cache = copy_run(finished, tmp_path / "run"), finished[1]
    path = ckpt(run, 6)
    path.write_bytes(path.read_bytes()[:10_000])  # truncated by a crash
    record = run_pretraining(compose_run(run, cache, ["trainer.max_steps=6", "trainer.checkpoint_every_n_steps=2",
                                                      "trainer.keep_checkpoints=3", "resume=auto"]), empty_record())
    assert record["resumes"] == [{"from_checkpoint": str(ckpt(run, 4)), "step": 4}]
    saved = read_results(run / "results.json")
    assert saved["rejected_checkpoints"][0]["path"] == str(path)
    assert "truncated" in saved["rejected_checkpoints"][0]["error"]
    reference = read_results(finished[0] / "results.json")  # steps 5-6 retrained: the same run
    for key in ("train_loss", "val_loss", "tokens_seen", "supervised_tokens", "steps"):
        assert saved[key] == reference[key], key
    a, b = load_file(run / "model" / "model.safetensors"), load_file(finished[0] / "model" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    verify_checkpoint(ckpt(run, 6))  # rewritten whole


def test_resume_from_explicit_corrupt_path_fails_before_work(finished: tuple[Path, Path], tmp_path: Path) -> None:
    run, cache = copy_run(finished, tmp_path / "run"), tmp_path / "fresh-cache"
    path = ckpt(run, 4)
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))
    record = empty_record()
    with pytest.raises(CheckpointError, match=rf"checkpoint {path} is corrupt"):
        run_pretraining(compose_run(run, cache, ["trainer.max_steps=6", f"resume={path}"]), record)
    assert not cache.exists(), "failed only after tokenizer work had started"


# ---- a checkpoint of another setup -----------------------------------------------------------
def test_resume_with_other_model_config_names_keys(finished: tuple[Path, Path], tmp_path: Path) -> None:
    run = copy_run(finished, tmp_path / "run")
    cfg = compose_run(run, finished[1], ["trainer.max_steps=6", "resume=auto", "+backbone.config_overrides.n_embd=64"])
    with pytest.raises(CheckpointError) as info:
        run_pretraining(cfg, empty_record())
    message = str(info.value)
    assert str(ckpt(run, 6)) in message and "model config: n_embd: 128 -> 64" in message
    assert "backbone.config_overrides.n_embd: <absent> -> 64" in message


def test_resume_with_other_run_config_names_keys_but_tolerates_execution_keys(finished: tuple[Path, Path],
                                                                             tmp_path: Path) -> None:
    run = copy_run(finished, tmp_path / "run")
    cfg = compose_run(run, finished[1], ["trainer.max_steps=6", "resume=auto", "trainer.optim.lr=0.002", "seed=3"])
    with pytest.raises(CheckpointError, match=r"run config: seed: 0 -> 3; trainer.optim.lr: 0.001 -> 0.002\."):
        run_pretraining(cfg, empty_record())
    tolerated = ["trainer.keep_checkpoints=1", "trainer.log_every_n_steps=5", "save_model=false"]
    record = run_pretraining(compose_run(run, finished[1], ["trainer.max_steps=6", "resume=auto", *tolerated]),
                             empty_record())
    assert record["status"] == "completed" and record["resumes"][0]["step"] == 6


def test_fresh_run_into_a_directory_with_checkpoints_is_refused(finished: tuple[Path, Path], tmp_path: Path) -> None:
    run = copy_run(finished, tmp_path / "run")
    with pytest.raises(CheckpointError, match=r"already holds checkpoints.*resume=auto"):
        run_pretraining(compose_run(run, tmp_path / "cache", ["trainer.max_steps=6"]), empty_record())
    with pytest.raises(CheckpointError, match=r"resume=/nowhere/x.ckpt: checkpoint /nowhere/x.ckpt does not exist"):
        run_pretraining(compose_run(tmp_path / "other", tmp_path / "cache", ["resume=/nowhere/x.ckpt"]), empty_record())
    assert not (tmp_path / "cache").exists()


def test_checkpoint_settings_are_validated(tmp_path: Path) -> None:
    for override, match in [("trainer.keep_checkpoints=0", "keep_checkpoints=0"),
                            ("trainer.checkpoint_every_n_steps=0", "checkpoint_every_n_steps=0")]:
        with pytest.raises(ValueError, match=match):
            run_pretraining(compose_run(tmp_path / "run", tmp_path / "cache", [override]), empty_record())
    assert not (tmp_path / "cache").exists()
