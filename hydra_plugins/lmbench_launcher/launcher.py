"""A sweep where one failing job cannot stop the others, and every job leaves a results.json.

Hydra 1.3's BasicSweeper composes every job of a batch before launching any (`validate_batch_is_legal`),
so one unknown option (`objective=mlm,broken,clm`) stops the whole sweep before mlm runs; its
BasicLauncher composes jobs one by one and lets a composition error escape, skipping the jobs after
it; and after a batch the sweeper raises the first failed job's error, hiding the others.

Here the launcher composes each job inside a try. A job that cannot be composed, or whose run
raises, is recorded in its own output dir (created if needed) as `results.json` with
`status: failed` and the error, and the launcher goes on with the next job. At the end the sweeper
raises one error listing every failed job, so the process exits non-zero with a summary.

Sweep values can also come from the config, `hydra.sweeper.params` (an experiment preset sets
`objective: mlm,clm,...` there); a command-line override of the same key replaces the preset's
values, and a key set to null drops a sweep the preset inherits. A preset that names an option
which does not exist (an objective plugin that is not installed) stops the sweep before any job
runs, with the preset and the installed choices named. When the sweep ends with failures, the Hydra
callbacks' `on_multirun_end` (the leaderboard) still runs before the error is raised, so the
finished jobs are ranked and the failed ones listed.

Both are selected in conf/config.yaml (`override hydra/launcher: lmbench`, `override
hydra/sweeper: lmbench`); their configs are conf/hydra/launcher/lmbench.yaml and
conf/hydra/sweeper/lmbench.yaml. This module is imported by Hydra's plugin scan at every start, so
it imports nothing heavy.
"""

from __future__ import annotations

import difflib
import logging
import re
import time
from pathlib import Path
from typing import Any, List, Optional, Sequence

import hydra._internal.core_plugins.basic_sweeper as basic_sweeper
import hydra.plugins.launcher as hydra_launcher
from hydra.core import utils as hydra_utils
from hydra.errors import CompactHydraException, MissingConfigException
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

log = logging.getLogger(__name__)

JobReturn = hydra_utils.JobReturn
JobStatus = hydra_utils.JobStatus


class SweepFailedError(CompactHydraException):
    """Raised after a sweep in which at least one job failed; Hydra prints the message and exits 1."""


class PresetSweepError(CompactHydraException):
    """`hydra.sweeper.params` (an experiment preset's sweep) names an option that does not exist."""


def error_message(exc: BaseException) -> str:
    """The message a user needs: Hydra's composition message plus its OmegaConf cause, and a
    "did you mean" for an unknown option of a config group."""
    message = str(exc)
    if isinstance(exc.__cause__, OmegaConfBaseException):
        message = f"{message}\n{exc.__cause__}"
    if isinstance(exc, MissingConfigException) and exc.options and exc.missing_cfg_file:
        wanted = exc.missing_cfg_file.rsplit("/", 1)[-1]
        close = difflib.get_close_matches(wanted, list(exc.options), n=3)
        hint = f"did you mean {' or '.join(repr(c) for c in close)}?" if close else "no close match"
        group = exc.missing_cfg_file.rsplit("/", 1)[0]
        first, _, rest = message.partition("\n")
        message = f"{first} (unknown {group} {wanted!r}; {hint})\n{rest}".rstrip()
    return message


def varying_overrides(job_overrides: Sequence[Sequence[str]]) -> list[set[str]]:
    """For each job, the overrides that are not shared by every job (what tells the jobs apart)."""
    shared = set(job_overrides[0]).intersection(*map(set, job_overrides[1:])) if len(job_overrides) > 1 else set()
    return [{o for o in overrides if o not in shared and not o.startswith("hydra.")} for overrides in job_overrides]


