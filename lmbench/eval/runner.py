"""Run every configured downstream task in every configured mode on one model; return flat scores.

Both `lmbench` (after pretraining) and `lmbench-eval` (on any saved model) go through here, so a
score means the same thing wherever it was produced. Scores are flat, `"<task>/<mode>/<metric>"`, as
the leaderboard reads them (lmbench.board.collect); a list value holds one number per fine-tuning seed.

Metric names: the test score of the dev-selected setting is the bare metric (`acc`, `f1`); `dev_<m>` is
the best dev score of the grid and `dev_<m>_median` its median (finetune); zero-shot scores are means
over the prompt templates with `<m>_std` their standard deviation when there are several
(`_calibrated` with calibration).

Checks come in two stages, each before any expensive work: `check_tasks` (config and data: names,
modes, settings, files, columns, labels, templates, verbalizer keys) before pretraining;
`check_tasks_tokenizer` (verbalizer words the tokenizer can only spell as [UNK]) before any scoring.
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Callable

import torch
from omegaconf import DictConfig

from lmbench.eval.family import LoadedModel, load_scorer_model
from lmbench.eval.finetune import FinetuneConfig, classification_scores, finetune_classification, finetune_ner
from lmbench.eval.pet import PETConfig, fit_texts, pet_finetune
from lmbench.eval.probe import ProbeConfig, probe_classification, probe_ner
from lmbench.eval.prompts import (REDUCTIONS, PromptError, PromptTemplate, Verbalizer, content_free_log_prior,
                                  label_scores)
from lmbench.eval.zeroshot_ner import ZeroShotNERConfig, zeroshot_ner
from lmbench.tasks.config import TaskConfig, TaskConfigError, task_configs, validate_task
from lmbench.tasks.loading import TaskData, load_task

log = logging.getLogger(__name__)
Scores = dict[str, Any]  # metric -> float, or list of floats (one per fine-tuning seed)
SPAN_MODES = ("conlleval", "strict")


def _settings_error(key: str, exc: Exception) -> TaskConfigError:
    return TaskConfigError(f"{key}: {exc}")


def check_mode_settings(name: str, cfg: TaskConfig) -> None:
    """Validate the settings of every mode `cfg` runs (grids, templates, verbalizer shape) without data
    or a tokenizer; raises TaskConfigError naming task.<name>.<key>."""
    key = f"task.{name}"
    if "finetune" in cfg.modes:
        try:
            FinetuneConfig(**dataclasses.asdict(cfg.finetune))
        except (TypeError, ValueError) as exc:
            raise _settings_error(f"{key}.finetune", exc) from None
    if "probe" in cfg.modes:
        try:
            ProbeConfig(**dataclasses.asdict(cfg.probe))
        except (TypeError, ValueError) as exc:
            raise _settings_error(f"{key}.probe", exc) from None
    if "zeroshot" in cfg.modes:
        zs = cfg.zeroshot
        if zs.reduce not in REDUCTIONS:
            raise TaskConfigError(f"{key}.zeroshot.reduce={zs.reduce!r}; allowed values: {', '.join(REDUCTIONS)}")
        if zs.span_mode not in SPAN_MODES:
            raise TaskConfigError(f"{key}.zeroshot.span_mode={zs.span_mode!r}; allowed values: {', '.join(SPAN_MODES)}")
        for field, value in (("batch_size", zs.batch_size), ("max_span_len", zs.max_span_len),
                             ("max_length", zs.max_length),
                             ("max_examples", zs.max_examples or 1)):
            if value < 1:
                raise TaskConfigError(f"{key}.zeroshot.{field}={value}; allowed values: an integer >= 1")
    if "zeroshot" in cfg.modes and cfg.type == "ner":
        for i in range(len(cfg.templates)):
            try:
                _ner_config(cfg, i)
            except (TypeError, ValueError) as exc:
                raise _settings_error(f"{key}.templates[{i}] / zeroshot", exc) from None
    if any(m in ("zeroshot", "pet") for m in cfg.modes):
        for i, text in enumerate(cfg.templates):
            try:
                template = PromptTemplate(text)
            except PromptError as exc:
                raise _settings_error(f"{key}.templates[{i}]", exc) from None
            if cfg.type == "classification" and len(template.fields) != 1:
                raise TaskConfigError(f"{key}.templates[{i}]={text!r} has fields {list(template.fields)}; a "
                                      "classification template has one, {text} or {sentence}, where the example goes")
        try:
            Verbalizer(dict(cfg.verbalizer))
        except PromptError as exc:
            raise _settings_error(f"{key}.verbalizer", exc) from None
    if "pet" in cfg.modes:
        _pet_config(name, cfg)


def _ner_config(cfg: TaskConfig, template: int) -> ZeroShotNERConfig:
    """lmbench.eval.zeroshot_ner's config for template number `template` of a NER task."""
    zs = cfg.zeroshot
    return ZeroShotNERConfig(template=cfg.templates[template], none_words=list(cfg.none_words),
                             type_words={k: list(v) for k, v in cfg.verbalizer.items()}, max_span_len=zs.max_span_len,
                             batch_size=zs.batch_size, calibrate=zs.calibrate, mode=zs.span_mode,
                             max_sentences=zs.max_examples, span_filter=zs.span_filter)


