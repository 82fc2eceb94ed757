"""Loggers: CSV always; W&B offline by default, disabled under CI, online only when asked and logged in.

The offline test trains a toy Lightning module with the loggers `build_loggers` returns, ends the run
with `finish_loggers`, and reads the run back from its `.wandb` file (a LevelDB-style log of protobuf
records, the format `wandb sync` uploads) with a small reader written here against that format, since
wandb 0.31 no longer ships a Python reader.
"""

from __future__ import annotations

import csv
import json
import os
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Iterator

import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from pytorch_lightning.loggers import CSVLogger, WandbLogger

from lmbench.loggers import (TABLE_COLUMNS, WANDB_LOGIN_HELP, LoggerConfig, LoggerConfigError, build_loggers,
                             check_logger_config, finish_loggers, resolve_wandb_mode)

CONF = Path(__file__).resolve().parents[1] / "conf" / "logger"
_BLOCK = 32768  # LevelDB log block size used by wandb's transaction log


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No W&B or CI variables, and a HOME/NETRC without credentials."""
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL", "CI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("NETRC", str(tmp_path / "home" / ".netrc"))
    return monkeypatch


def test_logger_configs_match_the_schema() -> None:
    for name in ("csv", "wandb"):
        cfg = OmegaConf.merge(OmegaConf.structured(LoggerConfig), OmegaConf.load(CONF / f"{name}.yaml"))
        assert cfg.name == name
    wandb_cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(LoggerConfig),
                                                    OmegaConf.load(CONF / "wandb.yaml")))
    assert wandb_cfg.mode is None and wandb_cfg.log_model is False and wandb_cfg.project == "lmbench"


@pytest.mark.parametrize("mode,env,expected", [
    (None, {}, "offline"),
    (None, {"CI": "true"}, "disabled"),
    (None, {"CI": "false"}, "offline"),
    (None, {"WANDB_MODE": "online"}, "online"),
    (None, {"WANDB_MODE": "dryrun", "CI": "1"}, "offline"),
    ("offline", {"CI": "true"}, "offline"),
    ("online", {"WANDB_MODE": "disabled"}, "online"),
    ("disabled", {}, "disabled"),
])
def test_wandb_mode_is_never_online_unless_asked(clean_env: pytest.MonkeyPatch, mode, env, expected) -> None:
    for key, value in env.items():
        clean_env.setenv(key, value)
    assert resolve_wandb_mode(LoggerConfig(name="wandb", mode=mode)) == expected


def test_bad_logger_settings_fail_with_allowed_values(clean_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(LoggerConfigError, match="logger='tensorboard' is unknown; allowed values: csv | wandb"):
        check_logger_config(LoggerConfig(name="tensorboard"))
    with pytest.raises(LoggerConfigError, match="logger.mode='cloud' is unknown"):
        check_logger_config(LoggerConfig(name="wandb", mode="cloud"))
    with pytest.raises(LoggerConfigError, match="logger.log_model=true needs logger.mode=online"):
        check_logger_config(LoggerConfig(name="wandb", mode="offline", log_model=True))
    assert check_logger_config(LoggerConfig(name="csv", mode="online")) == "disabled"  # csv never needs W&B


def test_online_needs_a_login(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    online = LoggerConfig(name="wandb", mode="online")
    with pytest.raises(LoggerConfigError) as info:
        check_logger_config(online)
    assert str(info.value) == WANDB_LOGIN_HELP
    assert "wandb login" in WANDB_LOGIN_HELP and "WANDB_API_KEY" in WANDB_LOGIN_HELP
    netrc = tmp_path / "home" / ".netrc"
    netrc.parent.mkdir(parents=True)
    netrc.write_text("machine example.org login user password secret\n")
    netrc.chmod(0o600)
    with pytest.raises(LoggerConfigError):
        check_logger_config(online)  # an entry for another host is no W&B login
    netrc.write_text("machine api.wandb.ai login user password " + "k" * 40 + "\n")
    assert check_logger_config(online) == "online"
    netrc.unlink()
    clean_env.setenv("WANDB_API_KEY", "k" * 40)
    assert check_logger_config(online) == "online"


def test_online_without_login_fails_fast_without_prompt(tmp_path: Path) -> None:
    """A real process with stdin closed: one message and a non-zero exit, never a prompt or a hang."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_") and k != "CI"}
    env.update(HOME=str(tmp_path), NETRC=str(tmp_path / ".netrc"))
    code = textwrap.dedent(f"""
        from lmbench.loggers import LoggerConfig, build_loggers
        build_loggers(LoggerConfig(name="wandb", mode="online"), {str(tmp_path / 'run')!r}, "run0")
    """)
    proc = subprocess.run([sys.executable, "-c", code], env=env, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1] == f"lmbench.loggers.LoggerConfigError: {WANDB_LOGIN_HELP}"
    assert not (tmp_path / "run" / "wandb").exists()