def failed_job_dir(sweep_dir: Path, idx: int, overrides: Sequence[str], varying: set[str]) -> Path:
    """Output dir for a job whose config could not be composed (so its `hydra.sweep.subdir` cannot be
    resolved): `<idx>_<the values that tell it apart>_failed`."""
    values = [o.split("=", 1)[-1] for o in overrides if o in varying]
    label = re.sub(r"[^A-Za-z0-9._-]+", "-", "_".join(values)).strip("-_")[:80]
    return sweep_dir / (f"{idx}_{label}_failed" if label else f"{idx}_failed")


def record_failure(output_dir: Path, overrides: Sequence[str], exc: BaseException, stage: str) -> None:
    """Write output_dir/results.json with status failed (and .hydra/overrides.yaml when absent)."""
    from lmbench.results import empty_record, now_iso, write_results  # light module, lazily: plugin scan

    output_dir.mkdir(parents=True, exist_ok=True)
    overrides_file = output_dir / ".hydra" / "overrides.yaml"
    if not overrides_file.exists():
        overrides_file.parent.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create(list(overrides)), overrides_file)
    record = empty_record()
    values = dict(o.split("=", 1) for o in overrides if "=" in o)
    record["objective"]["name"] = values.get("objective")
    if values.get("seed", "").lstrip("-").isdigit():
        record["seed"] = int(values["seed"])
    record.update(status="failed", finished_at=now_iso(),
                  error={"type": type(exc).__name__, "message": error_message(exc), "stage": stage,
                         "traceback": None})
    write_results(output_dir, record)


def recorded_status(output_dir: Path) -> Optional[str]:
    """The status in output_dir/results.json, or None when there is no readable record."""
    from lmbench.results import RESULTS_FILE, read_results

    try:
        return read_results(output_dir / RESULTS_FILE).get("status")
    except (OSError, ValueError):
        return None


class LmbenchLauncher(hydra_launcher.Launcher):
    """Runs the jobs of a batch one after another in this process; a failing job is recorded, not fatal."""

    def __init__(self) -> None:
        super().__init__()
        self.config: Optional[DictConfig] = None
        self.task_function: Optional[TaskFunction] = None
        self.hydra_context: Optional[HydraContext] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        """Compose and run every job; return one JobReturn each (FAILED ones carry their exception)."""
        hydra_utils.setup_globals()
        assert self.config is not None and self.hydra_context is not None and self.task_function is not None
        hydra_utils.configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        log.info(f"Launching {len(job_overrides)} jobs locally")
        varying = varying_overrides(job_overrides)
        runs: List[JobReturn] = []
        for k, overrides in enumerate(job_overrides):
            idx = initial_job_idx + k
            log.info(f"\t#{idx} : {' '.join(hydra_utils.filter_overrides(overrides))}")
            ret = self._run_one(idx, list(overrides), sweep_dir, varying[k])
            runs.append(ret)
            hydra_utils.configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
            if ret.status == JobStatus.FAILED:
                first_line = str(ret._return_value).strip().split("\n", 1)[0]
                log.error(f"#{idx} failed ({type(ret._return_value).__name__}: {first_line}); "
                          f"recorded in {ret.working_dir}; continuing with the remaining jobs")
        return runs

    def _run_one(self, idx: int, overrides: list[str], sweep_dir: Path, varying: set[str]) -> JobReturn:
        assert self.config is not None and self.hydra_context is not None and self.task_function is not None
        try:
            sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = idx
                sweep_config.hydra.job.num = idx
        except Exception as exc:  # unknown option/key, wrong type: this job only
            return self._failed(failed_job_dir(sweep_dir, idx, overrides, varying), overrides, exc, "compose")
        try:
            ret = hydra_utils.run_job(hydra_context=self.hydra_context, task_function=self.task_function,
                                      config=sweep_config, job_dir_key="hydra.sweep.dir",
                                      job_subdir_key="hydra.sweep.subdir")
        except Exception as exc:  # run_job's own set-up failed (output dir, an interpolation in subdir)
            return self._failed(self._job_dir(sweep_config, sweep_dir, idx, overrides, varying), overrides, exc,
                                "setup")
        if ret.status == JobStatus.FAILED:
            output_dir = Path(str(ret.hydra_cfg.hydra.runtime.output_dir)) if ret.hydra_cfg else None
            ret.working_dir = str(output_dir) if output_dir else ret.working_dir
            if output_dir is not None and recorded_status(output_dir) != "failed":
                try:  # the task function normally records its failure itself; make sure
                    record_failure(output_dir, overrides, ret._return_value, "run")
                except OSError as exc:
                    log.error(f"#{idx}: cannot write results.json in {output_dir}: {exc}")
        return ret

    @staticmethod
    def _job_dir(sweep_config: DictConfig, sweep_dir: Path, idx: int, overrides: list[str],
                 varying: set[str]) -> Path:
        try:
            return Path(str(sweep_config.hydra.sweep.dir)) / str(sweep_config.hydra.sweep.subdir)
        except Exception:
            return failed_job_dir(sweep_dir, idx, overrides, varying)

    @staticmethod
    def _failed(output_dir: Path, overrides: list[str], exc: Exception, stage: str) -> JobReturn:
        try:
            record_failure(output_dir, overrides, exc, stage)
        except OSError as write_exc:
            log.error(f"cannot write results.json in {output_dir}: {write_exc}")
        return JobReturn(overrides=overrides, working_dir=str(output_dir), status=JobStatus.FAILED,
                         _return_value=exc)