def _pet_config(name: str, cfg: TaskConfig, device: str | None = None) -> PETConfig:
    try:
        return PETConfig(**dataclasses.asdict(cfg.pet), **({"device": device} if device else {}))
    except (TypeError, ValueError) as exc:
        raise _settings_error(f"task.{name}.pet", exc) from None


def _task_node(tasks: Any) -> Any:
    if isinstance(tasks, DictConfig) and ("objective" in tasks or "data" in tasks):  # the root config
        return tasks.get("task")
    return tasks


def check_tasks(tasks: DictConfig | Mapping[str, Any] | Sequence[TaskData] | None) -> list[TaskData]:
    """Check and load every task: config-level checks of all tasks first, then their data (files, columns,
    labels, verbalizer keys). `tasks`: the root config, `cfg.task`, or already loaded TaskData.

    Needs no tokenizer or model, so `lmbench` calls it before pretraining starts.
    """
    node = _task_node(tasks)
    if node is None:
        return []
    if isinstance(node, Sequence) and all(isinstance(t, TaskData) for t in node):
        return list(node)
    configs = task_configs(node)
    for name, cfg in configs.items():
        validate_task(name, cfg)
        check_mode_settings(name, cfg)
    return [load_task(name, cfg) for name, cfg in configs.items()]


def check_tasks_tokenizer(tasks: Sequence[TaskData], tokenizer: Any) -> None:
    """Raise TaskConfigError when a verbalizer word (or NER none word) can only be spelled as [UNK]."""
    for task in tasks:
        if not any(m in ("zeroshot", "pet") for m in task.config.modes):
            continue
        groups = {"verbalizer": dict(task.config.verbalizer)}
        if task.config.type == "ner":
            groups["none_words"] = {"none": list(task.config.none_words)}
        for key, words in groups.items():
            try:
                Verbalizer(words).check_tokenizer(tokenizer)
            except PromptError as exc:
                raise TaskConfigError(f"task.{task.name}.{key}: {exc}") from None


def _selected(result: dict[str, Any], metric: str, setting: str, extra: Sequence[str],
              median: bool) -> tuple[Scores, dict[str, Any]]:
    """Scores of a dev-selected grid: test `metric` of the best setting (a list over its seeds when it has
    several), `dev_<metric>`, optionally `dev_<metric>_median`, and `extra` test metrics."""
    best = result[f"best_{setting}"]
    rows = [r for r in result["grid"] if r[setting] == best]
    scores: Scores = {}
    for name in (metric, *extra):
        per_seed = [float(r["test"][name]) for r in rows]
        scores[name] = per_seed if len(per_seed) > 1 else per_seed[0]
    scores[f"dev_{metric}"] = float(result["dev_best"])
    if median:
        scores[f"dev_{metric}_median"] = float(result["dev_median"])
    return scores, result


def _finetune(task: TaskData, model_dir: Path, loaded: LoadedModel, device: str) -> tuple[Scores, dict[str, Any]]:
    cfg = FinetuneConfig(**dataclasses.asdict(task.config.finetune), device=device)
    if task.config.type == "ner":
        result = finetune_ner(model_dir, task.train, task.dev, task.test, cfg, source=task.source)
        return _selected(result, "f1", "lr", ("precision", "recall"), median=True)
    result = finetune_classification(model_dir, task.train, task.dev, task.test, cfg, source=task.source)
    return _selected(result, "acc", "lr", ("macro_f1",), median=True)


