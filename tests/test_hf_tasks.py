"""Hugging Face datasets as a task source, on local files only (HF_DATASETS_OFFLINE=1, a private cache):
packaged loaders (csv, json) give exactly the examples the file readers give, and save_to_disk folders
with ClassLabel ids are mapped back to label and tag names (IOB1 normalised to IOB2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmbench.tasks import TaskDataError, read_table
from lmbench.tasks.config import TaskConfig, TaskConfigError
from lmbench.tasks.loading import load_task

datasets = pytest.importorskip("datasets")


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    datasets.disable_progress_bars()


ROWS = {"train": [("a fine, quoted \"film\"", "pos"), ("dull", "neg"), ("great fun", "pos"), ("so bad", "neg")],
        "validation": [("not bad at all", "pos"), ("awful", "neg")], "test": [("lovely", "pos"), ("boring", "neg")]}


def write_csv(folder: Path) -> dict[str, str]:
    import csv

    files = {}
    for split, rows in ROWS.items():
        with open(folder / f"{split}.csv", "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["review", "stars"])
            writer.writerows(rows)
        files[split] = f"{split}.csv"
    return files


def hf_task(folder: Path, **overrides) -> TaskConfig:
    base = dict(type="classification", source="hf", data_root=str(folder), text_column="review",
                label_column="stars", modes=["probe"], hf_cache_dir=str(folder / "cache"))
    return TaskConfig(**{**base, **overrides})


def test_csv_loader_gives_the_examples_read_table_gives(tmp_path: Path) -> None:
    files = write_csv(tmp_path)
    task = load_task("reviews", hf_task(tmp_path, hf_name="csv", hf_data_files=files))
    for ours, split in (("train", "train"), ("dev", "validation"), ("test", "test")):
        assert getattr(task, ours) == read_table(tmp_path / files[split], "review", "stars")
    assert task.labels == ["neg", "pos"] and task.source == "task 'reviews' (hf csv)"


def test_json_loader_with_custom_split_names(tmp_path: Path) -> None:
    for split, rows in ROWS.items():
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps({"review": t, "stars": y}) + "\n" for t, y in rows))
    files = {"fit": "train.jsonl", "held": "validation.jsonl", "final": "test.jsonl"}
    task = load_task("j", hf_task(tmp_path, hf_name="json", hf_data_files=files, train="fit", dev="held",
                                  test="final"))
    assert task.test == read_table(tmp_path / "test.jsonl", "review", "stars")
    with pytest.raises(TaskDataError, match=r"no split 'validation' \(task dev\); splits present: \['final', 'fit', "):
        load_task("j", hf_task(tmp_path, hf_name="json", hf_data_files=files, train="fit", test="final"))


def test_saved_dataset_maps_class_label_ids_to_names(tmp_path: Path) -> None:
    features = datasets.Features({"sentence": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["negative", "positive"])})
    splits = {split: datasets.Dataset.from_dict({"sentence": [t for t, _ in rows],
                                                 "label": [int(y == "pos") for _, y in rows]}, features=features)
              for split, rows in ROWS.items()}
    datasets.DatasetDict(splits).save_to_disk(str(tmp_path / "saved"))
    task = load_task("s", hf_task(tmp_path, hf_name="saved", text_column="sentence", label_column="label"))
    assert [e.label for e in task.train] == ["positive", "negative", "positive", "negative"]
    assert task.dev[0].text == "not bad at all" and task.labels == ["negative", "positive"]
    with pytest.raises(TaskDataError, match=r"no column 'review' \(text_column\); columns present: \['sentence', 'lab"):
        load_task("s", hf_task(tmp_path, hf_name="saved"))


def test_hidden_test_labels_are_refused(tmp_path: Path) -> None:
    features = datasets.Features({"sentence": datasets.Value("string"), "label": datasets.ClassLabel(names=["a", "b"])})
    split = {"sentence": ["x", "y"], "label": [0, 1]}
    hidden = {"sentence": ["z"], "label": [-1]}
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(split, features=features),
                          "validation": datasets.Dataset.from_dict(split, features=features),
                          "test": datasets.Dataset.from_dict(hidden, features=features)}
                         ).save_to_disk(str(tmp_path / "g"))
    with pytest.raises(TaskDataError, match=r"label id -1 .*hidden label"):
        load_task("g", hf_task(tmp_path, hf_name="g", text_column="sentence", label_column="label"))


def test_saved_ner_dataset_with_iob1_tag_ids(tmp_path: Path) -> None:
    names = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    features = datasets.Features({"tokens": datasets.Sequence(datasets.Value("string")),
                                  "ner_tags": datasets.Sequence(datasets.ClassLabel(names=names))})
    data = {"tokens": [["Anna", "Berg", "saw", "Paris"], ["Oslo", "Rome"]], "ner_tags": [[2, 2, 0, 4], [4, 3]]}
    dd = datasets.DatasetDict({s: datasets.Dataset.from_dict(data, features=features)
                               for s in ("train", "validation", "test")})
    dd.save_to_disk(str(tmp_path / "ner"))
    cfg = TaskConfig(type="ner", source="hf", hf_name="ner", data_root=str(tmp_path), scheme="IOB1", modes=["probe"])
    task = load_task("n", cfg)
    assert task.train[0].tags == ("B-PER", "I-PER", "O", "B-LOC")  # IOB1 I- after O starts an entity
    assert task.train[1].tags == ("B-LOC", "B-LOC")  # B- only between two adjacent LOC entities
    assert task.labels == ["LOC", "PER"]


def test_hf_config_errors(tmp_path: Path) -> None:
    with pytest.raises(TaskConfigError, match=r"task\.x\.hf_name is unset"):
        load_task("x", hf_task(tmp_path))
    with pytest.raises(TaskConfigError, match=r"task\.x\.hf_data_files\.train: file .*missing\.csv' does not exist"):
        load_task("x", hf_task(tmp_path, hf_name="csv", hf_data_files={"train": "missing.csv"}))
