"""Tests of the conformance kit (lmbench.testing): every built-in objective passes it, deliberately
broken objectives fail exactly the check that names their bug (with a fix line), and the complete
example and packaging recipe in docs/writing-an-objective.md work as written."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmbench.config import DataConfig
from lmbench.objectives import (
    Batch,
    Blocks,
    LossOutput,
    Objective,
    ObjectiveConfig,
    PromisedStat,
    default_registry,
)
from lmbench.testing import (
    CheckResult,
    ConformanceError,
    ConformanceReport,
    assert_conforms,
    check_objective,
    conformance_tokens,
    toy_blocks,
)

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "writing-an-objective.md"
BUILTINS = [r.name for r in default_registry().records() if r.package == "lmbench"]
IGNORE = -100


# ---- built-ins -----------------------------------------------------------------------------------
def test_builtins_are_found() -> None:
    assert {"mlm", "clm", "prefix_lm", "t5_span", "bart_infill"} <= set(BUILTINS)


@pytest.mark.parametrize("name", BUILTINS)
def test_builtin_objective_conforms(name: str) -> None:
    """At lmbench's default data.seq_len (128); see the report for t5_span/bart_infill at 32."""
    cls = default_registry().get(name)
    report = assert_conforms(cls, seq_len=DataConfig().seq_len, package="lmbench")
    names, kinds = [c.name for c in report.checks], cls.backbone_kinds
    assert names[:2] == ["contract", "config"] and all(f"loss[{kind}]" in names for kind in kinds)
    per_kind = ["statistics", "loss_stats"] if len(kinds) == 1 else [f"statistics[{k}]" for k in kinds]
    assert all(n in names for n in per_kind), names


# ---- a correct toy objective and broken variants -------------------------------------------------
@dataclass
class ToyMaskingConfig(ObjectiveConfig):
    name: str = "toy_masking"
    rate: float = 0.15

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_probability("rate")


class ToyMasking(Objective):
    """A correct replace-with-mask objective: `rate` of the ordinary tokens become [MASK]."""

    name: ClassVar[str] = "toy_masking"
    backbone_kinds: ClassVar[tuple[str, ...]] = ("encoder",)
    config_class: ClassVar[type[ObjectiveConfig]] = ToyMaskingConfig

    def select(self, ids: Tensor, generator: torch.Generator) -> Tensor:
        u = torch.rand(ids.shape, generator=generator)  # (B, L)
        return (u < self.config.rate) & ~self.tokens.special_mask(ids)

    def replacement(self, ids: Tensor, generator: torch.Generator) -> Tensor:
        return torch.full_like(ids, self.tokens.mask_id)  # (B, L)

    def corrupt(self, blocks: Blocks, generator: torch.Generator) -> Batch:
        ids = blocks.input_ids  # (B, L)
        selected = self.select(ids, generator)  # (B, L)
        inputs = torch.where(selected, self.replacement(ids, generator), ids)  # (B, L)
        return {"input_ids": inputs, "attention_mask": (ids != self.tokens.pad_id).long(),
                "labels": ids.masked_fill(~selected, IGNORE)}

    def logits(self, model: nn.Module, batch: Batch) -> Tensor:
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()

    def loss(self, model: nn.Module, batch: Batch) -> LossOutput:
        labels = batch["labels"]  # (B, L)
        logits = self.logits(model, batch)  # (B, L, V)
        count = (labels != IGNORE).sum()
        loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE,
                               reduction="sum") / count.clamp(min=1)
        return LossOutput(loss, {"supervised_tokens": count})

    def promised_stats(self) -> dict[str, PromisedStat]:
        return {"selection_rate": PromisedStat(self.config.rate, 0.01)}

    def measure_stats(self, blocks: Blocks, batch: Batch) -> dict[str, float]:
        ordinary = ~self.tokens.special_mask(blocks.input_ids)
        return {"selection_rate": float((batch["labels"] != IGNORE).sum() / ordinary.sum())}


class RandomFromWholeVocab(ToyMasking):
    """(a) random replacements drawn from the whole vocabulary, specials included."""

    def replacement(self, ids: Tensor, generator: torch.Generator) -> Tensor:
        return torch.randint(self.tokens.vocab_size, ids.shape, generator=generator)  # (B, L)


class SupervisesPadding(ToyMasking):
    """(b) selects any position, padding included, so pad tokens become targets."""

    def select(self, ids: Tensor, generator: torch.Generator) -> Tensor:
        return torch.rand(ids.shape, generator=generator) < self.config.rate


class GlobalRNG(ToyMasking):
    """(c) draws from torch's global RNG instead of the generator."""

    def select(self, ids: Tensor, generator: torch.Generator) -> Tensor:
        return (torch.rand(ids.shape) < self.config.rate) & ~self.tokens.special_mask(ids)


class Overpromises(ToyMasking):
    """(d) promises twice the selection rate it realises."""

    def promised_stats(self) -> dict[str, PromisedStat]:
        return {"selection_rate": PromisedStat(2 * self.config.rate, 0.01)}