def _probe(task: TaskData, model_dir: Path, loaded: LoadedModel, device: str) -> tuple[Scores, dict[str, Any]]:
    cfg = ProbeConfig(**dataclasses.asdict(task.config.probe), device=device)
    if task.config.type == "ner":
        result = probe_ner(model_dir, task.train, task.dev, task.test, cfg, source=task.source)
        return _selected(result, "f1", "l2", ("precision", "recall"), median=False)
    result = probe_classification(model_dir, task.train, task.dev, task.test, cfg, source=task.source)
    return _selected(result, "acc", "l2", ("macro_f1",), median=False)


def _over_templates(per_template: list[dict[str, Any]], headline: Sequence[str],
                    others: Sequence[str]) -> Scores:
    """Means over templates of `headline` (with `<m>_std` when there are several) and `others` metrics."""
    scores: Scores = {}
    for name in (*headline, *others):
        values = [float(row[name]) for row in per_template if name in row]
        if values:
            scores[name] = statistics.fmean(values)
            if name in headline and len(values) > 1:  # the spread over templates
                scores[f"{name}_std"] = statistics.stdev(values)
    return scores


def _zeroshot(task: TaskData, model_dir: Path, loaded: LoadedModel, device: str) -> tuple[Scores, dict[str, Any]]:
    zs = task.config.zeroshot
    examples = task.test[:zs.max_examples] if zs.max_examples else task.test
    if task.config.type == "ner":
        return _zeroshot_ner(task, loaded, examples)
    verbalizer = Verbalizer(dict(task.config.verbalizer))
    gold = torch.tensor([verbalizer.labels.index(e.label) for e in examples])  # (N,)
    texts = [e.text for e in examples]
    n_labels = len(verbalizer.labels)
    per_template = []
    for text in task.config.templates:
        template = PromptTemplate(text)
        fitted = fit_texts(loaded, texts, template, verbalizer.words, zs.max_length)  # cut to the model's positions
        scores = label_scores(loaded, fitted, template, verbalizer, zs.reduce, zs.batch_size)  # (N, C)
        row: dict[str, Any] = {"template": text, **classification_scores(scores.argmax(-1), gold, n_labels)}
        if zs.calibrate:
            prior = content_free_log_prior(loaded, template, verbalizer, reduce=zs.reduce,
                                           batch_size=zs.batch_size)  # (C,)
            calibrated = classification_scores((scores - prior[None, :]).argmax(-1), gold, n_labels)
            row.update({f"{k}_calibrated": v for k, v in calibrated.items()})
        per_template.append(row)
    headline = ["acc", "acc_calibrated"] if zs.calibrate else ["acc"]
    others = ["macro_f1", "macro_f1_calibrated"] if zs.calibrate else ["macro_f1"]
    majority = Counter(e.label for e in task.train).most_common(1)[0][0]
    detail = {"templates": per_template, "labels": list(verbalizer.labels), "n_examples": len(examples),
              "test_majority": sum(e.label == majority for e in examples) / len(examples)}
    return _over_templates(per_template, headline, others), detail


def _zeroshot_ner(task: TaskData, loaded: LoadedModel, examples: list[Any]) -> tuple[Scores, dict[str, Any]]:
    per_template = []
    for i, text in enumerate(task.config.templates):
        cfg = _ner_config(task.config, i)
        result = zeroshot_ner(loaded, examples, cfg)
        per_template.append({"template": text, **{k: float(v) for k, v in result.items()
                                                  if isinstance(v, (int, float)) and not isinstance(v, bool)}})
    scores = _over_templates(per_template, ["f1"], ["precision", "recall"])
    return scores, {"templates": per_template, "n_examples": len(examples)}


