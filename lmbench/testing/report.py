"""The result types of the conformance kit: one `CheckResult` per check, gathered in a report.

Kept apart from the checks so a plugin's own tests can build, compare and print reports without
importing torch models.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class CheckResult:
    """The outcome of one conformance check.

    name:   the check, e.g. `statistics` or `loss[encoder]`.
    passed: whether the objective honours that part of the contract.
    detail: what was measured (on success) or what went wrong (on failure), one line.
    fix:    on failure, one line saying what to change in the plugin.
    """

    name: str
    passed: bool
    detail: str
    fix: str = ""

    def line(self) -> str:
        """`PASS name: detail` or `FAIL name: detail | fix: ...`, on one line."""
        text = f"{'PASS' if self.passed else 'FAIL'} {self.name}: {self.detail}"
        return text if self.passed or not self.fix else f"{text} | fix: {self.fix}"


@dataclass
class ConformanceReport:
    """Every check run on one objective class; `passed` only when all of them passed."""

    objective: str
    package: str
    checks: list[CheckResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failures(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.passed]

    def get(self, name: str) -> CheckResult:
        """The check called `name`; KeyError naming the checks that ran otherwise."""
        for check in self.checks:
            if check.name == name:
                return check
        raise KeyError(f"no check {name!r} in the report; checks run: {', '.join(c.name for c in self.checks)}")

    def summary(self, failures_only: bool = False) -> str:
        """A header naming objective and package, then one line per check (failures with their fix)."""
        shown = self.failures if failures_only else self.checks
        ok = sum(c.passed for c in self.checks)
        head = (f"objective {self.objective!r} (package {self.package}): "
                f"{ok}/{len(self.checks)} conformance checks passed")
        return "\n".join([head, *(f"  {c.line()}" for c in shown)])


class ConformanceError(AssertionError):
    """Raised by `check_objective(..., raise_on_failure=True)` and `assert_conforms` on any failure.

    The message is the report's summary of the failed checks; the full report is `.report`.
    """

    def __init__(self, report: ConformanceReport) -> None:
        super().__init__(report.summary(failures_only=True))
        self.report = report