class LmbenchSweeper(basic_sweeper.BasicSweeper):
    """Hydra's basic sweeper (same grammar, `max_batch_size`, `params`) that runs every job even when
    some fail, then raises one `SweepFailedError` listing them all."""

    def __init__(self, max_batch_size: Optional[int], params: Optional[dict[str, Any]] = None) -> None:
        # BasicSweeper.__init__ calls super(BasicSweeper, self) through its module's global name, which
        # Hydra's plugin scan rebinds by re-executing that module: set its fields here instead, so that
        # importing this module before the scan (tests, notebooks) cannot break the sweeper.
        self.overrides: Optional[Sequence[Sequence[Sequence[str]]]] = None
        self.batch_index = 0
        self.max_batch_size = max_batch_size
        self.params = params or {}
        self.hydra_context: Optional[HydraContext] = None
        self.config: Optional[DictConfig] = None
        self.launcher: Optional[hydra_launcher.Launcher] = None

    def _parse_config(self) -> List[str]:
        """`hydra.sweeper.params` as overrides; a key set to null is dropped (a preset that extends another
        can remove a sweep it inherits: `objective: null`)."""
        return [f"{k}={v}" for k, v in (self.params or {}).items() if v is not None]

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        """Skipped for the lmbench launcher, which composes each job itself and records one that cannot
        be; other launchers (joblib, submitit) compose in bulk, so their batches are checked up front."""
        if not isinstance(self.launcher, LmbenchLauncher):
            super().validate_batch_is_legal(batch)

    def sweep(self, arguments: List[str]) -> Any:
        assert self.config is not None and self.launcher is not None and self.hydra_context is not None
        parser = basic_sweeper.OverridesParser.create(config_loader=self.hydra_context.config_loader)
        check_preset_sweep(parser.parse_overrides(self._parse_config()), self.hydra_context.config_loader,
                           preset_name(self.config))
        params_conf = self._parse_config()
        params_conf.extend(arguments)  # split_arguments keeps the last value of a key: the command line wins
        self.overrides = self.split_arguments(parser.parse_overrides(params_conf), self.max_batch_size)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")

        returns: List[Sequence[JobReturn]] = []
        initial_job_idx = 0
        tic = time.perf_counter()
        while not self.is_done():
            batch = self.get_job_batch()
            self.validate_batch_is_legal(batch)  # other launchers only: they cannot record a job that fails to compose
            returns.append(self.launcher.launch(batch, initial_job_idx=initial_job_idx))
            initial_job_idx += len(batch)
        jobs = [r for batch_returns in returns for r in batch_returns]
        failed = [(k, r) for k, r in enumerate(jobs) if r.status != JobStatus.COMPLETED]
        log.info(f"Sweep finished in {time.perf_counter() - tic:.1f} s: {len(jobs) - len(failed)} of "
                 f"{len(jobs)} jobs completed")
        if failed:
            # Hydra calls on_multirun_end only after a sweep that returns; the leaderboard must also
            # list the finished and failed jobs of one that did not.
            self.hydra_context.callbacks.on_multirun_end(config=self.config)
            raise SweepFailedError(sweep_summary(jobs, failed, sweep_dir))
        return returns


