"""Hugging Face `datasets` as a downstream task source (`task.<name>.source: hf`).

Many labelled sets are published as Hub datasets with integer labels (ClassLabel) and tag-id sequences;
reading them through `datasets.load_dataset` and mapping ids back to names gives the same TextExample /
TokenExample lists the file readers give, so every mode evaluates them alike. `hf_name` is a Hub name
(with `hf_config`), a packaged loader such as "csv" or "json" with `hf_data_files`, or a local folder
written by `save_to_disk`. Nothing here forces the network: a local loader or folder never touches it,
and a Hub name fetches only when the user's environment allows (HF_DATASETS_OFFLINE=1 keeps it local).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmbench.tasks.readers import TaskDataError, TextExample, TokenExample
from lmbench.tasks.schemes import to_iob2

if TYPE_CHECKING:
    from lmbench.tasks.config import TaskConfig


def _local_saved(cfg: TaskConfig) -> Path | None:
    """The save_to_disk folder `hf_name` points to (relative to data_root), or None."""
    for base in (Path(cfg.data_root).expanduser(), Path.cwd()):
        path = base / Path(str(cfg.hf_name)).expanduser()
        if path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file()):
            return path
    return None


def open_dataset(cfg: TaskConfig) -> Any:
    """The DatasetDict of `cfg`: load_from_disk for a saved folder, else load_dataset(hf_name, hf_config,
    data_files=...) with data files resolved against data_root."""
    import datasets

    saved = _local_saved(cfg)
    where = f"hf_name={cfg.hf_name!r}"
    try:
        if saved is not None:
            ds = datasets.load_from_disk(str(saved))
        else:
            files = {k: str((Path(cfg.data_root).expanduser() / v).resolve()) for k, v in cfg.hf_data_files.items()}
            ds = datasets.load_dataset(cfg.hf_name, cfg.hf_config, data_files=files or None,
                                       cache_dir=cfg.hf_cache_dir)
    except (FileNotFoundError, ValueError, ConnectionError, OSError) as exc:
        raise TaskDataError(f"{where}: cannot load the dataset ({type(exc).__name__}: {exc}); give a local folder "
                            "written by save_to_disk, a loader (csv / json / parquet) with hf_data_files, or a "
                            "dataset name that is in your datasets cache") from None
    if not isinstance(ds, datasets.DatasetDict):
        raise TaskDataError(f"{where}: the dataset has no named splits (a single Dataset); save a DatasetDict "
                            "with train / validation / test splits")
    return ds


def _names(feature: Any) -> list[str] | None:
    """ClassLabel names of a feature (or of a Sequence / list feature's items), else None."""
    inner = getattr(feature, "feature", None)
    if inner is None and isinstance(feature, list) and feature:
        inner = feature[0]
    target = inner if inner is not None else feature
    names = getattr(target, "names", None)
    return list(names) if names else None


def _column(split: Any, column: str, where: str, key: str) -> list[Any]:
    if column not in split.column_names:
        raise TaskDataError(f"{where}: no column {column!r} ({key}); columns present: {split.column_names}")
    return split[column]


def _label(value: Any, names: list[str] | None, where: str, row: int) -> str:
    if names is not None and isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value < len(names):
            hint = " (-1 marks a hidden label, as in GLUE test sets: use another split as test)" if value == -1 else ""
            raise TaskDataError(f"{where} row {row}: label id {value} is not one of 0..{len(names) - 1}{hint}")
        return names[value]
    if isinstance(value, bool) or value is None or not isinstance(value, (str, int, float)):
        raise TaskDataError(f"{where} row {row}: label {value!r} is not a string or number")
    text = str(value).strip()
    if not text:
        raise TaskDataError(f"{where} row {row}: empty label")
    return text


def classification_split(split: Any, cfg: TaskConfig, where: str) -> list[TextExample]:
    """TextExamples from a Dataset with `text_column` and `label_column` (ClassLabel ids mapped to names)."""
    texts = _column(split, cfg.text_column, where, "text_column")
    labels = _column(split, cfg.label_column, where, "label_column")
    names = _names(split.features[cfg.label_column])
    out = []
    for row, (text, label) in enumerate(zip(texts, labels)):
        if not isinstance(text, str) or not text.strip():
            raise TaskDataError(f"{where} row {row}: empty or non-string text {text!r}")
        out.append(TextExample(text, _label(label, names, where, row)))
    return out


def ner_split(split: Any, cfg: TaskConfig, where: str) -> list[TokenExample]:
    """TokenExamples from a Dataset with `tokens_column` and `tags_column` (tag ids mapped to names),
    tags normalised from `scheme` to IOB2."""
    tokens = _column(split, cfg.tokens_column, where, "tokens_column")
    tags = _column(split, cfg.tags_column, where, "tags_column")
    names = _names(split.features[cfg.tags_column])
    out = []
    for row, (words, row_tags) in enumerate(zip(tokens, tags)):
        if len(words) != len(row_tags):
            raise TaskDataError(f"{where} row {row}: {len(words)} tokens but {len(row_tags)} tags")
        if not words:
            continue  # an empty sentence holds no entity; CoNLL readers drop them too
        named = [_label(t, names, where, row) for t in row_tags]
        try:
            out.append(TokenExample(tuple(str(w) for w in words), to_iob2(named, cfg.scheme)))
        except ValueError as exc:
            raise TaskDataError(f"{where} row {row}: {exc}") from None
    return out


def load_hf_splits(cfg: TaskConfig, splits: Mapping[str, str]) -> dict[str, list[TextExample] | list[TokenExample]]:
    """{our split: examples} for {our split: dataset split name}, e.g. {"dev": "validation"}."""
    ds = open_dataset(cfg)
    out: dict[str, Any] = {}
    for ours, theirs in splits.items():
        if theirs not in ds:
            raise TaskDataError(f"hf_name={cfg.hf_name!r}: no split {theirs!r} (task {ours}); splits present: "
                                f"{sorted(ds)}")
        where = f"hf_name={cfg.hf_name!r} split {theirs!r}"
        read = ner_split if cfg.type == "ner" else classification_split
        out[ours] = read(ds[theirs], cfg, where)
    return out