def test_csv_only_and_ci_build_no_wandb_run(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (csv_logger,) = build_loggers(LoggerConfig(), tmp_path, "run0")
    assert isinstance(csv_logger, CSVLogger) and Path(csv_logger.log_dir) == tmp_path / "logs"
    clean_env.setenv("CI", "true")
    (only,) = build_loggers(LoggerConfig(name="wandb"), tmp_path, "run0")
    assert isinstance(only, CSVLogger) and not (tmp_path / "wandb").exists()


class ToyModule(pl.LightningModule):
    """A linear regression small enough to train in a moment, logging like the pretraining module."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(32, 4, generator=g)  # (N, 4)
        self.y = self.x.sum(-1, keepdim=True)  # (N, 1)

    def training_step(self, batch: list[torch.Tensor], _: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("pretrain/loss", loss)
        return loss

    def validation_step(self, batch: list[torch.Tensor], _: int) -> None:
        x, y = batch
        self.log("val/loss", torch.nn.functional.mse_loss(self.layer(x), y))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(self.x, self.y), batch_size=8)

    val_dataloader = train_dataloader


def wandb_records(path: Path) -> Iterator[object]:
    """The protobuf records of a .wandb file: a 7-byte header (':W&B', magic 0xBEE1, version), then
    LevelDB log blocks of 32 KiB holding chunks (crc32c, length, type FULL=1 FIRST=2 MIDDLE=3 LAST=4)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    ident, magic, _ = struct.unpack("<4sHB", data[:7])
    assert ident == b":W&B" and magic == 0xBEE1, (ident, magic)
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        if _BLOCK - pos % _BLOCK < 7:  # a block's tail too short for a header is padding
            pos += _BLOCK - pos % _BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if pos + 7 + length > len(data):
            return  # a chunk still being written
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record
            pending = b""


def finished_records(path: Path, timeout: float = 60.0) -> list:
    """The run's records once its `exit` record is on disk: finish() returns when the wandb service has
    the run's end, and the service writes the file a moment later (longer on a busy machine)."""
    deadline = time.monotonic() + timeout
    while True:
        records = list(wandb_records(path))
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def items(entries: Iterator[object]) -> dict[str, object]:
    """History/summary items as {key: value}; wandb writes a key either as `key` or as `nested_key`."""
    return {e.key or ".".join(e.nested_key): json.loads(e.value_json) for e in entries}


def test_offline_wandb_run_is_written_under_the_output_dir(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    out = tmp_path / "multirun" / "0_mlm_s0"
    loggers = build_loggers(LoggerConfig(name="wandb"), out, run_name="0_mlm_s0", group="sweep-a", job_type="mlm",
                            config={"objective": {"name": "mlm"}, "seed": 0})
    assert [type(lg) for lg in loggers] == [CSVLogger, WandbLogger]
    trainer = pl.Trainer(max_steps=6, logger=loggers, log_every_n_steps=1, val_check_interval=3,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(ToyModule())
    val_loss = float(trainer.callback_metrics["val/loss"])
    record = {"status": "completed", "objective": {"name": "mlm"}, "seed": 0, "steps": 6, "val_loss": val_loss,
              "train_loss": 0.5, "backbone": {"kind": "encoder", "size": "tiny", "parameters": {"total": 5}}}
    finish_loggers(record)  # the CLI's call: every W&B run build_loggers opened in this process
    finish_loggers(record)  # a second call finds nothing left to finish
    assert "WANDB_MODE" not in os.environ  # offline mode did not leak into later jobs of a sweep

    (run_dir,) = (out / "wandb").glob("offline-run-*")
    (run_file,) = run_dir.glob("run-*.wandb")
    records = finished_records(run_file)
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert (run.project, run.run_group, run.job_type, run.display_name) == ("lmbench", "sweep-a", "mlm", "0_mlm_s0")
    history = [items(r.history.item) for r in records if r.WhichOneof("record_type") == "history"]
    train_steps = [h["trainer/global_step"] for h in history if "pretrain/loss" in h]
    assert train_steps == list(range(6))
    assert any(h.get("val/loss") == pytest.approx(val_loss) for h in history)
    summary = {}
    for r in records:
        if r.WhichOneof("record_type") == "summary":
            summary.update(items(r.summary.update))
    assert summary["val_loss"] == pytest.approx(val_loss) and summary["status"] == "completed"
    assert summary["steps"] == 6 and summary["parameters"] == 5
    exit_record = [r.exit for r in records if r.WhichOneof("record_type") == "exit"]
    assert [e.exit_code for e in exit_record] == [0]
    (table_file,) = (run_dir / "files" / "media" / "table").glob("results_*.table.json")
    table = json.loads(table_file.read_text())
    assert table["columns"] == list(TABLE_COLUMNS)
    (row,) = table["data"]
    assert row[TABLE_COLUMNS.index("objective")] == "mlm"
    assert row[TABLE_COLUMNS.index("val_loss")] == pytest.approx(val_loss)
    with open(out / "logs" / "metrics.csv") as fh:  # CSV is written beside it
        assert any(r.get("val/loss") for r in csv.DictReader(fh))
    sync = subprocess.run([sys.executable, "-m", "wandb", "sync", "--dry-run", str(run_dir)], capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=120)
    assert "Would sync 1 run" in sync.stdout + sync.stderr, sync.stdout + sync.stderr


@pytest.mark.slow
def test_cli_sweep_groups_wandb_runs(tmp_path: Path) -> None:
    """`lmbench -m logger=wandb`: each job's offline W&B run lies in its own output dir, grouped by sweep."""
    from lmbench.config import LmbenchConfig

    if "logger" not in LmbenchConfig.__dataclass_fields__:
        pytest.skip("the root schema has no `logger` group yet (lmbench/config.py)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_") and k != "CI"}
    env.update(LMBENCH_CACHE=str(tmp_path / "cache"), HF_HUB_OFFLINE="1", HOME=str(tmp_path))
    sweep_dir = tmp_path / "multirun" / "sweep-7"
    proc = subprocess.run(
        [sys.executable, "-m", "lmbench.cli.main", "-m", "objective=mlm,clm", "logger=wandb",
         f"hydra.sweep.dir={sweep_dir}", "data.builtin_documents=200", "data.tokenizer.vocab_size=400",
         "data.seq_len=32", "data.batch_size=4", "trainer=smoke", "task=[]", "audit_batches=2", "save_model=false"],
        cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for job in ("0_mlm_s0", "1_clm_s0"):
        results = json.loads((sweep_dir / job / "results.json").read_text())
        (run_file,) = (sweep_dir / job / "wandb").glob("offline-run-*/run-*.wandb")
        records = finished_records(run_file)
        (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
        assert (run.run_group, run.job_type, run.display_name) == ("sweep-7", job.split("_")[1], job)
        summary = {}
        for r in records:
            if r.WhichOneof("record_type") == "summary":
                summary.update(items(r.summary.update))
        assert summary["val_loss"] == pytest.approx(results["val_loss"]) and summary["status"] == "completed"
        assert summary["steps"] == results["steps"] == 4
