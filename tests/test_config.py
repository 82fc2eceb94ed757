"""Hydra composition: every option of every group composes; bad inputs stop before any work."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from lmbench.config import compose_config
from lmbench.objectives.registry import default_registry
from lmbench.pretrain import resolve_objective, run_pretraining
from lmbench.results import empty_record

CONF = Path(__file__).resolve().parents[1] / "conf"


def compose_cfg(overrides: list[str], tmp_path: Path | None = None):
    return compose_config(overrides + ([f"output_dir={tmp_path / 'run'}"] if tmp_path is not None else []))


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def test_defaults_compose_to_mlm_on_auto_backbone() -> None:
    cfg = compose_cfg([])
    assert cfg.objective.name == "mlm" and cfg.objective.mlm_probability == 0.15
    assert cfg.backbone.kind == "auto" and cfg.data.source == "builtin"
    assert resolve_objective(cfg).kind == "encoder"


@pytest.mark.parametrize("objective", sorted(default_registry().names()))
def test_every_objective_composes_and_resolves_its_default_kind(objective: str) -> None:
    cfg = compose_cfg([f"objective={objective}"])
    resolved = resolve_objective(cfg)
    assert resolved.cls.name == objective and resolved.kind == resolved.cls.backbone_kinds[0]
    assert isinstance(resolved.config, resolved.cls.config_class)


@pytest.mark.parametrize("group", ["backbone", "data", "trainer"])
def test_every_option_of_every_group_composes(group: str) -> None:
    options = group_options(group)
    assert options, f"conf/{group} has no options"
    for option in options:
        cfg = compose_cfg([f"{group}={option}"])
        assert OmegaConf.to_container(cfg[group], resolve=False)


def test_typo_in_key_is_rejected_naming_it() -> None:
    with pytest.raises(ConfigCompositionException, match="max_stepz"):
        compose_cfg(["trainer.max_stepz=3"])


def test_wrong_type_is_rejected_naming_key() -> None:
    with pytest.raises(ConfigCompositionException, match="max_steps"):
        compose_cfg(["trainer.max_steps=lots"])


@pytest.mark.parametrize("group,option", [("objective", "mlmm"), ("backbone", "decoder_huge")])
def test_unknown_option_lists_available(group: str, option: str) -> None:
    with pytest.raises(ConfigCompositionException) as info:
        compose_cfg([f"{group}={option}"])
    assert option in str(info.value) and "Available options" in str(info.value)


def assert_fails_before_work(cfg, tmp_cache: Path, match: str) -> None:
    record = empty_record()
    with pytest.raises(Exception, match=match):
        run_pretraining(cfg, record)
    assert not (tmp_cache / "tokenizers").exists(), "failed only after tokenizer work had started"
    assert record["status"] == "running" and record["steps"] == 0


def test_objective_on_unsupported_backbone_names_supported_kinds(tmp_path: Path, tmp_cache: Path) -> None:
    cfg = compose_cfg(["objective=mlm", "backbone=decoder_tiny"], tmp_path)
    assert_fails_before_work(cfg, tmp_cache, r"(?s)mlm.*encoder")


@pytest.mark.parametrize("overrides,match", [
    (["objective.mlm_probability=1.5"], r"mlm_probability.*\[0, 1\]"),
    (["objective.mask_replace_prob=0.8", "objective.random_replace_prob=0.5"], r"(?s)mask_replace_prob.*random_replace_prob"),
    (["data=text", "data.path=/nonexistent/corpus.txt"], r"/nonexistent/corpus.txt"),
    (["data.source=ftp"], r"(?s)data.source.*builtin"),
])
def test_bad_values_fail_before_work(overrides: list[str], match: str, tmp_path: Path, tmp_cache: Path) -> None:
    cfg = compose_cfg(overrides, tmp_path)
    assert_fails_before_work(cfg, tmp_cache, match)


def test_empty_corpus_and_corpus_smaller_than_a_block(tmp_path: Path, tmp_cache: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    cfg = compose_cfg(["data=text", f"data.path={empty}"], tmp_path)
    with pytest.raises(Exception, match=r"(?i)empty"):
        run_pretraining(cfg, empty_record())
    small = tmp_path / "small.txt"
    small.write_text("a short corpus .\n\nwith two documents only .\n")
    cfg = compose_cfg(["data=text", f"data.path={small}", "data.tokenizer.vocab_size=200",
                       "data.tokenizer.min_frequency=1", "data.seq_len=512", "task=[]"], tmp_path)
    with pytest.raises(Exception, match=r"(?i)too small.*block"):
        run_pretraining(cfg, empty_record())


def test_unwritable_output_dir_fails_first(tmp_path: Path, tmp_cache: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    cfg = compose_cfg([f"output_dir={blocker / 'run'}"])
    with pytest.raises(OSError, match="not writable"):
        run_pretraining(cfg, empty_record())
    assert not (tmp_cache / "tokenizers").exists()
