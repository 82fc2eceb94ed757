"""The objective registry: entry-point discovery, duplicates, unknown names, broken plugins."""

from __future__ import annotations

import importlib.metadata as md
import sys
import textwrap
from pathlib import Path

import pytest

from lmbench.objectives import (
    BrokenPluginError,
    DuplicateObjectiveError,
    ObjectiveRegistry,
    UnknownObjectiveError,
)
from lmbench.objectives.registry import default_registry

BUILTINS = {"mlm", "clm", "prefix_lm", "t5_span", "bart_infill"}


def make_dist(root: Path, dist: str, module: str, source: str, entries: dict[str, str]) -> list[md.EntryPoint]:
    """Write an installed-looking distribution (module + dist-info with entry points) under root."""
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist}-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2.3\n")
    lines = "\n".join(f"{k} = {v}" for k, v in entries.items())
    (info / "entry_points.txt").write_text(f"[lmbench.objectives]\n{lines}\n")
    return list(md.Distribution.at(info).entry_points)


GOOD = """
from dataclasses import dataclass
from lmbench.objectives import Objective, ObjectiveConfig, LossOutput
@dataclass
class Cfg(ObjectiveConfig):
    name: str = "{name}"
    rate: float = 0.5
class Obj(Objective):
    name = "{name}"
    backbone_kinds = ("encoder",)
    config_class = Cfg
    def corrupt(self, blocks, generator):
        return {{"input_ids": blocks.input_ids}}
    def loss(self, model, batch):
        raise NotImplementedError
"""


@pytest.fixture
def plugin_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for mod in [m for m in sys.modules if m.startswith("fakeplug")]:
        del sys.modules[mod]


def test_builtins_are_discovered_through_entry_points() -> None:
    registry = ObjectiveRegistry.from_entry_points()
    assert BUILTINS <= set(registry.names())
    for name in BUILTINS:
        rec = next(r for r in registry.records() if r.name == name)
        assert rec.package == "lmbench" and rec.ok, (name, rec.error)
        assert registry.get(name).name == name


def test_unknown_name_suggests_close_match() -> None:
    with pytest.raises(UnknownObjectiveError, match=r"did you mean 'mlm'.*available objectives: .*clm"):
        default_registry().get("mlmm")
    with pytest.raises(UnknownObjectiveError, match="available objectives"):
        default_registry().get("zzzzzz")


def test_third_party_plugin_loads_with_its_package(plugin_root: Path) -> None:
    eps = make_dist(plugin_root, "fake-objectives", "fakeplug_good", GOOD.format(name="denoise"),
                    {"denoise": "fakeplug_good:Obj"})
    registry = ObjectiveRegistry.from_entry_points(eps)
    rec = registry.records()[0]
    assert (rec.name, rec.package, rec.version, rec.ok) == ("denoise", "fake-objectives", "1.2.3", True)
    assert registry.get("denoise").config_class().rate == 0.5


def test_import_failure_names_package_and_spares_others(plugin_root: Path) -> None:
    eps = make_dist(plugin_root, "broken-objectives", "fakeplug_broken", "raise ImportError('no module named xformers')\n",
                    {"broken": "fakeplug_broken:Obj"})
    eps += make_dist(plugin_root, "fine-objectives", "fakeplug_fine", GOOD.format(name="fine"), {"fine": "fakeplug_fine:Obj"})
    registry = ObjectiveRegistry.from_entry_points(eps)
    assert registry.get("fine").name == "fine"
    with pytest.raises(BrokenPluginError, match=r"'broken' from package 'broken-objectives'.*xformers.*fix:"):
        registry.get("broken")


def test_duplicate_names_name_both_packages(plugin_root: Path) -> None:
    eps = make_dist(plugin_root, "first-pkg", "fakeplug_a", GOOD.format(name="dup"), {"dup": "fakeplug_a:Obj"})
    eps += make_dist(plugin_root, "second-pkg", "fakeplug_b", GOOD.format(name="dup"), {"dup": "fakeplug_b:Obj"})
    registry = ObjectiveRegistry.from_entry_points(eps)
    with pytest.raises(DuplicateObjectiveError, match="first-pkg.*second-pkg"):
        registry.get("dup")


def test_contract_violations_are_reported(plugin_root: Path) -> None:
    no_kinds = GOOD.format(name="nokinds").replace('backbone_kinds = ("encoder",)', "backbone_kinds = ()")
    eps = make_dist(plugin_root, "bad-pkg", "fakeplug_nokinds", no_kinds, {"nokinds": "fakeplug_nokinds:Obj"})
    registry = ObjectiveRegistry.from_entry_points(eps)
    with pytest.raises(BrokenPluginError, match="declares no backbone kinds.*fix: set backbone_kinds"):
        registry.get("nokinds")
    with pytest.raises(DuplicateObjectiveError):
        reg = ObjectiveRegistry()
        reg.register(default_registry().get("mlm"))
        reg.register(default_registry().get("mlm"))
