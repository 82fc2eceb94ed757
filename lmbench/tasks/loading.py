"""Read a downstream task's train / dev / test splits from its source and check them against each other.

Evaluation must score every objective on the same examples, and a dev label the training set never
shows, or a verbalizer that misses a label, must stop a run before pretraining rather than after it.
So loading is deterministic (subsets and held-out dev drawn with `sample_seed`, file order kept), and
every split is checked the moment it is read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Optional, Union

from lmbench.tasks.conll import read_conll
from lmbench.tasks.config import (PROMPT_MODES, SPLITS, TaskConfig, TaskConfigError, resolve_path, split_names,
                                  validate_task)
from lmbench.tasks.readers import TaskDataError, TextExample, TokenExample, builtin_task, check_labels, read_table

Example = Union[TextExample, TokenExample]


@dataclass
class TaskData:
    """A task ready to evaluate: its validated config and its splits (labels checked against train)."""

    name: str
    config: TaskConfig
    train: list[Example]
    dev: list[Example]
    test: list[Example]
    source: str  # for error messages: where the data came from

    @property
    def labels(self) -> list[str]:
        """Classification: the sorted training labels. NER: the sorted entity types of the training tags."""
        if self.config.type == "ner":
            return sorted({t[2:] for e in self.train for t in e.tags if t != "O"})
        return sorted({e.label for e in self.train})

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "dev": len(self.dev), "test": len(self.test)}


def _subset(examples: list[Example], limit: Optional[int], seed: int) -> tuple[list[Example], list[Example]]:
    """(a seeded random subset of `limit` examples in file order, the rest); all when limit is None."""
    if limit is None or limit >= len(examples):
        return list(examples), []
    import torch

    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(seed))  # (N,)
    keep = set(order[:limit].tolist())
    return [e for i, e in enumerate(examples) if i in keep], [e for i, e in enumerate(examples) if i not in keep]


def _rename(examples: list[Example], names: Mapping[str, str], where: str) -> list[Example]:
    if not names:
        return examples
    unknown = sorted({e.label for e in examples} - set(names))
    if unknown:
        raise TaskDataError(f"{where}: label(s) {unknown} have no entry in label_names {dict(names)}")
    return [TextExample(e.text, names[e.label]) for e in examples]


def _read_files(cfg: TaskConfig, names: Mapping[str, Optional[str]]) -> dict[str, list[Example]]:
    out: dict[str, list[Example]] = {}
    for split, path in names.items():
        if path is None:
            continue
        full = resolve_path(cfg.data_root, path)
        if cfg.source == "table":
            out[split] = read_table(full, cfg.text_column, cfg.label_column, cfg.format, cfg.has_header)
        else:
            out[split] = read_conll(full, cfg.scheme, cfg.token_column, cfg.tag_column, cfg.doc_start)
    return out


def load_task(name: str, cfg: TaskConfig) -> TaskData:
    """Validate `cfg`, read its splits, and check them: every split non-empty, no dev / test label (or
    tag) that training never shows, and a verbalizer that names exactly the task's labels (or entity types).

    Order: read -> rename labels -> carve dev from train (dev_from_train) -> subsets (max_*), all seeded
    with `sample_seed`, so every objective is evaluated on the same examples.
    """
    validate_task(name, cfg)
    names = split_names(cfg)
    if cfg.source == "builtin":
        builtin = cfg.builtin or name
        splits = {s: builtin_task(builtin, s, getattr(cfg, f"n_{s}"), cfg.world_seed) for s in SPLITS}
        source = f"task {name!r} (built-in {builtin}, world {cfg.world_seed})"
    elif cfg.source == "hf":
        from lmbench.tasks.hf import load_hf_splits

        splits = load_hf_splits(cfg, {s: n for s, n in names.items() if n})
        source = f"task {name!r} (hf {cfg.hf_name})"
    else:
        splits = _read_files(cfg, names)
        source = f"task {name!r} ({', '.join(f'{s}={names[s]}' for s in SPLITS if names[s])})"
    if cfg.type == "classification":
        splits = {s: _rename(ex, cfg.label_names, f"{source} {s}") for s, ex in splits.items()}
    if cfg.dev_from_train:
        if cfg.dev_from_train >= len(splits["train"]):
            raise TaskConfigError(f"task.{name}.dev_from_train={cfg.dev_from_train} but train has only "
                                  f"{len(splits['train'])} examples")
        splits["dev"], splits["train"] = _subset(splits["train"], cfg.dev_from_train, cfg.sample_seed)
    for k, split in enumerate(SPLITS):
        splits[split], _ = _subset(splits[split], getattr(cfg, f"max_{split}"), cfg.sample_seed + k)
    task = TaskData(name, cfg, splits["train"], splits["dev"], splits["test"], source)
    check_task_data(task)
    return task


def check_task_data(task: TaskData) -> None:
    """Raise TaskDataError for an empty split or an unseen dev / test label, TaskConfigError for a
    verbalizer whose keys are not exactly the labels (classification) or entity types (ner)."""
    for split in SPLITS:
        if not getattr(task, split):
            raise TaskDataError(f"{task.source}: the {split} split is empty; every split needs examples")
    ner = task.config.type == "ner"

    def labels(examples: list[Example]) -> list[str]:
        return [t for e in examples for t in e.tags] if ner else [e.label for e in examples]

    train = labels(task.train) + (["O"] if ner else [])
    for split in ("dev", "test"):
        check_labels(train, labels(getattr(task, split)), split, task.source)
    if ner and not task.labels:
        raise TaskDataError(f"{task.source}: the train split has no entity tags (only 'O')")
    if any(m in PROMPT_MODES for m in task.config.modes):
        have, want = set(task.config.verbalizer), set(task.labels)
        if have != want:
            what = "entity types" if ner else "labels"
            missing, extra = sorted(want - have), sorted(have - want)
            raise TaskConfigError(f"task.{task.name}.verbalizer must have one entry per {what[:-1]} of the data "
                                  f"({what}: {sorted(want)}); missing: {missing}, unknown: {extra}"
                                  + ("; rename raw labels with label_names" if not ner else ""))
