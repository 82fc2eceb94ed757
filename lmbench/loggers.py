"""Experiment loggers for a pretraining run: CSV always, Weights & Biases on request, never online by surprise.

`logger=csv` (the default) writes output_dir/logs/metrics.csv. `logger=wandb` adds a W&B run whose
mode is chosen so that a run never blocks on the network or a prompt:

    logger.mode set          -> that mode (offline | online | disabled)
    else WANDB_MODE set      -> that mode
    else CI set (non-empty)  -> disabled
    else                     -> offline: files under output_dir/wandb/, upload later with `wandb sync`

Online mode without a W&B login (no WANDB_API_KEY / WANDB_IDENTITY_TOKEN_FILE and no netrc entry for
the W&B host) fails at start with one message instead of wandb's interactive prompt. W&B runs of one
sweep share `group` (the sweep dir name) and use the objective name as `job_type`; at the end the
results record's key numbers (downstream scores and FLOPs included) go to the run summary and a
one-row `wandb.Table` named `results`. `lmbench-board DIR --wandb` logs a whole sweep's leaderboard.

This module imports neither Lightning nor wandb at import time: `lmbench.config` imports its schema
before Hydra composes, and that must stay fast.
"""

from __future__ import annotations

import math
import netrc
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from pytorch_lightning.loggers import Logger

LOGGER_NAMES: tuple[str, ...] = ("csv", "wandb")
WANDB_MODES: tuple[str, ...] = ("offline", "online", "disabled")
_WANDB_MODE_ALIASES = {"dryrun": "offline", "run": "online"}
WANDB_LOGIN_HELP = ("W&B online mode needs a login: run `wandb login` or set WANDB_API_KEY, "
                    "or use logger.mode=offline")
TABLE_COLUMNS: tuple[str, ...] = (
    "objective", "backbone_kind", "backbone_family", "backbone_size", "parameters", "seed", "steps",
    "tokens_seen", "supervised_tokens", "train_loss", "val_loss", "wall_time_s", "status")
SCORE_PREFIX = "scores/"  # summary keys and extra table columns of downstream scores: scores/<task>/<mode>/<metric>


_open_wandb_loggers: list[Logger] = []  # built here, not finished yet (see finish_loggers)


class LoggerConfigError(ValueError):
    """The `logger` config cannot be honoured; the message names the key and allowed values."""


@dataclass
class LoggerConfig:
    """Where a run's metrics go. CSV (output_dir/logs/metrics.csv) is always written.

    name:      csv | wandb (wandb = CSV plus a Weights & Biases run).
    mode:      W&B mode: null (auto: WANDB_MODE, else disabled under CI, else offline) | offline |
               online | disabled.
    project, entity, tags, notes: W&B run metadata.
    group:     W&B group; null = the sweep dir name in a sweep (-m), none for a single run.
    job_type:  W&B job type; null = the objective name.
    log_model: upload the final checkpoints as W&B artifacts (online mode only).
    init_timeout: seconds wandb.init may wait for the W&B server before failing (online mode).
    """

    name: str = "csv"
    mode: Optional[str] = None
    project: str = "lmbench"
    entity: Optional[str] = None
    group: Optional[str] = None
    job_type: Optional[str] = None
    tags: list[str] = field(default_factory=list)
    notes: Optional[str] = None
    log_model: bool = False
    init_timeout: float = 60.0


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def resolve_wandb_mode(cfg: Any) -> str:
    """offline | online | disabled for `cfg` (a LoggerConfig or its DictConfig), by the rule above."""
    requested = getattr(cfg, "mode", None)
    key = "logger.mode"
    if not requested and os.environ.get("WANDB_MODE"):
        requested, key = os.environ["WANDB_MODE"], "WANDB_MODE"
    if not requested:
        return "disabled" if _env_flag("CI") else "offline"
    mode = _WANDB_MODE_ALIASES.get(str(requested).strip().lower(), str(requested).strip().lower())
    if mode not in WANDB_MODES:
        raise LoggerConfigError(f"{key}={requested!r} is unknown; allowed values: {' | '.join(WANDB_MODES)}")
    return mode


