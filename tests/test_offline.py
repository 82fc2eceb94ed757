"""No network: a default run opens no connection, and a Hub model name fails in seconds asking for a local path.

The `no_network` fixture replaces every way Python code opens a connection or resolves a host
(socket.connect / connect_ex, getaddrinfo, create_connection) with one that records the attempt and
raises, so a test proves that nothing was even tried, whatever HF_HUB_OFFLINE says.
"""

from __future__ import annotations

import math
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_module
from omegaconf import DictConfig

from lmbench.cli.main import preflight
from lmbench.config import register_configs
from lmbench.objectives.registry import default_registry
from lmbench.results import empty_record

TINY = ["data.builtin_documents=200", "data.tokenizer.vocab_size=400", "data.seq_len=32", "data.batch_size=4",
        "trainer=smoke", "task=[]", "audit_batches=2", "save_model=true"]


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    """Block and record every connection or name lookup made from this process."""
    attempts: list[tuple[str, Any]] = []

    def refuse(kind: str):
        def blocked(*args: Any, **kwargs: Any) -> Any:
            attempts.append((kind, args[1:] if kind.startswith("connect") else args))
            raise OSError(f"network blocked by the test ({kind} {args[1:] if kind.startswith('connect') else args})")
        return blocked

    monkeypatch.setattr(socket.socket, "connect", refuse("connect"))
    monkeypatch.setattr(socket.socket, "connect_ex", refuse("connect_ex"))
    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    monkeypatch.setattr(socket, "create_connection", refuse("create_connection"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("WANDB_MODE", "disabled")
    return attempts


def compose_cfg(overrides: list[str]) -> DictConfig:
    register_configs(default_registry())
    with initialize_config_module(config_module="lmbench_conf", version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def test_the_fixture_blocks_connections(no_network: list) -> None:
    with pytest.raises(OSError, match="network blocked"):
        socket.create_connection(("huggingface.co", 443), timeout=1)
    assert no_network and no_network[0][0] == "create_connection"


def test_default_run_opens_no_connection(no_network: list, tmp_cache: Path, tmp_path: Path) -> None:
    from lmbench.pretrain import run_pretraining

    cfg = compose_cfg([*TINY, f"output_dir={tmp_path / 'run'}"])
    record = empty_record()
    preflight(cfg)
    run_pretraining(cfg, record)
    assert record["status"] == "completed" and record["steps"] == 4 and math.isfinite(record["val_loss"])
    assert (tmp_path / "run" / "model" / "config.json").is_file() and (tmp_cache / "tokenizers").is_dir()
    assert no_network == []


@pytest.mark.parametrize("key,fix", [("backbone.pretrained", "backbone.size"),
                                     ("data.tokenizer.path", "data.tokenizer.type")])
def test_hub_name_fails_in_seconds_asking_for_a_local_path(no_network: list, tmp_cache: Path, key: str,
                                                          fix: str) -> None:
    cfg = compose_cfg([f"{key}=bert-base-uncased"])
    started = time.perf_counter()
    with pytest.raises(FileNotFoundError) as info:
        preflight(cfg)
    assert time.perf_counter() - started < 1.0
    message = str(info.value)
    assert f"{key}='bert-base-uncased' is not a local directory" in message
    assert "never downloads" in message and "save_pretrained" in message and fix in message
    assert no_network == [] and not tmp_cache.exists()


def test_loaders_themselves_never_reach_for_the_hub(no_network: list) -> None:
    """Beyond the preflight: the tokenizer and backbone loaders also refuse a Hub name without a request."""
    from lmbench.backbones import BackboneError, build_backbone
    from lmbench.config import BackboneConfig
    from lmbench.data.tokenizer import load_tokenizer_dir
    from lmbench.objectives.base import TokenInfo

    with pytest.raises(FileNotFoundError, match="data.tokenizer.path='bert-base-uncased'"):
        load_tokenizer_dir("bert-base-uncased")
    tokens = TokenInfo(vocab_size=200, pad_id=0, mask_id=4, bos_id=5, eos_id=6, cls_id=2, sep_id=3, unk_id=1,
                       special_ids=(0, 1, 2, 3, 4, 5, 6), sentinel_ids=(), sentence_end_ids=())
    with pytest.raises(BackboneError, match="never downloads"):
        build_backbone(BackboneConfig(pretrained="bert-base-uncased"), "encoder", tokens, max_positions=64)
    assert no_network == []