def preset_name(config: DictConfig) -> str:
    """Where `hydra.sweeper.params` came from, for messages: `experiment=<name> (experiment/<name>.yaml)`."""
    choice = OmegaConf.select(config, "hydra.runtime.choices.experiment", default=None)
    return f"experiment={choice} (experiment/{choice}.yaml)" if choice else "hydra.sweeper.params"


def check_preset_sweep(overrides: Sequence[Any], config_loader: Any, source: str) -> None:
    """Raise PresetSweepError when a config-group sweep in `hydra.sweeper.params` names an option that does
    not exist, so an experiment that cannot run as written stops before any job; for `objective` the
    message comes from lmbench's plugin registry (installed objectives, broken plugins, did-you-mean)."""
    for override in overrides:
        group = override.get_key_element()
        options = config_loader.get_group_options(group)
        if not options or override.is_sweep_override() and not override.is_discrete_sweep():
            continue  # a plain key (trainer.optim.lr) or a range/interval: nothing to look up
        values = list(override.sweep_string_iterator()) if override.is_sweep_override() else \
            [override.get_value_element_as_str()]
        missing = [v for v in values if v not in options]
        if not missing:
            continue
        detail = f"available {group} options: {', '.join(sorted(options))}"
        if group == "objective":
            from lmbench.objectives.registry import ObjectiveRegistryError, default_registry

            try:
                default_registry().get(missing[0])
            except ObjectiveRegistryError as exc:
                detail = f"{exc}; install the package that provides it, or"
            else:
                detail = f"available {group} options: {', '.join(sorted(options))};"
            detail += " remove it from the preset's hydra.sweeper.params.objective"
        raise PresetSweepError(f"{source} sweeps {group}={','.join(values)}, but {', '.join(map(repr, missing))} "
                               f"{'is' if len(missing) == 1 else 'are'} not available: {detail}. "
                               "Nothing was run.")


def sweep_summary(jobs: Sequence[JobReturn], failed: Sequence[tuple[int, JobReturn]], sweep_dir: Path) -> str:
    """`N of M sweep jobs failed`, then one line per failed job: its distinguishing overrides, where
    its results.json is, and the first line of its error."""
    varying = varying_overrides([list(j.overrides or []) for j in jobs]) if jobs else []
    lines = [f"{len(failed)} of {len(jobs)} sweep jobs failed (each has results.json with status failed; "
             f"the others completed) in {sweep_dir}:"]
    for k, ret in failed:
        exc = ret._return_value
        what = " ".join(o for o in (ret.overrides or []) if o in varying[k]) or " ".join(ret.overrides or [])
        message = error_message(exc).strip().split("\n", 1)[0] if isinstance(exc, BaseException) else str(exc)
        lines.append(f"  #{k} {what} -> {job_dir(ret)}: {type(exc).__name__}: {message}")
    return "\n".join(lines)


def job_dir(ret: JobReturn) -> str:
    """The job's output dir: other launchers (joblib) report the process's working dir instead."""
    output_dir = OmegaConf.select(ret.hydra_cfg, "hydra.runtime.output_dir", default=None) if ret.hydra_cfg else None
    return str(output_dir or ret.working_dir)
