"""`lmbench-plugins`: list every discovered objective with its package, backbone kinds and config fields.

Broken plugins (import errors, contract violations, duplicate names) are listed too, with the
package they came from and a one-line fix, so an author sees what is wrong without starting a run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from lmbench.objectives.registry import ObjectiveRegistry, PluginRecord, default_registry


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


def _status(rec: PluginRecord) -> str:
    if rec.duplicate_of is not None:
        return f"duplicate (also in {rec.duplicate_of.package})"
    return "ok" if rec.ok else "broken"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lmbench-plugins", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON instead of a table")
    args = parser.parse_args(argv)
    rows = plugin_rows(default_registry())
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
    else:
        table = Table(title="lmbench objectives (entry-point group lmbench.objectives)")
        for col in ("name", "package", "backbone kinds", "config (defaults)", "status"):
            table.add_column(col, overflow="fold")
        for row in rows:
            cfg = "\n".join(f"{k}={v!r}" for k, v in row["config"].items()) or "-"
            status = row["status"] if row["status"] == "ok" else f"[red]{row['status']}[/red]: {row['error']}\nfix: {row['fix']}"
            table.add_row(row["name"], f"{row['package']} {row['version']}", ", ".join(row["backbone_kinds"]),
                          cfg, status)
        Console(width=140).print(table)
    return 1 if any(r["status"] != "ok" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
