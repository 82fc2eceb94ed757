"""The `task/` config group: composing several tasks, the checks that run before any tokenizer work, and
loading splits from every file source (TSV / CSV / JSONL, CoNLL in IOB1 or IOB2, the real SST-2 and
CoNLL-2003 presets against their published counts)."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path

import pytest

from lmbench.config import compose_config
from lmbench.eval.finetune import FinetuneConfig
from lmbench.eval.probe import ProbeConfig
from lmbench.eval.runner import check_tasks
from lmbench.tasks import TaskDataError, TextExample, builtin_task, read_conll, read_table
from lmbench.tasks.config import (FinetuneSettings, PetSettings, ProbeSettings, TaskConfig, TaskConfigError,
                                  check_task_overrides, task_options)
from lmbench.tasks.loading import load_task


def compose(tmp_path: Path, *overrides: str):
    return compose_config([f"output_dir={tmp_path / 'run'}", *overrides])


def test_several_tasks_compose_each_under_its_name(tmp_path: Path) -> None:
    cfg = compose(tmp_path, "task=[sentiment,ner]", "data.builtin_seed=3", "task.ner.n_train=40")
    assert list(cfg.task) == ["sentiment", "ner"]
    assert cfg.task.sentiment.type == "classification" and cfg.task.ner.type == "ner"
    assert cfg.task.sentiment.world_seed == 3 and cfg.task.ner.world_seed == 3  # the pretraining corpus's world
    assert cfg.task.ner.n_train == 40 and cfg.task.sentiment.n_train == 256
    assert list(compose(tmp_path).task) == ["sentiment", "ner"]  # the default selection
    assert list(compose(tmp_path, "task=[topic,sst2,conll2003]").task) == ["topic", "sst2", "conll2003"]
    assert check_tasks(compose(tmp_path, "task=[]")) == []
    assert set(task_options()) >= {"sentiment", "topic", "ner", "sst2", "conll2003"}


def test_default_cheap_modes_and_heavy_modes_opt_in(tmp_path: Path) -> None:
    cfg = compose(tmp_path)
    for name in cfg.task:
        assert list(cfg.task[name].modes) == ["probe", "zeroshot"], name
    cfg = compose(tmp_path, "task.sentiment.modes=[finetune,pet,probe]", "task.sentiment.finetune.lrs=[0.001]")
    assert list(cfg.task.sentiment.modes) == ["finetune", "pet", "probe"]
    assert list(cfg.task.sentiment.finetune.lrs) == [0.001]


def test_mode_settings_mirror_the_eval_configs() -> None:
    """The typed schema repeats FinetuneConfig / ProbeConfig / PETConfig: same fields (device aside), same defaults."""
    from lmbench.eval.pet import PETConfig

    pairs = ((FinetuneSettings(), FinetuneConfig()), (ProbeSettings(), ProbeConfig()), (PetSettings(), PETConfig()))
    for settings, config in pairs:
        ours = dataclasses.asdict(settings)
        theirs = {k: v for k, v in dataclasses.asdict(config).items() if k != "device"}
        assert set(ours) == set(theirs)
        assert {k: tuple(v) if isinstance(v, list) else v for k, v in ours.items()} == theirs


def test_unknown_task_name_lists_the_presets(tmp_path: Path) -> None:
    with pytest.raises(TaskConfigError, match=r"unknown task\(s\) \['sentimnt'\]; allowed values: .*ner.*sentiment"):
        compose(tmp_path, "task=[sentimnt,ner]")
    with pytest.raises(TaskConfigError, match="allowed values: a, b"):
        check_task_overrides(["task=c"], options=["a", "b"])
    check_task_overrides(["task=[a, b]", "task.a.n_train=3", "other=1"], options=["a", "b"])  # no error


@pytest.mark.parametrize("overrides,message", [
    (["task.sentiment.modes=[probe,zero_shot]"], r"task\.sentiment\.modes has 'zero_shot'.*allowed values: finetune, "
                                                 r"probe, zeroshot, pet"),
    (["task.ner.modes=[pet]"], r"task\.ner\.modes has 'pet', which a ner task does not support; allowed values: "
                               r"finetune, probe, zeroshot"),
    (["task.sentiment.modes=[]"], r"task\.sentiment\.modes is empty"),
    (["task.sentiment.type=regression"], r"task\.sentiment\.type='regression'.*allowed values: classification, ner"),
    (["task.sentiment.source=web"], r"task\.sentiment\.source='web'.*allowed values: builtin, table, conll, hf"),
    (["task.sentiment.builtin=ner"], r"built-in set 'ner' is a ner task"),
    (["task.sentiment.templates=[\"{text} no slot here\"]"], r"task\.sentiment\.templates\[0\].*no \[MASK\] slot"),
    (["task.sentiment.templates=[\"{text} [MASK] {sentence}\"]"], r"task\.sentiment\.templates\[0\].*has fields"),
    (["task.ner.templates=[\"{sentence} is [MASK] .\"]"], r"task\.ner\.templates\[0\].*lacks \{span\}"),
    (["task.sentiment.finetune.lrs=[-1.0]", "task.sentiment.modes=[finetune]"], r"task\.sentiment\.finetune.*lrs"),
    (["task.sentiment.probe.pooling=max"], r"task\.sentiment\.probe.*allowed values: auto, first, last, mean"),
    (["task.sentiment.zeroshot.reduce=max"], r"zeroshot\.reduce='max'; allowed values: logsumexp, mean"),
    (["task.ner.scheme=BILOU"], r"task\.ner\.scheme='BILOU'; allowed values: IOB1, IOB2, BIOES"),
    (["task=[sst2]", "task.sst2.data_root=/nowhere"], r"task\.sst2\.train: file '/nowhere/sst2/train.tsv' does not"),
])
def test_config_errors_name_the_key_and_allowed_values(tmp_path: Path, overrides: list[str], message: str) -> None:
    with pytest.raises(TaskConfigError, match=message):
        check_tasks(compose(tmp_path, *overrides))


def test_bad_mode_stops_pretraining_before_tokenizer_work(tmp_path: Path) -> None:
    from lmbench.pretrain import run_pretraining
    from lmbench.results import empty_record

    cache = tmp_path / "cache"
    cfg = compose(tmp_path, "trainer=smoke", f"data.cache_dir={cache}", "task.ner.modes=[probe,pet]")
    with pytest.raises(TaskConfigError, match="allowed values: finetune, probe, zeroshot"):
        run_pretraining(cfg, empty_record())
    assert not cache.exists() or not any(cache.rglob("tokenizer.json"))  # no tokenizer was trained or cached


def test_verbalizer_must_name_exactly_the_labels(tmp_path: Path) -> None:
    cfg = compose(tmp_path, "+task.sentiment.verbalizer.good=[fine]")
    with pytest.raises(TaskConfigError, match=r"\['negative', 'positive'\]\); missing: \[\], unknown: \['good'\]"):
        check_tasks(cfg)
    ner = TaskConfig(type="ner", source="builtin", n_train=30, n_dev=10, n_test=10, modes=["zeroshot"],
                     templates=["{sentence} {span} is a [MASK] ."], verbalizer={"PER": ["person"]},
                     none_words=["thing"])
    with pytest.raises(TaskConfigError, match=r"entity types: \['LOC', 'MISC', 'ORG', 'PER'\]\); missing: \['LOC'"):
        load_task("ner", ner)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def table_task(tmp_path: Path, **overrides) -> TaskConfig:
    base = dict(type="classification", source="table", data_root=str(tmp_path), train="train.tsv", dev="dev.tsv",
                test="test.tsv", text_column="sentence", label_column="label", modes=["probe"])
    return TaskConfig(**{**base, **overrides})


def test_table_source_reads_files_relative_to_data_root(tmp_path: Path) -> None:
    rows = [(f"text number {i}", "abc"[i % 3]) for i in range(30)]
    write(tmp_path / "train.tsv", "sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows))
    write(tmp_path / "dev.tsv", "sentence\tlabel\nsome dev text\ta\nanother\tb\n")
    write(tmp_path / "test.tsv", "sentence\tlabel\nsome test text\tc\n")
    task = load_task("mine", table_task(tmp_path))
    assert task.train == read_table(tmp_path / "train.tsv", "sentence", "label")
    assert [e.label for e in task.dev] == ["a", "b"] and task.labels == ["a", "b", "c"]
    renamed = load_task("mine", table_task(tmp_path, label_names={"a": "x", "b": "y", "c": "z"}))
    assert renamed.labels == ["x", "y", "z"] and renamed.test == [TextExample("some test text", "z")]
    carved = load_task("mine", table_task(tmp_path, dev=None, dev_from_train=8, max_train=10, sample_seed=1))
    assert len(carved.dev) == 8 and len(carved.train) == 10
    assert not set(carved.dev) & set(carved.train) and set(carved.dev) | set(carved.train) <= set(task.train)
    again = load_task("mine", table_task(tmp_path, dev=None, dev_from_train=8, max_train=10, sample_seed=1))
    assert again.train == carved.train and again.dev == carved.dev  # seeded: every objective sees the same rows
    order = [task.train.index(e) for e in carved.train]
    assert order == sorted(order)  # subsets keep file order


def test_table_errors_name_file_columns_and_unseen_labels(tmp_path: Path) -> None:
    write(tmp_path / "train.tsv", "sentence\tlabel\nfirst\ta\nsecond\tb\n")
    write(tmp_path / "dev.tsv", "sentence\tlabel\nthird\ta\n")
    write(tmp_path / "test.tsv", "sentence\tlabel\nfourth\tc\n")
    with pytest.raises(TaskDataError, match=r"test label\(s\) \['c'\] never occur in the training data"):
        load_task("mine", table_task(tmp_path))
    with pytest.raises(TaskDataError, match=r"no column 'text'; columns present: \['sentence', 'label'\]"):
        load_task("mine", table_task(tmp_path, text_column="text"))
    with pytest.raises(TaskDataError, match=r"label\(s\) \['c'\] have no entry in label_names"):
        load_task("mine", table_task(tmp_path, label_names={"a": "x", "b": "y"}))
    with pytest.raises(TaskConfigError, match=r"task\.mine\.dev is unset.*dev_from_train"):
        load_task("mine", table_task(tmp_path, dev=None))
    with pytest.raises(TaskConfigError, match=r"task\.mine\.source='table' holds classification data"):
        load_task("mine", table_task(tmp_path, type="ner"))
    jsonl = write(tmp_path / "all.jsonl", "".join(json.dumps({"t": f"row {i}", "y": i % 2}) + "\n" for i in range(6)))
    task = load_task("j", table_task(tmp_path, train=jsonl.name, dev=jsonl.name, test=jsonl.name, text_column="t",
                                     label_column="y"))
    assert task.labels == ["0", "1"] and len(task.train) == 6


def test_conll_source_normalises_iob1_to_iob2(tmp_path: Path) -> None:
    iob1 = "-DOCSTART- -X- O\n\nAnna I-PER\nBerg I-PER\nsaw O\nI-LOC O\nParis I-LOC\nB-LOC B-LOC\n\nX I-ORG\ny O"
    for split in ("train", "dev", "test"):
        write(tmp_path / f"{split}.txt", iob1)
    cfg = TaskConfig(type="ner", source="conll", data_root=str(tmp_path), train="train.txt", dev="dev.txt",
                     test="test.txt", scheme="IOB1", modes=["probe"])
    task = load_task("toy", cfg)
    assert task.train[0].tags == ("B-PER", "I-PER", "O", "O", "B-LOC", "B-LOC")
    assert task.train[1].tags == ("B-ORG", "O") and task.labels == ["LOC", "ORG", "PER"]
    with pytest.raises(TaskDataError, match="not a IOB2 tag|is not a IOB2"):
        write(tmp_path / "bad.txt", "a S-PER\n")
        load_task("toy", dataclasses.replace(cfg, scheme="IOB2", train="bad.txt"))


def test_builtin_tasks_are_the_corpus_labelled_sets(tmp_path: Path) -> None:
    (sentiment, ner) = check_tasks(compose(tmp_path, "task.sentiment.n_train=50", "task.ner.n_test=30"))
    assert sentiment.train == builtin_task("sentiment", "train", 50, 0) and sentiment.labels == ["negative", "positive"]
    assert ner.test == builtin_task("ner", "test", 30, 0) and ner.labels == ["LOC", "MISC", "ORG", "PER"]
    assert not {e.text for e in sentiment.train} & {e.text for e in sentiment.test}


@pytest.mark.shared_data
def test_sst2_preset_loads_the_published_counts(tmp_path: Path, shared_data: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LMBENCH_DATA", str(shared_data))
    (task,) = check_tasks(compose(tmp_path, "task=[sst2]"))
    train = read_table(shared_data / "sst2" / "train.tsv", "sentence", "label")
    assert len(train) == 67_349 and len(task.test) == 872  # GLUE train / GLUE dev (labelled test is hidden)
    assert len(task.dev) == 872 and len(task.train) == 67_349 - 872
    assert Counter(e.label for e in task.train + task.dev) == {"positive": 37_569, "negative": 29_780}
    assert Counter(e.label for e in task.test) == {"positive": 444, "negative": 428}


@pytest.mark.shared_data
def test_conll2003_preset_loads_the_published_counts(tmp_path: Path, shared_data: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LMBENCH_DATA", str(shared_data))
    (task,) = check_tasks(compose(tmp_path, "task=[conll2003]"))
    assert task.sizes() == {"train": 14_041, "dev": 3_250, "test": 3_453}
    begins = Counter(t[2:] for e in task.train for t in e.tags if t.startswith("B-"))
    assert begins == {"PER": 6_600, "LOC": 7_140, "ORG": 6_321, "MISC": 3_438}
    assert task.test == read_conll(shared_data / "conll2003" / "test.txt")
