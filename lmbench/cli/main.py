"""`lmbench`: the Hydra application that pretrains one objective per job (and sweeps with -m).

Plugins are discovered through entry points and their config dataclasses stored in Hydra's
ConfigStore before Hydra composes, so `objective=<name>` works for built-in and third-party
objectives alike. Each job records its outcome in results.json, also when it fails.
"""

from __future__ import annotations

import traceback
from pathlib import Path

import hydra
from omegaconf import DictConfig

from lmbench.config import register_configs
from lmbench.objectives.registry import default_registry
from lmbench.results import empty_record, now_iso, write_results


@hydra.main(version_base="1.3", config_path="pkg://lmbench_conf", config_name="config")
def _app(cfg: DictConfig) -> float | None:
    from lmbench.pretrain import run_pretraining  # heavy imports after Hydra handled --help/--cfg

    record = empty_record()
    try:
        run_pretraining(cfg, record)
    except BaseException as exc:
        record.update(status="failed", finished_at=now_iso(),
                      error={"type": type(exc).__name__, "message": str(exc),
                             "traceback": traceback.format_exc(limit=8)})
        try:
            write_results(Path(cfg.output_dir), record)
        except OSError:
            pass  # the output dir itself is the problem; the raised error says so
        raise
    return record["val_loss"]


def main() -> None:
    """Console-script entry point."""
    register_configs(default_registry())
    _app()


if __name__ == "__main__":
    main()
