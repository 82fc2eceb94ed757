"""`lmbench`: the Hydra application that pretrains one objective per job (and sweeps with -m).

Plugins are discovered through entry points and their config dataclasses stored in Hydra's
ConfigStore before Hydra composes, so `objective=<name>` works for built-in and third-party
objectives alike. Each job records its outcome in results.json, also when it fails.

A mistake in the command (a bad value, a missing path) ends a single run with one line,
`Error: <message naming the key>`, and exit code 1; the traceback stays in results.json (or on the
console with HYDRA_FULL_ERROR=1). Unexpected errors keep Hydra's traceback. In a sweep (-m) every
error is re-raised so the lmbench launcher records the job as failed and runs the others.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue, ValidationError

from lmbench.config import register_configs
from lmbench.objectives.registry import ObjectiveRegistryError, default_registry
from lmbench.results import empty_record, now_iso, write_results
from lmbench.tasks.config import TaskConfigError, check_task_overrides

USER_CODE_PREFIXES = ("lmbench.", "lmbench_plugins.")
# OmegaConf errors that come from the user's values (`???` left unset, a bad ${...}, a value of the
# wrong type); a missing attribute is lmbench's own bug and keeps its traceback.
CONFIG_VALUE_ERRORS = (MissingMandatoryValue, InterpolationResolutionError, ValidationError)
log = logging.getLogger(__name__)


def user_error_types() -> tuple[type[BaseException], ...]:
    """Errors whose message tells a user what to change (imported late: they live beside heavy code)."""
    from lmbench.audit import BatchContractError, CorruptionAuditError
    from lmbench.backbones import BackboneError
    from lmbench.data.sources import CorpusError
    from lmbench.data.tokenizer import TokenizerError
    from lmbench.loggers import LoggerConfigError
    from lmbench.objectives.base import ObjectiveConfigError
    from lmbench.pretrain import OutputDirError
    from lmbench.train.checkpointing import CheckpointError
    from lmbench.train.nonfinite import NonFiniteLossError

    return (ObjectiveConfigError, ObjectiveRegistryError, BackboneError, CorpusError, TokenizerError,
            CorruptionAuditError, BatchContractError, OutputDirError, LoggerConfigError, CheckpointError,
            NonFiniteLossError, *CONFIG_VALUE_ERRORS)


def raised_in_lmbench(exc: BaseException) -> bool:
    """True when the innermost frame of the traceback is lmbench's own code (a deliberate check)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    module = tb.tb_frame.f_globals.get("__name__", "") if tb is not None else ""
    return module.startswith(USER_CODE_PREFIXES)


def is_user_error(exc: BaseException) -> bool:
    """A configuration or input error to report in one line, not a bug to report with a traceback:
    one of lmbench's error types, or a ValueError / FileNotFoundError that lmbench's own checks raised."""
    if isinstance(exc, (ValueError, FileNotFoundError, NotADirectoryError)) and raised_in_lmbench(exc):
        return True
    if isinstance(exc, (ObjectiveRegistryError, *CONFIG_VALUE_ERRORS)):
        return True
    try:
        return isinstance(exc, user_error_types())
    except ImportError:  # the run failed before the recipe could even be imported: not a user error
        return False


def check_local_paths(cfg: DictConfig) -> None:
    """lmbench never downloads a model or tokenizer: a name that is not a local directory fails here,
    in seconds, instead of after the corpus is tokenized (or on a Hub request with no network)."""
    for key, value, instead in (
            ("backbone.pretrained", cfg.backbone.get("pretrained"), "unset it to build a size-matched preset "
             "(backbone.size: tiny | small | base)"),
            ("data.tokenizer.path", cfg.data.tokenizer.get("path"), "unset it to train the shared tokenizer "
             "on the corpus (data.tokenizer.type: wordpiece | bpe | unigram)")):
        if value and not Path(str(value)).expanduser().is_dir():
            raise FileNotFoundError(
                f"{key}={str(value)!r} is not a local directory; lmbench never downloads from the Hugging Face "
                f"Hub: give a local directory written by save_pretrained (download it yourself first), or {instead}")


def preflight(cfg: DictConfig) -> None:
    """Checks that need no data or model, run before the recipe: local paths, and the logger config
    (W&B online mode without a login fails here rather than prompting)."""
    check_local_paths(cfg)
    if "logger" in cfg:
        from lmbench.loggers import check_logger_config

        check_logger_config(cfg.logger)


def close_loggers(record: dict) -> None:
    """Finish the job's W&B run (if any) with its final record; a logger failure must not hide the run's."""
    from lmbench.loggers import finish_loggers

    try:
        finish_loggers(record)
    except Exception as exc:  # noqa: BLE001 - the results record is what counts; say why W&B is incomplete
        log.warning("could not finish the W&B run: %s: %s", type(exc).__name__, exc)


def in_sweep() -> bool:
    """True inside a job of `lmbench -m ...`."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


@hydra.main(version_base="1.3", config_path="pkg://lmbench_conf", config_name="config")
def _app(cfg: DictConfig) -> float | None:
    record = empty_record()
    try:
        preflight(cfg)
        from lmbench.pretrain import run_pretraining  # heavy imports after --help/--cfg and the preflight

        run_pretraining(cfg, record)
    except BaseException as exc:
        record.update(status="failed", finished_at=now_iso(),
                      error={"type": type(exc).__name__, "message": str(exc),
                             "traceback": traceback.format_exc(limit=8)})
        from lightning_fabric.utilities.rank_zero import rank_zero_only  # rank from the launcher's env

        try:
            if rank_zero_only.rank == 0:  # under Slurm every rank runs this job; rank 0 owns results.json
                write_results(Path(cfg.output_dir), record)
        except OSError:
            pass  # the output dir itself is the problem; the raised error says so
        if in_sweep() or os.environ.get("HYDRA_FULL_ERROR") == "1" or not is_user_error(exc):
            raise
        print(f"Error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    finally:
        close_loggers(record)
    return record["val_loss"]


def register_sweep_plugins() -> None:
    """Tell Hydra about the lmbench launcher and sweeper (conf/hydra/{launcher,sweeper}/lmbench.yaml).

    Hydra finds plugins by listing the `hydra_plugins` namespace package; a setuptools editable
    install exposes that package only through an import hook that cannot be listed, so register
    them by hand (a no-op where the scan already found them). The scan runs first: it re-executes
    Hydra's core plugin modules, which would orphan a subclass of BasicSweeper imported before it."""
    from hydra.core.plugins import Plugins

    plugins = Plugins.instance()
    from hydra_plugins.lmbench_launcher.launcher import LmbenchLauncher, LmbenchSweeper

    for plugin in (LmbenchLauncher, LmbenchSweeper):
        plugins.register(plugin)


def main() -> None:
    """Console-script entry point."""
    register_configs(default_registry())
    register_sweep_plugins()
    try:  # Hydra's own error for an unknown name in a list of options does not list the allowed ones
        check_task_overrides(sys.argv[1:])
    except TaskConfigError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        sys.exit(1)
    _app()


if __name__ == "__main__":
    main()
