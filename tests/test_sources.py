"""Corpus sources: text files (BOM, CRLF, bad bytes, folders), HF datasets from local files, config errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from lmbench.config import DataConfig
from lmbench.data.sources import (BuiltinSource, CorpusError, CorpusSource, HFDatasetSource, TextSource,
                                  make_source)

CONF_DATA = Path(__file__).resolve().parents[1] / "conf" / "data"


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# ----------------------------------------------------------------------------------------------- text


def test_text_bom_crlf_and_no_final_newline(tmp_path: Path) -> None:
    f = write(tmp_path / "c.txt", b"\xef\xbb\xbfHello world.\r\nSecond line\r\n\r\n\r\n  \t \r\nDoc two!")
    src = TextSource(f)
    assert list(src.iter_documents()) == ["Hello world.\nSecond line", "Doc two!"]
    assert isinstance(src, CorpusSource)


def test_text_blank_lines_split_documents(tmp_path: Path) -> None:
    f = write(tmp_path / "c.txt", "\n\nUn café.\nDeux.\n\n\nTrois\n\n".encode())
    assert list(TextSource(f).iter_documents()) == ["Un café.\nDeux.", "Trois"]


def test_text_non_utf8_names_path_and_line(tmp_path: Path) -> None:
    f = write(tmp_path / "latin.txt", b"fine line\n\nstill fine\ncaf\xe9 au lait\n")
    with pytest.raises(CorpusError, match=rf"{f}:4: not valid UTF-8 \(byte 0xe9"):
        list(TextSource(f).iter_documents())


def test_text_missing_and_empty(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.txt.*data\.path"):
        TextSource(tmp_path / "nope.txt")
    (tmp_path / "empty_dir").mkdir()
    write(tmp_path / "empty_dir" / "notes.md", b"not a txt file")
    with pytest.raises(CorpusError, match="no .txt files"):
        TextSource(tmp_path / "empty_dir")
    blank = write(tmp_path / "blank.txt", b"\n \r\n\t\n")
    with pytest.raises(CorpusError, match="empty corpus"):
        list(TextSource(blank).iter_documents())


def test_text_folder_sorted_recursive(tmp_path: Path) -> None:
    write(tmp_path / "d" / "b.txt", b"bee")
    write(tmp_path / "d" / "a.txt", b"ay\n\nay two")
    write(tmp_path / "d" / "sub" / "c.txt", b"sea")
    write(tmp_path / "d" / "skip.json", b"{}")
    src = TextSource(tmp_path / "d")
    assert [p.name for p in src.files] == ["a.txt", "b.txt", "c.txt"]
    assert list(src.iter_documents()) == ["ay", "ay two", "bee", "sea"]


def test_text_fingerprint_hashes_content_not_metadata(tmp_path: Path) -> None:
    f = write(tmp_path / "c.txt", b"the cat sat.")
    first = TextSource(f).fingerprint()
    assert TextSource(f).fingerprint() == first  # stable across instances
    stat = f.stat()
    f.write_bytes(b"the dog sat.")  # same size; restore the mtime: only the bytes differ
    os.utime(f, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert TextSource(f).fingerprint() != first


# ------------------------------------------------------------------------------------------------- hf


def test_hf_local_jsonl_file(tmp_path: Path) -> None:
    rows = [{"text": "first doc.", "id": 1}, {"text": "  ", "id": 2}, {"text": "second doc!", "id": 3}]
    f = write(tmp_path / "data.jsonl", "\n".join(json.dumps(r) for r in rows).encode())
    src = HFDatasetSource(str(f), split="train", text_column="text", cache_dir=tmp_path / "hf")
    assert list(src.iter_documents()) == ["first doc.", "second doc!"]  # blank rows skipped
    assert len(src.fingerprint()) == 64


def test_hf_local_folder_missing_column_and_split(tmp_path: Path) -> None:
    write(tmp_path / "ds" / "train.csv", b"sentence,label\nhello there,1\ngood bye,0\n")
    src = HFDatasetSource(str(tmp_path / "ds"), split="train", text_column="sentence", cache_dir=tmp_path / "hf")
    assert list(src.iter_documents()) == ["hello there", "good bye"]
    bad_col = HFDatasetSource(str(tmp_path / "ds"), text_column="text", cache_dir=tmp_path / "hf")
    with pytest.raises(CorpusError, match=r"data.hf_text_column='text'.*columns present: sentence, label"):
        list(bad_col.iter_documents())
    bad_split = HFDatasetSource(str(tmp_path / "ds"), split="test", text_column="sentence",
                                cache_dir=tmp_path / "hf")
    with pytest.raises(CorpusError, match=r"data.hf_split='test'.*available splits: train"):
        list(bad_split.iter_documents())


def test_hf_saved_to_disk_and_packaged_builder(tmp_path: Path) -> None:
    import datasets

    dd = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": ["a b c.", "d e."]}),
                               "validation": datasets.Dataset.from_dict({"text": ["v."]})})
    dd.save_to_disk(str(tmp_path / "saved"))
    src = HFDatasetSource(str(tmp_path / "saved"), split="validation")
    assert list(src.iter_documents()) == ["v."]
    f = write(tmp_path / "plain.txt", b"line one\nline two\n")
    packaged = HFDatasetSource("text", data_files={"train": str(f)}, cache_dir=tmp_path / "hf")
    assert list(packaged.iter_documents()) == ["line one", "line two"]
    same = HFDatasetSource("text", data_files={"train": str(f)}, cache_dir=tmp_path / "hf2")
    assert same.fingerprint() == packaged.fingerprint()  # content hash, not cache location


# ------------------------------------------------------------------------------------- builtin + config


def test_builtin_source_matches_corpus() -> None:
    corpus = pytest.importorskip("lmbench.corpus")
    if not hasattr(corpus, "generate_documents"):
        pytest.skip("lmbench.corpus has no generate_documents yet")
    src = BuiltinSource(5, seed=3)
    assert list(src.iter_documents()) == list(corpus.generate_documents(5, seed=3))
    assert src.fingerprint() == BuiltinSource(5, seed=3).fingerprint()
    assert len({src.fingerprint(), BuiltinSource(5, 4).fingerprint(), BuiltinSource(6, 3).fingerprint()}) == 3


def test_make_source_errors_name_keys(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match=r"data.source='web'.*builtin \| text \| hf"):
        make_source(DataConfig(source="web"))
    with pytest.raises(CorpusError, match="data.path is required"):
        make_source(DataConfig(source="text"))
    with pytest.raises(CorpusError, match="data.hf_name is required"):
        make_source(DataConfig(source="hf"))
    with pytest.raises(CorpusError, match="data.builtin_documents=0"):
        make_source(DataConfig(source="builtin", builtin_documents=0))
    f = write(tmp_path / "c.txt", b"x")
    assert isinstance(make_source(DataConfig(source="text", path=str(f))), TextSource)


@pytest.mark.parametrize("name", ["builtin", "text", "hf"])
def test_conf_data_presets_validate_against_schema(name: str) -> None:
    node = OmegaConf.load(CONF_DATA / f"{name}.yaml")
    cfg = OmegaConf.merge(OmegaConf.structured(DataConfig), node)  # unknown keys / wrong types raise here
    if name == "builtin":
        src = make_source(cfg)
        assert isinstance(src, BuiltinSource) and src.n_documents == cfg.builtin_documents
    else:
        with pytest.raises(CorpusError, match=r"data\.(path|hf_name) is required"):
            make_source(cfg)
