"""Run-time corruption audit: measure what an objective really does to the first batches of a run.

A plugin declares the statistics its corruption promises (mlm: selection 0.15, 80/10/10; t5_span:
noise density, mean span length). Before training, the core measures them on the run's own first
training batches, averaged over enough tokens for the declared tolerances to be meaningful, records
them in results.json, and stops the run with a clear message when a statistic drifts out of bounds —
a silently wrong corruption would otherwise be discovered only in the leaderboard, if ever.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import torch

from lmbench.objectives.base import Batch, Blocks, Objective


class CorruptionAuditError(RuntimeError):
    """A plugin's measured corruption statistics differ from what it promises."""


class BatchContractError(TypeError):
    """`corrupt` returned something that is not a dict of tensors sharing the blocks' batch dimension."""


def check_batch(objective: Objective, blocks: Blocks, batch: Batch, package: str = "?") -> None:
    """Fail with the plugin's name, package and a one-line fix when a corrupted batch breaks the contract."""
    rows = blocks.input_ids.shape[0]
    where = f"objective {objective.name!r} (package {package}): corrupt()"
    if not isinstance(batch, dict) or not batch:
        raise BatchContractError(f"{where} returned {type(batch).__name__}, not a non-empty dict of tensors; "
                                 "fix: return {'input_ids': ..., 'labels': ..., ...}")
    for key, value in batch.items():
        if not isinstance(value, torch.Tensor):
            raise BatchContractError(f"{where} returned {key!r} of type {type(value).__name__}; "
                                     "fix: every batch value must be a torch.Tensor")
        if value.dim() == 0 or value.shape[0] != rows:
            raise BatchContractError(f"{where} returned {key!r} with shape {tuple(value.shape)} for {rows} blocks; "
                                     f"fix: give every tensor the batch dimension first, ({rows}, ...)")


@dataclass
class AuditReport:
    """Promised vs measured statistics over `batches` batches (`tokens` raw tokens)."""

    objective: str
    batches: int = 0
    tokens: int = 0
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(s["ok"] for s in self.stats.values())

    def failures(self) -> list[str]:
        return [f"{name}: measured {s['measured']:.4f}, promised {s['promised']:.4g} ± {s['bound']:.4g}"
                for name, s in self.stats.items() if not s["ok"] and s["measured"] is not None]

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "batches": self.batches, "tokens": self.tokens, "stats": self.stats}


SLACK_STDERRS = 4.0
"""A statistic fails when |measured - promised| > tolerance + SLACK_STDERRS * its standard error.

Declared tolerances describe the corruption in the limit (the test suite checks them on >= 1M tokens);
a run audits a few tens of batches, so the bound widens by the sampling error measured across batches.
A real drift (e.g. 0.20 instead of 0.15) is far outside it; noise almost never is (4 standard errors)."""


def audit_corruption(objective: Objective, pairs: Iterable[tuple[Blocks, Batch]], package: str = "?") -> AuditReport:
    """Average `objective.measure_stats` over (blocks, corrupted batch) pairs and compare with the promise.

    Batches where a statistic is undefined (NaN, e.g. nothing selected) do not count for it. A promised
    statistic that `measure_stats` never reports fails the audit: an unchecked promise is a bug.
    """
    promised = objective.promised_stats()
    report = AuditReport(objective=objective.name)
    values: dict[str, list[float]] = {name: [] for name in promised}
    for blocks, batch in pairs:
        check_batch(objective, blocks, batch, package)
        report.batches += 1
        report.tokens += int(blocks.input_ids.numel())
        for name, value in objective.measure_stats(blocks, batch).items():
            if name in values and value is not None and not math.isnan(float(value)):
                values[name].append(float(value))
    for name, promise in promised.items():
        seen = np.asarray(values[name], dtype=np.float64)
        if seen.size == 0:
            report.stats[name] = {"promised": promise.value, "tolerance": promise.tolerance, "measured": None,
                                  "stderr": None, "bound": None, "ok": False}
            continue
        stderr = float(seen.std(ddof=1) / math.sqrt(seen.size)) if seen.size > 1 else 0.0
        bound = promise.tolerance + SLACK_STDERRS * stderr
        measured = float(seen.mean())
        report.stats[name] = {"promised": promise.value, "tolerance": promise.tolerance,
                              "measured": round(measured, 6), "stderr": round(stderr, 6),
                              "bound": round(bound, 6), "ok": abs(measured - promise.value) <= bound + 1e-12}
    return report


def raise_if_failed(report: AuditReport, package: str) -> None:
    """Stop the run when the audit failed, naming the plugin, its package and each drifting statistic."""
    if report.passed:
        return
    missing = [n for n, s in report.stats.items() if s["measured"] is None]
    lines = "; ".join(report.failures() if not missing else
                      report.failures() + [f"{n}: never reported by measure_stats" for n in missing])
    raise CorruptionAuditError(
        f"corruption audit failed for objective {report.objective!r} (package {package}) over "
        f"{report.batches} batches / {report.tokens} tokens: {lines}. Fix the plugin's corrupt() or its "
        "promised_stats(); lmbench.testing.assert_conforms reproduces this check offline.")
