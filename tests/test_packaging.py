"""Packaging: conf/ and plugins/ install with the package, under names that cannot collide.

A wheel install must work outside the repository (no checkout on sys.path), so the slow test builds
the wheel, installs it into a fresh virtual environment and runs both console scripts from elsewhere.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_python_package_dir_is_listed() -> None:
    setup = PYPROJECT["tool"]["setuptools"]
    listed = set(setup["packages"])
    dirs = {"lmbench": ROOT / "lmbench", "lmbench_plugins": ROOT / "plugins", "lmbench_conf": ROOT / "conf",
            "hydra_plugins": ROOT / "hydra_plugins"}
    found = set()
    for top, path in dirs.items():
        for init in path.rglob("__init__.py"):
            rel = init.parent.relative_to(path).parts
            found.add(".".join((top, *rel)))
    assert found == listed
    assert not (ROOT / "hydra_plugins" / "__init__.py").exists(), \
        "hydra_plugins is a namespace package shared by every Hydra plugin"
    assert setup["package-dir"] == {"lmbench": "lmbench", "lmbench_plugins": "plugins", "lmbench_conf": "conf"}
    assert "plugins" not in listed, "a top-level `plugins` package would collide with other distributions"


def test_builtins_register_only_through_entry_points() -> None:
    eps = PYPROJECT["project"]["entry-points"]["lmbench.objectives"]
    assert {"mlm", "clm", "prefix_lm", "t5_span", "bart_infill"} <= set(eps)
    for name, target in eps.items():
        module, attr = target.split(":")
        assert module.startswith("lmbench_plugins."), name
        assert (ROOT / "plugins" / f"{module.split('.')[1]}.py").is_file(), target
    assert set(PYPROJECT["project"]["scripts"]) >= {"lmbench", "lmbench-plugins"}


@pytest.mark.slow
def test_wheel_installs_and_runs_outside_the_repo(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"), str(ROOT)],
                   check=True, capture_output=True)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    py = venv / "bin" / "python"
    (wheel,) = (tmp_path / "dist").glob("lmbench-*.whl")
    subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", str(wheel)], check=True,
                   capture_output=True)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    where = subprocess.run([py, "-c", "import lmbench_conf, lmbench_plugins; print(lmbench_conf.__file__, lmbench_plugins.__file__)"],
                           cwd=outside, capture_output=True, text=True, check=True).stdout
    assert str(venv) in where and str(ROOT) not in where
    cfg = subprocess.run([venv / "bin" / "lmbench", "--cfg", "job", "objective=t5_span"], cwd=outside,
                         capture_output=True, text=True)
    assert cfg.returncode == 0 and "name: t5_span" in cfg.stdout, cfg.stderr
    plugins = subprocess.run([venv / "bin" / "lmbench-plugins", "--json"], cwd=outside, capture_output=True, text=True)
    assert '"mlm"' in plugins.stdout and str(venv) in subprocess.run(
        [py, "-c", "import lmbench_plugins.mlm as m; print(m.__file__)"], cwd=outside, capture_output=True, text=True).stdout