class WrongLabelBatch(ToyMasking):
    """(e) labels lose their last row."""

    def corrupt(self, blocks: Blocks, generator: torch.Generator) -> Batch:
        batch = super().corrupt(blocks, generator)
        batch["labels"] = batch["labels"][:-1]
        return batch


class NoKinds(ToyMasking):
    """(f) declares no backbone kinds."""

    backbone_kinds: ClassVar[tuple[str, ...]] = ()


@dataclass
class TupleConfig(ToyMaskingConfig):
    rates: tuple[float, ...] = (0.1, 0.2)


class TupleConfigured(ToyMasking):
    """A config field YAML turns into a list."""

    config_class: ClassVar[type[ObjectiveConfig]] = TupleConfig


class WithBias(ToyMasking):
    """Owns a trainable logit bias through build_modules and uses it in the loss."""

    def build_modules(self, model: nn.Module) -> dict[str, nn.Module]:
        self.bias = nn.Linear(1, self.tokens.vocab_size)
        return {"bias": self.bias}

    def logits(self, model: nn.Module, batch: Batch) -> Tensor:
        return super().logits(model, batch) + self.bias.bias  # (B, L, V)


class IdleModule(WithBias):
    """Returns a module from build_modules but never uses it."""

    def logits(self, model: nn.Module, batch: Batch) -> Tensor:
        return ToyMasking.logits(self, model, batch)


class TwoKinds(ToyMasking):
    """Trains encoders and decoders; records the kind bound when block_length is asked."""

    backbone_kinds: ClassVar[tuple[str, ...]] = ("encoder", "decoder")
    seen: ClassVar[list[str | None]] = []

    def block_length(self, seq_len: int) -> int:
        TwoKinds.seen.append(self.backbone_kind)
        return seq_len


def failed(report: ConformanceReport) -> dict[str, CheckResult]:
    return {c.name: c for c in report.checks if not c.passed}


def test_correct_toy_objective_passes_every_check() -> None:
    report = assert_conforms(ToyMasking, package="tests")
    assert report.passed and [c.name for c in report.checks] == [
        "contract", "config", "block_length", "determinism", "batch_format", "padding_targets",
        "special_tokens", "statistics", "loss[encoder]", "loss_stats"]
    assert "selection_rate 0.15" in report.get("statistics").detail


@pytest.mark.parametrize("cls, expected, words", [
    (RandomFromWholeVocab, {"special_tokens"}, ["pad (id 0)", "cls (id 2)"]),
    (SupervisesPadding, {"padding_targets"}, ["padding positions carry a label"]),
    (GlobalRNG, {"determinism"}, ["global torch RNG"]),
    (Overpromises, {"statistics"}, ["selection_rate 0.15", "promised 0.3 +- 0.01"]),
    (NoKinds, {"contract", "loss"}, ["declares no backbone kinds"]),
    (TupleConfigured, {"config"}, ["['rates']"]),
    (IdleModule, {"loss[encoder]"}, ["['bias'] from build_modules got no gradient"]),
])
def test_broken_objective_fails_the_check_naming_its_bug(cls: type[Objective], expected: set[str],
                                                         words: list[str]) -> None:
    report = check_objective(cls, raise_on_failure=False, package="broken-pkg")
    bad = failed(report)
    assert set(bad) == expected, report.summary()
    first = bad[sorted(expected)[0]]
    assert first.fix and all(w in first.detail for w in words), first.line()


def test_wrong_label_batch_is_reported_as_format_error() -> None:
    report = check_objective(WrongLabelBatch, raise_on_failure=False)
    bad = failed(report)
    assert "batch_format" in bad and "loss[encoder]" in bad
    assert "batch['labels'] has shape (31, 32): batch dim 31, expected batch dim 32" in bad["batch_format"].detail
    assert bad["batch_format"].fix == "every tensor must have the block batch size B as dim 0"


def test_each_kind_is_bound_and_checked_under_its_own_name() -> None:
    TwoKinds.seen.clear()
    report = assert_conforms(TwoKinds)
    assert TwoKinds.seen == ["encoder", "decoder"]
    names = [c.name for c in report.checks]
    assert names == ["contract", "config"] + [f"{check}[{kind}]" for kind in ("encoder", "decoder") for check in (
        "block_length", "determinism", "batch_format", "padding_targets", "special_tokens", "statistics", "loss",
        "loss_stats")]


def test_build_modules_are_trained() -> None:
    report = assert_conforms(WithBias)
    assert report.get("loss[encoder]").passed


def test_conformance_error_names_objective_package_and_fixes() -> None:
    with pytest.raises(ConformanceError) as info:
        assert_conforms(Overpromises, package="broken-pkg")
    message = str(info.value)
    assert message.splitlines()[0] == "objective 'toy_masking' (package broken-pkg): 9/10 conformance checks passed"
    assert len(message.splitlines()) == 2 and "FAIL statistics:" in message and "| fix: " in message
    assert not info.value.report.passed


def test_kit_leaves_global_rng_and_threads_alone() -> None:
    torch.manual_seed(3)
    state, threads = torch.get_rng_state(), torch.get_num_threads()
    check_objective(GlobalRNG, raise_on_failure=False)
    assert torch.equal(torch.get_rng_state(), state) and torch.get_num_threads() == threads


