"""Run-time corruption audit: promised vs measured statistics on real batches, and batch contract checks."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from lmbench.audit import BatchContractError, CorruptionAuditError, audit_corruption, raise_if_failed
from lmbench.objectives import Blocks, LossOutput, Objective, ObjectiveConfig, PromisedStat, TokenInfo


@dataclass
class DropCfg(ObjectiveConfig):
    name: str = "drop"
    rate: float = 0.2       # what corrupt really does
    promised: float = 0.2   # what promised_stats claims


class Drop(Objective):
    """Replaces `rate` of tokens with [MASK]; promises `promised`."""

    name = "drop"
    backbone_kinds = ("encoder",)
    config_class = DropCfg

    def corrupt(self, blocks: Blocks, generator: torch.Generator) -> dict[str, torch.Tensor]:
        hit = torch.rand(blocks.input_ids.shape, generator=generator) < self.config.rate  # (B, L)
        return {"input_ids": blocks.input_ids.masked_fill(hit, self.tokens.mask_id), "labels": blocks.input_ids}

    def loss(self, model, batch) -> LossOutput:
        raise NotImplementedError

    def promised_stats(self) -> dict[str, PromisedStat]:
        return {"rate": PromisedStat(self.config.promised, 0.01)}

    def measure_stats(self, blocks: Blocks, batch) -> dict[str, float]:
        return {"rate": float((batch["input_ids"] == self.tokens.mask_id).float().mean())}


def pairs(objective: Objective, n: int, rows: int = 8, length: int = 64):
    for k in range(n):
        ids = torch.randint(20, 900, (rows, length), generator=torch.Generator().manual_seed(k))
        blocks = Blocks(ids)
        yield blocks, objective.corrupt(blocks, torch.Generator().manual_seed(1000 + k))


def test_honest_objective_passes_with_stderr_slack(token_info: TokenInfo) -> None:
    report = audit_corruption(Drop(DropCfg(), token_info), pairs(Drop(DropCfg(), token_info), 64))
    stat = report.stats["rate"]
    assert report.passed and report.batches == 64 and report.tokens == 64 * 8 * 64
    assert abs(stat["measured"] - 0.2) < 0.01 and 0 < stat["stderr"] < 0.01
    assert stat["bound"] == pytest.approx(0.01 + 4 * stat["stderr"], abs=1e-5)


def test_drifting_objective_fails_naming_stat_and_package(token_info: TokenInfo) -> None:
    liar = Drop(DropCfg(rate=0.3, promised=0.2), token_info)
    report = audit_corruption(liar, pairs(liar, 64))
    assert not report.passed and not report.stats["rate"]["ok"]
    with pytest.raises(CorruptionAuditError, match=r"'drop' \(package acme-objectives\).*rate: measured 0\.(29|30).*promised 0\.2"):
        raise_if_failed(report, "acme-objectives")


def test_unreported_promise_fails(token_info: TokenInfo) -> None:
    class Silent(Drop):
        def measure_stats(self, blocks, batch):
            return {}

    report = audit_corruption(Silent(DropCfg(), token_info), pairs(Silent(DropCfg(), token_info), 4))
    with pytest.raises(CorruptionAuditError, match="rate: never reported by measure_stats"):
        raise_if_failed(report, "pkg")


def test_wrong_batch_shape_is_reported_with_a_fix(token_info: TokenInfo) -> None:
    class Bad(Drop):
        def corrupt(self, blocks, generator):
            batch = super().corrupt(blocks, generator)
            return {**batch, "labels": batch["labels"][:-1]}

    with pytest.raises(BatchContractError, match=r"'drop' \(package pkg\).*'labels' with shape \(7, 64\) for 8 blocks.*fix"):
        audit_corruption(Bad(DropCfg(), token_info), pairs(Bad(DropCfg(), token_info), 2), "pkg")