def _pet(task: TaskData, model_dir: Path, loaded: LoadedModel, device: str) -> tuple[Scores, dict[str, Any]]:
    cfg = _pet_config(task.name, task.config, device)
    verbalizer = {k: list(v) for k, v in task.config.verbalizer.items()}
    result = pet_finetune(model_dir, task.train, task.dev, task.test, list(task.config.templates), verbalizer, cfg)
    scores: Scores = {}
    for key, name in PET_SCORES.items():
        if key in result:
            value = result[key]
            scores[name] = [float(v) for v in value] if isinstance(value, list) else float(value)
    return scores, result


PET_SCORES = {"test/accuracy": "acc", "test/macro_f1": "macro_f1", "dev/accuracy": "dev_acc"}  # lists per seed


MODE_RUNNERS: dict[str, Callable[[TaskData, Path, LoadedModel, str], tuple[Scores, dict[str, Any]]]] = {
    "finetune": _finetune, "probe": _probe, "zeroshot": _zeroshot, "pet": _pet}


def resolve_device(device: str) -> str:
    """"auto" -> cuda when available, else cpu; anything else as given."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def evaluate_tasks(model_dir: str | Path, tasks: Any, seed: int = 0, *, device: str = "auto",
                   details: dict[str, Any] | None = None, scores: Scores | None = None) -> Scores:
    """Evaluate the save_pretrained model in `model_dir` on `tasks` (see `check_tasks` for the forms it
    takes) and return flat scores {"<task>/<mode>/<metric>": float | list of floats}.

    Every task is loaded and checked (tokenizer included) before the first score. `seed` fixes torch's
    global RNG for the evaluation (each mode also seeds its own generators), without disturbing the
    caller's. `details` (if given) receives per task: sizes, source, and per mode the full result
    (grids, per-template and per-type scores, seconds). `scores` (if given) is filled as modes finish,
    so a caller keeps the finished ones when a later mode fails.
    """
    prepared = check_tasks(tasks)
    scores = {} if scores is None else scores
    details = {} if details is None else details
    if not prepared:
        return scores
    device = resolve_device(device)
    model_dir = Path(model_dir)
    loaded = load_scorer_model(model_dir, device=device)
    check_tasks_tokenizer(prepared, loaded.tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for task in prepared:
            info = details.setdefault(task.name, {"type": task.config.type, "source": task.source,
                                                  "sizes": task.sizes(), "modes": {}})
            for mode in task.config.modes:
                start = time.perf_counter()
                mode_scores, detail = MODE_RUNNERS[mode](task, model_dir, loaded, device)
                seconds = time.perf_counter() - start
                for metric, value in mode_scores.items():
                    scores[f"{task.name}/{mode}/{metric}"] = value
                info["modes"][mode] = {"seconds": round(seconds, 3), **_plain(detail)}
                log.info("%s/%s (%.1f s): %s", task.name, mode, seconds,
                         ", ".join(f"{k}={_show(v)}" for k, v in mode_scores.items()))
    return scores


def evaluate_into(record: dict[str, Any], model: Any, tokenizer: Any, tasks: Sequence[TaskData], seed: int = 0,
                  device: str = "auto") -> None:
    """Evaluate a just-trained model for `lmbench`, filling record["scores"] and record["eval"].

    Uses the saved model at record["model_dir"]; without one (save_model=false) the model is written to
    a temporary folder for the evaluation and removed afterwards (fine-tuning reloads it per grid point).
    """
    if not tasks:
        return
    start = time.perf_counter()
    scores: Scores = record.setdefault("scores", {})
    details: dict[str, Any] = {}
    record["eval"] = {"device": resolve_device(device), "seconds": None, "tasks": details}
    try:
        if record.get("model_dir"):
            evaluate_tasks(record["model_dir"], tasks, seed, device=device, details=details, scores=scores)
        else:
            with tempfile.TemporaryDirectory(prefix="lmbench-eval-model-") as tmp:
                model.save_pretrained(tmp)
                tokenizer.save_pretrained(tmp)
                evaluate_tasks(tmp, tasks, seed, device=device, details=details, scores=scores)
    finally:
        record["eval"]["seconds"] = round(time.perf_counter() - start, 3)


def _plain(value: Any) -> Any:
    """A JSON-ready copy: tuples to lists, tensors and numpy scalars to numbers."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    return value


def _show(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(f"{v:.3f}" for v in value) + "]"
    return f"{value:.3f}" if isinstance(value, float) else str(value)
