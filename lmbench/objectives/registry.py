"""Discovery of objective plugins through the `lmbench.objectives` entry-point group.

Built-in objectives register through the same entry points as third-party ones, so the core has no
list of objectives anywhere. The registry is strict where a silent fallback would corrupt science:
an unknown name answers "did you mean ...", a duplicate name names both packages, and a plugin that
fails to import is reported with its package and error without breaking the other plugins.
"""

from __future__ import annotations

import difflib
import importlib.metadata as md
from dataclasses import dataclass, is_dataclass
from typing import Iterable

from lmbench.objectives.base import BACKBONE_KINDS, Objective, ObjectiveConfig

ENTRY_POINT_GROUP = "lmbench.objectives"


class ObjectiveRegistryError(LookupError):
    """Base class of registry errors; messages are meant to be shown to a user as they are."""


class UnknownObjectiveError(ObjectiveRegistryError):
    pass


class DuplicateObjectiveError(ObjectiveRegistryError):
    pass


class BrokenPluginError(ObjectiveRegistryError):
    pass


@dataclass
class PluginRecord:
    """One discovered objective: where it came from and, if it loaded, its class."""

    name: str
    package: str
    version: str
    target: str
    cls: type[Objective] | None = None
    error: str | None = None
    fix: str | None = None
    duplicate_of: PluginRecord | None = None

    @property
    def ok(self) -> bool:
        return self.cls is not None and self.error is None and self.duplicate_of is None


def validate_objective_class(obj: object, name: str) -> tuple[str, str] | None:
    """Return (problem, one-line fix) if `obj` does not honour the plugin contract, else None."""
    if not (isinstance(obj, type) and issubclass(obj, Objective)):
        return (f"entry point resolves to {obj!r}, not an Objective subclass",
                "point the entry point at a subclass of lmbench.objectives.Objective")
    kinds = getattr(obj, "backbone_kinds", None)
    if not kinds:
        return ("declares no backbone kinds", f"set backbone_kinds to a non-empty subset of {BACKBONE_KINDS}")
    bad = [k for k in kinds if k not in BACKBONE_KINDS]
    if bad:
        return (f"declares unknown backbone kinds {bad}", f"use only {BACKBONE_KINDS}")
    cfg = getattr(obj, "config_class", None)
    if not (isinstance(cfg, type) and is_dataclass(cfg) and issubclass(cfg, ObjectiveConfig)):
        return ("config_class is not an ObjectiveConfig dataclass",
                "set config_class to a @dataclass subclassing lmbench.objectives.ObjectiveConfig")
    if getattr(obj, "name", None) != name:
        return (f"class name attribute {getattr(obj, 'name', None)!r} differs from entry-point name {name!r}",
                f"set name = {name!r} on the class or rename the entry point")
    return None


class ObjectiveRegistry:
    """Name -> objective class, filled from entry points (or `register` in tests)."""

    def __init__(self) -> None:
        self._records: dict[str, PluginRecord] = {}

    @classmethod
    def from_entry_points(cls, entry_points: Iterable[md.EntryPoint] | None = None) -> ObjectiveRegistry:
        registry = cls()
        if entry_points is None:
            entry_points = md.entry_points(group=ENTRY_POINT_GROUP)
        seen: set[tuple[str, str]] = set()
        for ep in entry_points:
            if (ep.name, ep.value) in seen:  # one distribution visible twice on sys.path
                continue
            seen.add((ep.name, ep.value))
            dist = getattr(ep, "dist", None)
            record = PluginRecord(
                name=ep.name,
                package=dist.name if dist is not None else "<unknown package>",
                version=dist.version if dist is not None else "?",
                target=ep.value,
            )
            try:
                loaded = ep.load()
            except Exception as exc:  # noqa: BLE001 - any import failure is reported, not raised
                record.error = f"import failed: {type(exc).__name__}: {exc}"
                record.fix = f"fix or uninstall package {record.package!r} (entry point {ep.value})"
            else:
                problem = validate_objective_class(loaded, ep.name)
                if problem:
                    record.error, record.fix = problem
                else:
                    record.cls = loaded
            registry._add(record)
        return registry

    def register(self, cls: type[Objective], package: str = "<local>", version: str = "?") -> None:
        """Register a class directly; raises on contract violations and duplicate names."""
        problem = validate_objective_class(cls, getattr(cls, "name", ""))
        if problem:
            raise BrokenPluginError(f"objective {getattr(cls, 'name', cls)!r} from {package}: {problem[0]}; fix: {problem[1]}")
        record = PluginRecord(cls.name, package, version, f"{cls.__module__}:{cls.__qualname__}", cls=cls)
        if cls.name in self._records:
            raise DuplicateObjectiveError(self._duplicate_message(record, self._records[cls.name]))
        self._records[cls.name] = record

    def _add(self, record: PluginRecord) -> None:
        first = self._records.get(record.name)
        if first is None:
            self._records[record.name] = record
        else:
            first.duplicate_of = record

    @staticmethod
    def _duplicate_message(second: PluginRecord, first: PluginRecord) -> str:
        return (f"objective name {first.name!r} is registered twice: by package {first.package!r} "
                f"({first.target}) and by package {second.package!r} ({second.target}); "
                "uninstall one or rename its entry point")

    def records(self) -> list[PluginRecord]:
        return [self._records[k] for k in sorted(self._records)]

    def names(self) -> list[str]:
        return sorted(self._records)

    def get(self, name: str) -> type[Objective]:
        record = self._records.get(name)
        if record is None:
            close = difflib.get_close_matches(name, self.names(), n=3, cutoff=0.5)
            hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
            raise UnknownObjectiveError(
                f"unknown objective {name!r}; {hint}available objectives: {', '.join(self.names()) or '(none)'}")
        if record.duplicate_of is not None:
            raise DuplicateObjectiveError(self._duplicate_message(record.duplicate_of, record))
        if record.error is not None:
            raise BrokenPluginError(
                f"objective {name!r} from package {record.package!r} is broken: {record.error}; fix: {record.fix}")
        assert record.cls is not None
        return record.cls


_DEFAULT: ObjectiveRegistry | None = None


def default_registry() -> ObjectiveRegistry:
    """The process-wide registry built from installed entry points (loaded once)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = ObjectiveRegistry.from_entry_points()
    return _DEFAULT