def wandb_host() -> str:
    """The W&B server's host[:port] (WANDB_BASE_URL, default api.wandb.ai)."""
    return urlsplit(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").netloc or "api.wandb.ai"


def netrc_path() -> Path:
    """The netrc file wandb reads: $NETRC, else ~/.netrc, else ~/_netrc."""
    if os.environ.get("NETRC"):
        return Path(os.environ["NETRC"]).expanduser()
    unix = Path("~/.netrc").expanduser()
    windows = Path("~/_netrc").expanduser()
    return windows if not unix.exists() and windows.exists() else unix


def wandb_login_available() -> bool:
    """True when wandb would find credentials without asking: env key or token file, or a netrc entry."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    try:
        auth = netrc.netrc(str(netrc_path())).authenticators(wandb_host())
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(auth and auth[2])


def check_logger_config(cfg: Any) -> str:
    """Validate the `logger` config before any work; return the W&B mode ("disabled" for csv).

    Raises LoggerConfigError for an unknown logger name or mode, log_model outside online mode
    (WandbLogger cannot upload checkpoints offline) and online mode without a W&B login.
    """
    name = str(getattr(cfg, "name", "csv"))
    if name not in LOGGER_NAMES:
        raise LoggerConfigError(f"logger={name!r} is unknown; allowed values: {' | '.join(LOGGER_NAMES)}")
    if name == "csv":
        return "disabled"
    mode = resolve_wandb_mode(cfg)
    if getattr(cfg, "log_model", False) and mode != "online":
        raise LoggerConfigError(f"logger.log_model=true needs logger.mode=online (the W&B mode is {mode!r}; "
                                "checkpoints cannot be uploaded offline); set logger.log_model=false or "
                                "logger.mode=online")
    if mode == "online" and not wandb_login_available():
        raise LoggerConfigError(WANDB_LOGIN_HELP)
    return mode


def sweep_group() -> Optional[str]:
    """The sweep dir name inside a job of `lmbench -m ...` (the W&B group of its runs), else None."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    return Path(str(HydraConfig.get().sweep.dir)).name or None


def build_loggers(cfg: Any, output_dir: Path, run_name: str, group: Optional[str] = None,
                  job_type: Optional[str] = None, config: Optional[Mapping[str, Any]] = None) -> list[Logger]:
    """The Lightning loggers of a run: [CSVLogger(output_dir/logs)] plus a WandbLogger for `logger=wandb`
    unless its mode resolves to disabled. `group`/`job_type` apply where the config leaves them null;
    `config` (the resolved run config) is stored as the W&B run config. Fails fast (LoggerConfigError)
    on a bad config or online mode without a login; nothing touches the network here."""
    mode = check_logger_config(cfg)  # before importing Lightning: a bad config fails in a blink
    from pytorch_lightning.loggers import CSVLogger

    loggers: list[Logger] = [CSVLogger(save_dir=str(output_dir), name="", version="logs")]
    if mode == "disabled":
        return loggers
    import wandb
    from pytorch_lightning.loggers import WandbLogger

    Path(output_dir).mkdir(parents=True, exist_ok=True)
    # mode goes to wandb.init, not WandbLogger(offline=True): that flag sets WANDB_MODE for the whole
    # process (leaking into later jobs of a sweep) and raises when combined with log_model.
    wandb_logger = WandbLogger(
        name=run_name, save_dir=str(output_dir), project=cfg.project, entity=cfg.entity,
        group=cfg.group or group, job_type=cfg.job_type or job_type, tags=list(cfg.tags or []) or None,
        notes=cfg.notes, log_model=bool(cfg.log_model), mode=mode, config=dict(config or {}),
        settings=wandb.Settings(init_timeout=float(cfg.init_timeout), console="off"))
    _open_wandb_loggers.append(wandb_logger)
    return [*loggers, wandb_logger]


def summary_metrics(record: Mapping[str, Any]) -> dict[str, Any]:
    """The key numbers of a results record (results.json) for a W&B run summary."""
    backbone = record.get("backbone") or {}
    params = (backbone.get("parameters") or {}).get("total")
    error = record.get("error") or {}
    values = {
        "status": record.get("status"), "objective": (record.get("objective") or {}).get("name"),
        "backbone_kind": backbone.get("kind"), "backbone_family": backbone.get("family"),
        "backbone_size": backbone.get("size"), "parameters": params, "seed": record.get("seed"),
        "steps": record.get("steps"), "tokens_seen": record.get("tokens_seen"),
        "supervised_tokens": record.get("supervised_tokens"), "train_loss": record.get("train_loss"),
        "val_loss": record.get("val_loss"), "wall_time_s": record.get("wall_time_s"),
        "error": error.get("type"), "flops": record.get("flops"),
    }
    for name, value in (record.get("scores") or {}).items():  # a list holds one score per fine-tuning seed
        numbers = [v for v in (value if isinstance(value, list) else [value])
                   if isinstance(v, (int, float)) and not isinstance(v, bool)]
        values[f"{SCORE_PREFIX}{name}"] = sum(numbers) / len(numbers) if numbers else None
    return {k: v for k, v in values.items() if v is not None and not (isinstance(v, float) and math.isnan(v))}


def finish_loggers(record: Mapping[str, Any], loggers: Optional[Sequence[Logger]] = None) -> None:
    """End W&B runs: summary metrics and a one-row `results` table from `record` (results.json), then
    finish (exit code 1 unless the record says completed). `loggers` default: every W&B run that
    `build_loggers` opened in this process and that is not finished yet, so the CLI can call this once
    per job, after its record is final, also when the run failed; the next job of a sweep then starts
    a W&B run of its own. CSV needs nothing: Lightning flushes it."""
    targets = list(_open_wandb_loggers if loggers is None else loggers)
    if not targets:
        return  # a CSV-only run: nothing to finish, and no reason to import Lightning or wandb
    import wandb
    from pytorch_lightning.loggers import WandbLogger

    for logger in targets:
        if not isinstance(logger, WandbLogger):
            continue
        if logger in _open_wandb_loggers:
            _open_wandb_loggers.remove(logger)

        run = logger.experiment  # starts the run if training never did (a failure before fit)
        summary = summary_metrics(record)
        run.summary.update(summary)
        columns = [*TABLE_COLUMNS, *sorted(k for k in summary if k.startswith(SCORE_PREFIX))]
        run.log({"results": wandb.Table(columns=columns, data=[[summary.get(c) for c in columns]])})
        run.finish(exit_code=0 if record.get("status") == "completed" else 1)
