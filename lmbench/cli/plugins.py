"""`lmbench-plugins`: list every discovered objective with its package, backbone kinds and config fields.

Broken plugins (import errors, contract violations, duplicate names) are listed too, with the
package they came from and a one-line fix, so an author sees what is wrong without starting a run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from lmbench.objectives.registry import ObjectiveRegistry, PluginRecord, default_registry
from lmbench.results import RESULTS_FILE


def plugin_rows(registry: ObjectiveRegistry) -> list[dict[str, Any]]:
    """One plain dict per plugin: what the table and --json print."""
    rows = []
    for rec in registry.records():
        fields: dict[str, Any] = {}
        if rec.cls is not None:
            for f in dataclasses.fields(rec.cls.config_class):
                if f.name == "name":
                    continue
                default = f.default if f.default is not dataclasses.MISSING else (
                    f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
                fields[f.name] = default
        rows.append({
            "name": rec.name, "package": rec.package, "version": rec.version, "target": rec.target,
            "backbone_kinds": list(rec.cls.backbone_kinds) if rec.cls is not None else [],
            "config": fields, "status": _status(rec),
            "error": rec.error, "fix": rec.fix,
        })
    return rows


def last_audits(runs_dir: Path) -> dict[str, dict[str, Any]]:
    """Objective name -> the audit of its newest run (by start time) among the results.json under runs_dir."""
    newest: dict[str, dict[str, Any]] = {}
    for path in sorted(runs_dir.rglob(RESULTS_FILE)):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue  # a foreign or unreadable file is not a run of ours
        name = (record.get("objective") or {}).get("name")
        if not name or record.get("started_at", "") < newest.get(name, {}).get("started_at", ""):
            continue
        audit = record.get("audit")
        newest[name] = {"started_at": record.get("started_at", ""), "run": str(path.parent),
                        "status": record.get("status"),
                        "passed": None if audit is None else bool(audit.get("passed"))}
    return newest


def _audit_text(audit: dict[str, Any] | None) -> str:
    if audit is None:
        return "no run"
    verdict = {True: "passed", False: "[red]FAILED[/red]", None: "not audited"}[audit["passed"]]
    return f"{verdict}\n{audit['run']}"


def _status(rec: PluginRecord) -> str:
    if rec.duplicate_of is not None:
        return f"duplicate (also in {rec.duplicate_of.package})"
    return "ok" if rec.ok else "broken"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lmbench-plugins", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON instead of a table")
    parser.add_argument("--runs", type=Path, metavar="DIR",
                        help="also show whether each objective passed its corruption audit in its newest run under DIR")
    args = parser.parse_args(argv)
    rows = plugin_rows(default_registry())
    if args.runs is not None:
        if not args.runs.is_dir():
            parser.error(f"--runs {args.runs}: not a directory")
        audits = last_audits(args.runs)
        for row in rows:
            row["last_audit"] = audits.get(row["name"])
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
    else:
        table = Table(title="lmbench objectives (entry-point group lmbench.objectives)")
        columns = ["name", "package", "backbone kinds", "config (defaults)", "status"]
        columns += ["last audit"] if args.runs is not None else []
        for col in columns:
            table.add_column(col, overflow="fold")
        for row in rows:
            cfg = "\n".join(f"{k}={v!r}" for k, v in row["config"].items()) or "-"
            status = row["status"] if row["status"] == "ok" else f"[red]{row['status']}[/red]: {row['error']}\nfix: {row['fix']}"
            cells = [row["name"], f"{row['package']} {row['version']}", ", ".join(row["backbone_kinds"]), cfg, status]
            cells += [_audit_text(row["last_audit"])] if args.runs is not None else []
            table.add_row(*cells)
        Console(width=140).print(table)
    return 1 if any(r["status"] != "ok" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