# ---- the synthetic data --------------------------------------------------------------------------
def test_conformance_tokens_layout() -> None:
    t = conformance_tokens()
    assert (t.pad_id, t.unk_id, t.cls_id, t.sep_id, t.mask_id, t.bos_id, t.eos_id) == (0, 1, 2, 3, 4, 5, 6)
    assert t.sentinel_ids[:2] == (511, 510) and len(t.sentinel_ids) == 100 and t.sentence_end_ids == (10,)
    assert t.named_ids["[NLU]"] == 7 and 10 not in t.special_ids and set(t.special_ids) == set(t.named_ids.values())


def test_toy_blocks_look_like_packed_text() -> None:
    tokens = conformance_tokens()
    blocks = toy_blocks(tokens, 64, 128, seed=1)
    ids = blocks.input_ids
    assert ids.shape == (64, 128) and ids.dtype == torch.int64 and not tokens.special_mask(ids).any()
    assert torch.equal(ids, toy_blocks(tokens, 64, 128, seed=1).input_ids)
    assert not torch.equal(ids, toy_blocks(tokens, 64, 128, seed=2).input_ids)
    assert abs((ids == 10).float().mean().item() - 0.1) < 0.01  # sentence ends
    assert blocks.word_starts[:, 0].all() and abs(blocks.word_starts.float().mean().item() - 0.73) < 0.02
    counts = torch.bincount(ids.flatten(), minlength=tokens.vocab_size)
    assert counts[11] > 5 * counts[100]  # Zipf: the first ordinary id (11) is far more frequent


# ---- the guide's example and packaging recipe ----------------------------------------------------
def guide_files() -> dict[str, str]:
    """Fenced blocks of the guide whose first line is `# <path>`: path -> text."""
    blocks = re.findall(r"```(?:python|toml|yaml)\n# (\S+)\n(.*?)```", GUIDE.read_text(), flags=re.S)
    return {path: f"# {path}\n{body}" for path, body in blocks}


@pytest.fixture
def guide_package(tmp_path: Path) -> Path:
    """The guide's package written out, plus the dist-info `pip install` would write."""
    files = guide_files()
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    (tmp_path / "lmbench_token_deletion" / "__init__.py").write_text("")
    project = tomllib.loads(files["pyproject.toml"])["project"]
    dist = tmp_path / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    groups = project["entry-points"]
    (dist / "entry_points.txt").write_text("".join(
        f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()) for group, eps in groups.items()))
    return tmp_path


def test_guide_has_the_files_it_describes() -> None:
    assert set(guide_files()) == {
        "lmbench_token_deletion/objective.py", "tests/test_token_deletion.py", "pyproject.toml",
        "hydra_plugins/lmbench_token_deletion_searchpath.py",
        "lmbench_token_deletion/conf/objective/token_deletion_heavy.yaml"}


def test_guide_example_passes_the_kit(guide_package: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(guide_package))
    for module in [m for m in sys.modules if m.startswith("lmbench_token_deletion")]:
        monkeypatch.delitem(sys.modules, module)
    from lmbench_token_deletion.objective import TokenDeletion

    report = assert_conforms(TokenDeletion, package="lmbench-token-deletion")
    assert "deletion_rate 0.15" in report.get("statistics").detail
    guide_tests: dict[str, object] = {}
    exec(compile((guide_package / "tests" / "test_token_deletion.py").read_text(), "test_token_deletion.py", "exec"),
         guide_tests)
    guide_tests["test_token_deletion_conforms"]()
    guide_tests["test_heavy_deletion_conforms"]()
    lines = (guide_package / "lmbench_token_deletion" / "objective.py").read_text().splitlines()
    assert 60 <= len(lines) <= 90 and max(map(len, lines)) <= 120


@pytest.mark.slow
def test_guide_packaging_registers_objective_and_hydra_preset(guide_package: Path) -> None:
    """In a fresh interpreter (Hydra scans `hydra_plugins` once per process; ~6 s of imports, hence slow):
    the entry point makes the registry and `lmbench-plugins` list it, the SearchPathPlugin makes the
    preset composable."""
    script = """
import json
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from lmbench.cli.plugins import plugin_rows
from lmbench.config import register_configs
from lmbench.objectives import default_registry
register_configs(default_registry())
with initialize_config_module("lmbench_conf", version_base="1.3"):
    cfg = compose("config", overrides=["objective=token_deletion_heavy"])
row = [r for r in plugin_rows(default_registry()) if r["name"] == "token_deletion"][0]
print(json.dumps({"objective": OmegaConf.to_container(cfg.objective), "row": row}))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(
                              [str(guide_package), *filter(None, [os.environ.get("PYTHONPATH")])])})
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["objective"] == {"name": "token_deletion", "deletion_rate": 0.3}
    row = out["row"]
    assert (row["package"], row["version"], row["status"]) == ("lmbench-token-deletion", "0.1.0", "ok")
    assert row["backbone_kinds"] == ["encoder-decoder"] and row["config"] == {"deletion_rate": 0.15}
