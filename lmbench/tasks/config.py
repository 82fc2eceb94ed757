"""Downstream tasks as configs (the `task/` Hydra group): the typed schema and the checks that need no data,
tokenizer or model (lmbench.tasks.loading reads the splits).

`lmbench task=[sentiment,ner]` selects several task files at once; each lands under `task.<name>` and is
validated against `TaskConfig`. Everything a user can get wrong without a tokenizer (task type, source,
modes, missing files, columns, a dev label training never shows, a verbalizer that does not name the
task's labels) is checked here, before pretraining starts, so a typo costs seconds, not a training run.
This module stays free of torch and transformers imports: the root config schema imports it.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

from lmbench.tasks.readers import BUILTIN_TASKS
from lmbench.tasks.schemes import SCHEMES, scheme_name

TASK_TYPES: tuple[str, ...] = ("classification", "ner")
SOURCES: tuple[str, ...] = ("builtin", "table", "conll", "hf")
MODES: dict[str, tuple[str, ...]] = {"classification": ("finetune", "probe", "zeroshot", "pet"),
                                     "ner": ("finetune", "probe", "zeroshot")}
SOURCE_TYPES: dict[str, tuple[str, ...]] = {"builtin": TASK_TYPES, "table": ("classification",), "conll": ("ner",),
                                            "hf": TASK_TYPES}
BUILTIN_TYPES: dict[str, str] = {"sentiment": "classification", "topic": "classification", "ner": "ner"}
HF_SPLITS: dict[str, str] = {"train": "train", "dev": "validation", "test": "test"}
PROMPT_MODES: tuple[str, ...] = ("zeroshot", "pet")
SPLITS: tuple[str, ...] = ("train", "dev", "test")


class TaskConfigError(ValueError):
    """A task config cannot be evaluated as written; the message names the key (task.<name>.<key>) and
    the allowed values."""


@dataclass
class FinetuneSettings:
    """Full fine-tuning grid, as lmbench.eval.finetune.FinetuneConfig (same fields and defaults): every
    objective gets the same lrs x seeds, `epochs` each, selected on dev."""

    lrs: list[float] = field(default_factory=lambda: [1e-4, 3e-4, 1e-3])
    epochs: int = 3
    batch_size: int = 32
    max_length: int = 128
    seeds: list[int] = field(default_factory=lambda: [0])
    pooling: str = "auto"  # auto | first | last | mean
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1
    max_grad_norm: float = 1.0
    eval_batch_size: int = 128
    span_mode: str = "conlleval"  # conlleval | strict


@dataclass
class ProbeSettings:
    """Linear probe on frozen features, as lmbench.eval.probe.ProbeConfig (same fields and defaults)."""

    l2s: list[float] = field(default_factory=lambda: [1e-4, 1e-3, 1e-2, 1e-1])
    max_iter: int = 300
    batch_size: int = 64
    max_length: int = 128
    pooling: str = "auto"  # auto | first | last | mean
    span_mode: str = "conlleval"  # conlleval | strict


@dataclass
class ZeroshotSettings:
    """Zero-shot scoring with the task's `templates` and `verbalizer` on the test split.

    Every template is scored; the reported score is the mean over templates, with their standard
    deviation as the spread. calibrate: also report contextual calibration (classification: `_calibrated`
    keys; NER: passed to the zero-shot NER scorer). max_examples: score only the first N test examples.
    max_length (classification): texts are cut from the end so a prompt fits this many pieces (and the
    model's positions).
    max_span_len (NER): longest candidate span in words. span_mode (NER): conlleval | strict.
    span_filter (NER): cased | alnum | none, which spans are candidates (lmbench.eval.zeroshot_ner).
    """

    calibrate: bool = False
    reduce: str = "logsumexp"  # logsumexp | mean over a label's words
    batch_size: int = 64
    max_examples: Optional[int] = None
    max_length: int = 128
    max_span_len: int = 4
    span_mode: str = "conlleval"
    span_filter: str = "cased"


@dataclass
class PetSettings:
    """Prompt-based few-shot fine-tuning (classification only), as lmbench.eval.pet.PETConfig (same fields
    and defaults): `k` training examples per label, one run per seed, the task's first template."""

    k: int = 16
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    lr: float = 1e-3
    steps: int = 100
    batch_size: int = 8
    max_length: int = 128
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1
    max_grad_norm: float = 1.0
    eval_batch_size: int = 64


@dataclass
class TaskConfig:
    """One downstream task: its type, where its data comes from, and the modes that evaluate it.

    type:   classification (text -> one of any number of labels) | ner (tokens -> IOB2 tags).
    source: builtin (the generated corpus's labelled sets: `builtin` sentiment | topic | ner, drawn from
            world `world_seed`, `n_train` / `n_dev` / `n_test` examples) | table (TSV / CSV / JSONL files
            with `text_column` and `label_column`) | conll (CoNLL token files, `scheme` IOB1 | IOB2 | BIOES,
            normalised to IOB2) | hf (a Hugging Face dataset: `hf_name` with `hf_config` / `hf_data_files`,
            or a folder written by save_to_disk).
    train / dev / test: file paths (table, conll; relative to `data_root`) or split names (hf; default
            train / validation / test). dev_from_train: carve that many training examples (seeded by
            `sample_seed`) as dev, for sets without a labelled dev split (then `dev` must be unset).
    modes:  which evaluations run; classification: finetune | probe | zeroshot | pet; ner: finetune |
            probe | zeroshot. Each becomes `<task>/<mode>/<metric>` keys in results.json `scores`.
    templates / verbalizer: prompts with one [MASK] slot and label (or entity type) -> words, for
            zeroshot and pet. none_words: zero-shot NER words for "not an entity".
    label_names: raw label -> name (e.g. "0": negative), applied on load, before the verbalizer.
    max_train / max_dev / max_test: keep a seeded random subset of at most that many examples.
    """

    type: str = "classification"
    source: str = "builtin"
    modes: list[str] = field(default_factory=lambda: ["probe", "zeroshot"])
    # builtin
    builtin: Optional[str] = None  # sentiment | topic | ner; null: the task's name
    world_seed: int = 0
    n_train: int = 256
    n_dev: int = 128
    n_test: int = 256
    # files and hf
    data_root: str = "."
    train: Optional[str] = None
    dev: Optional[str] = None
    test: Optional[str] = None
    dev_from_train: int = 0
    format: Optional[str] = None  # tsv | csv | jsonl; null: from the file suffix
    text_column: str = "text"
    label_column: str = "label"
    has_header: Optional[bool] = None
    label_names: dict[str, str] = field(default_factory=dict)
    scheme: str = "IOB2"
    token_column: int = 0
    tag_column: int = -1
    doc_start: str = "-DOCSTART-"
    hf_name: Optional[str] = None
    hf_config: Optional[str] = None
    hf_data_files: dict[str, str] = field(default_factory=dict)
    hf_cache_dir: Optional[str] = None
    tokens_column: str = "tokens"
    tags_column: str = "ner_tags"
    # subsets
    max_train: Optional[int] = None
    max_dev: Optional[int] = None
    max_test: Optional[int] = None
    sample_seed: int = 0
    # prompts
    templates: list[str] = field(default_factory=list)
    verbalizer: dict[str, list[str]] = field(default_factory=dict)
    none_words: list[str] = field(default_factory=list)
    # modes
    finetune: FinetuneSettings = field(default_factory=FinetuneSettings)
    probe: ProbeSettings = field(default_factory=ProbeSettings)
    zeroshot: ZeroshotSettings = field(default_factory=ZeroshotSettings)
    pet: PetSettings = field(default_factory=PetSettings)


def task_configs(tasks: Mapping[str, Any] | DictConfig | None) -> dict[str, TaskConfig]:
    """`cfg.task` (typed or plain mapping) -> {name: TaskConfig}; unknown keys and wrong types raise
    TaskConfigError naming the key."""
    if tasks is None:
        return {}
    out: dict[str, TaskConfig] = {}
    for name in tasks:
        node = tasks[name]
        try:
            if isinstance(node, DictConfig):  # resolve in place: ${data.builtin_seed} points into the root
                node = OmegaConf.to_container(node, resolve=True)
            elif isinstance(node, TaskConfig):  # re-validated: nested settings may be given as plain dicts
                node = dataclasses.asdict(node)
            merged = OmegaConf.merge(OmegaConf.structured(TaskConfig), node)
            out[str(name)] = OmegaConf.to_object(merged)
        except Exception as exc:  # omegaconf's errors name the key and the expected type
            raise TaskConfigError(f"task.{name}: {exc}".strip()) from None
    return out


def _allowed(key: str, value: object, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise TaskConfigError(f"{key}={value!r} is not allowed; allowed values: {', '.join(allowed)}")


def resolve_path(root: str, path: str) -> Path:
    """`path` under `root` (absolute paths stay as they are)."""
    return (Path(root).expanduser() / Path(path).expanduser()).resolve()


def validate_task(name: str, cfg: TaskConfig) -> None:
    """Every check of one task config that needs neither data nor a tokenizer (raises TaskConfigError)."""
    key = f"task.{name}"
    _allowed(f"{key}.type", cfg.type, TASK_TYPES)
    _allowed(f"{key}.source", cfg.source, SOURCES)
    if cfg.type not in SOURCE_TYPES[cfg.source]:
        raise TaskConfigError(f"{key}.source={cfg.source!r} holds {' or '.join(SOURCE_TYPES[cfg.source])} data, "
                              f"but {key}.type={cfg.type!r}; allowed sources for {cfg.type}: "
                              f"{', '.join(s for s in SOURCES if cfg.type in SOURCE_TYPES[s])}")
    if not cfg.modes:
        raise TaskConfigError(f"{key}.modes is empty; allowed values for a {cfg.type} task: "
                              f"{', '.join(MODES[cfg.type])} (or leave the task out: task=[...])")
    for mode in cfg.modes:
        if mode not in MODES[cfg.type]:
            raise TaskConfigError(f"{key}.modes has {mode!r}, which a {cfg.type} task does not support; allowed "
                                  f"values: {', '.join(MODES[cfg.type])}")
    if len(set(cfg.modes)) != len(cfg.modes):
        raise TaskConfigError(f"{key}.modes={list(cfg.modes)} names a mode twice")
    for split in SPLITS:
        limit = getattr(cfg, f"max_{split}")
        if limit is not None and limit < 1:
            raise TaskConfigError(f"{key}.max_{split}={limit}; allowed values: null or an integer >= 1")
    if cfg.dev_from_train < 0:
        raise TaskConfigError(f"{key}.dev_from_train={cfg.dev_from_train}; allowed values: an integer >= 0")
    if cfg.source == "builtin":
        builtin = cfg.builtin or name
        _allowed(f"{key}.builtin", builtin, BUILTIN_TASKS)
        if BUILTIN_TYPES[builtin] != cfg.type:
            raise TaskConfigError(f"{key}: the built-in set {builtin!r} is a {BUILTIN_TYPES[builtin]} task, but "
                                  f"{key}.type={cfg.type!r}")
        for split in SPLITS:
            if getattr(cfg, f"n_{split}") < 1:
                raise TaskConfigError(f"{key}.n_{split}={getattr(cfg, f'n_{split}')}; allowed values: an integer >= 1")
    else:
        _check_splits_given(key, cfg)
    if cfg.type == "ner":
        try:
            scheme_name(cfg.scheme)
        except ValueError:
            raise TaskConfigError(f"{key}.scheme={cfg.scheme!r}; allowed values: {', '.join(SCHEMES)}") from None
    if any(m in PROMPT_MODES for m in cfg.modes):
        used = [m for m in cfg.modes if m in PROMPT_MODES]
        if not cfg.templates:
            raise TaskConfigError(f"{key}.templates is empty, but modes {used} need prompt templates with one "
                                  "[MASK] slot, e.g. \"{text} It was [MASK] .\"")
        if not cfg.verbalizer:
            raise TaskConfigError(f"{key}.verbalizer is empty, but modes {used} need words for every "
                                  f"{'label' if cfg.type == 'classification' else 'entity type'}, e.g. "
                                  "{positive: [great], negative: [terrible]}")
        if cfg.type == "ner" and not cfg.none_words:
            raise TaskConfigError(f"{key}.none_words is empty; zero-shot NER needs words for 'not an entity'")


def _check_splits_given(key: str, cfg: TaskConfig) -> None:
    """File and hf sources: train and test named, dev named or carved; files present."""
    if cfg.source == "hf" and not cfg.hf_name:
        raise TaskConfigError(f"{key}.hf_name is unset; give a dataset name (load_dataset), a loader such as "
                              "csv / json with hf_data_files, or a folder written by save_to_disk")
    if cfg.dev_from_train and cfg.dev:
        raise TaskConfigError(f"{key}.dev={cfg.dev!r} and {key}.dev_from_train={cfg.dev_from_train} both give a "
                              "dev split; unset one of them")
    names = split_names(cfg)
    for split in ("train", "test") if cfg.dev_from_train else SPLITS:
        if not names[split]:
            raise TaskConfigError(f"{key}.{split} is unset; a {cfg.source} task needs its {split} "
                                  f"{'split name' if cfg.source == 'hf' else 'file'}"
                                  + ("" if split != "dev" else f" (or {key}.dev_from_train=N)"))
    if cfg.source == "hf":
        files = {k: resolve_path(cfg.data_root, v) for k, v in cfg.hf_data_files.items()}
    else:
        files = {s: resolve_path(cfg.data_root, names[s]) for s in SPLITS if names[s]}
    for split, path in files.items():
        if not path.is_file():
            where = f"{key}.hf_data_files.{split}" if cfg.source == "hf" else f"{key}.{split}"
            raise TaskConfigError(f"{where}: file {str(path)!r} does not exist (data_root={cfg.data_root!r}; set "
                                  f"{key}.data_root or the LMBENCH_DATA environment variable)")


def split_names(cfg: TaskConfig) -> dict[str, Optional[str]]:
    """The file path or hf split name of each split (hf defaults: train / validation / test)."""
    names = {s: getattr(cfg, s) for s in SPLITS}
    if cfg.source == "hf":
        names = {s: names[s] or HF_SPLITS[s] for s in SPLITS}
    if cfg.dev_from_train:
        names["dev"] = None
    return names


def task_options() -> list[str]:
    """The task presets shipped in the `task/` config group (conf/task/*.yaml)."""
    from importlib import resources

    folder = resources.files("lmbench_conf") / "task"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def check_task_overrides(overrides: Sequence[str], options: Sequence[str] | None = None) -> None:
    """Raise TaskConfigError when a `task=...` override (a name, a list, or a sweep of lists) names a preset
    that does not exist, listing the presets (Hydra's own message for a list of options does not)."""
    options = list(options) if options is not None else task_options()
    if any(o.lstrip("+~").startswith("hydra.searchpath") for o in overrides):
        return  # task configs may come from the added search path: Hydra checks them
    for override in overrides:
        key, sep, value = override.partition("=")
        if not sep or key.lstrip("+~") != "task" or not re.fullmatch(r"[\[\]\w\-,\s]*", value):
            continue  # other keys, and sweep functions such as glob(...), are Hydra's to check
        unknown = [n for n in re.findall(r"[^\[\],\s]+", value) if n not in options and n != "null"]
        if unknown:
            raise TaskConfigError(f"task={value}: unknown task(s) {unknown}; allowed values: {', '.join(options)} "
                                  "(several at once: task=[sentiment,ner]; none: task=[])")
