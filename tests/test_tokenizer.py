"""The shared tokenizer: fixed special ids, sentinels at the top, fill-mask ready, cached atomically."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

import lmbench.data.tokenizer as tokmod
from lmbench.config import TokenizerConfig
from lmbench.data.sources import TextSource
from lmbench.data.tokenizer import (SENTINELS, SPECIAL_TOKENS, TokenizerError, atomic_cache_dir,
                                    load_or_train_tokenizer, tokenizer_hash, train_tokenizer)
from lmbench.objectives.base import TokenInfo

VOCAB = 300


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> TextSource:
    """About 190 kB of the built-in corpus as a text file (or a small fixed text if it is unavailable)."""
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    try:
        from lmbench.corpus import generate_documents
        docs = list(generate_documents(150, seed=0))
    except ImportError:
        docs = [f"Document {i}. The quick brown fox jumps over the lazy dog! Is it {i}?" for i in range(2000)]
    path.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    return TextSource(path)


@pytest.fixture(scope="module")
def trained(corpus: TextSource, tmp_path_factory: pytest.TempPathFactory) -> dict[str, PreTrainedTokenizerFast]:
    cache = tmp_path_factory.mktemp("cache")
    return {kind: load_or_train_tokenizer(TokenizerConfig(type=kind, vocab_size=VOCAB), corpus, cache)[0]
            for kind in ("wordpiece", "bpe", "unigram")}


@pytest.mark.parametrize("kind", ["wordpiece", "bpe", "unigram"])
def test_special_ids_fixed_and_sentinels_at_top(trained: dict, kind: str) -> None:
    tok = trained[kind]
    assert tok.convert_tokens_to_ids(list(SPECIAL_TOKENS)) == list(range(7))
    n = len(tok)
    assert tok.convert_tokens_to_ids(["[NLU]", "[NLG]", "[S2S]"]) == [7, 8, 9]  # UL2's modes, by default
    assert VOCAB + 10 - 10 <= n - 100 <= VOCAB + 10  # the trainer may stop a few tokens short, never above
    assert tok.convert_tokens_to_ids(list(SENTINELS)) == [n - 1 - k for k in range(100)]
    info = TokenInfo.from_tokenizer(tok)
    assert (info.pad_id, info.unk_id, info.cls_id, info.sep_id, info.mask_id, info.bos_id, info.eos_id) == \
        (0, 1, 2, 3, 4, 5, 6)
    assert info.vocab_size == n and info.sentinel_ids[0] == n - 1 and info.sentinel_ids[-1] == n - 100
    assert set(range(10)) | set(range(n - 100, n)) == set(info.special_ids)
    assert len(info.sentence_end_ids) == 3
    pieces = tok.convert_ids_to_tokens(tok("Stop. Go! Why?", add_special_tokens=False)["input_ids"])
    assert [p for p in pieces if p in (".", "!", "?")] == [".", "!", "?"]  # sentence ends are own tokens


@pytest.mark.parametrize("kind", ["wordpiece", "bpe", "unigram"])
def test_cls_sep_templates(trained: dict, kind: str) -> None:
    tok = trained[kind]
    single = tok("the city is large.")["input_ids"]
    assert single[0] == 2 and single[-1] == 3 and 2 not in single[1:-1] and 3 not in single[1:-1]
    pair = tok("a city.", "a club.", return_token_type_ids=True)  # not returned by default: T5/BART reject them
    ids, types = pair["input_ids"], pair["token_type_ids"]
    seps = [i for i, t in enumerate(ids) if t == 3]
    assert ids[0] == 2 and len(seps) == 2 and seps[1] == len(ids) - 1
    assert set(types[:seps[0] + 1]) == {0} and set(types[seps[0] + 1:]) == {1}
    assert tok("the [MASK] sat.", add_special_tokens=False)["input_ids"].count(4) == 1


def test_fill_mask_pipeline_and_transformers_round_trip(trained: dict, tmp_path: Path) -> None:
    from transformers import BertConfig, BertForMaskedLM, pipeline

    tok = trained["wordpiece"]
    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1,
                                       num_attention_heads=2, intermediate_size=64, pad_token_id=0))
    fill = pipeline("fill-mask", model=model, tokenizer=tok, device=-1)
    out = fill("the club is based in [MASK].", top_k=3)
    assert len(out) == 3 and all(0 <= r["token"] < len(tok) and "[MASK]" not in r["sequence"] for r in out)
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(str(tmp_path))
    assert tokenizer_hash(again) == tokenizer_hash(tok) and again.mask_token_id == 4 and len(again) == len(tok)


def test_cache_hit_loads_without_retraining(corpus: TextSource, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real_train = tokmod.train_tokenizer
    monkeypatch.setattr(tokmod, "train_tokenizer", lambda cfg, src: calls.append(1) or real_train(cfg, src))
    cfg = TokenizerConfig(type="wordpiece", vocab_size=VOCAB)
    tok1, hash1 = load_or_train_tokenizer(cfg, corpus, tmp_path)
    tok2, hash2 = load_or_train_tokenizer(cfg, corpus, tmp_path)
    assert calls == [1] and hash1 == hash2 == tokenizer_hash(tok2)
    assert tok1.backend_tokenizer.to_str() == tok2.backend_tokenizer.to_str()
    entries = list((tmp_path / "tokenizers").iterdir())
    assert len(entries) == 1 and not entries[0].name.startswith(".tmp")
    meta = json.loads((entries[0] / "lmbench_tokenizer.json").read_text())
    assert meta["source_fingerprint"] == corpus.fingerprint() and meta["hash"] == hash1
    _, hash3 = load_or_train_tokenizer(TokenizerConfig(type="wordpiece", vocab_size=VOCAB + 50), corpus, tmp_path)
    assert calls == [1, 1] and hash3 != hash1  # another config is another cache entry


def test_failed_training_leaves_no_cache(corpus: TextSource, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(self: PreTrainedTokenizerFast, *args: object, **kwargs: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(PreTrainedTokenizerFast, "save_pretrained", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        load_or_train_tokenizer(TokenizerConfig(vocab_size=VOCAB), corpus, tmp_path)
    assert list((tmp_path / "tokenizers").iterdir()) == []


def test_atomic_cache_dir_first_writer_wins(tmp_path: Path) -> None:
    final = tmp_path / "entry"
    with atomic_cache_dir(final) as tmp:
        (tmp / "f").write_text("mine")
        final.mkdir()  # a concurrent job publishes first
        (final / "f").write_text("theirs")
    assert (final / "f").read_text() == "theirs" and [p.name for p in tmp_path.iterdir()] == ["entry"]


def test_hash_ignores_transient_truncation_state(trained: dict) -> None:
    tok = trained["bpe"]
    before = tokenizer_hash(tok)
    tok("a long sentence with many words in it.", truncation=True, max_length=4)
    assert tokenizer_hash(tok) == before
    assert before != tokenizer_hash(trained["wordpiece"])


def test_path_loads_local_dir_and_checks_tokens(trained: dict, corpus: TextSource, tmp_path: Path) -> None:
    trained["unigram"].save_pretrained(tmp_path / "mine")
    tok, digest = load_or_train_tokenizer(TokenizerConfig(path=str(tmp_path / "mine")), corpus, tmp_path)
    assert digest == tokenizer_hash(trained["unigram"])
    with pytest.raises(FileNotFoundError, match=r"data.tokenizer.path=.*missing"):
        load_or_train_tokenizer(TokenizerConfig(path=str(tmp_path / "missing")), corpus, tmp_path)
    bare = Tokenizer(models.WordLevel({"[PAD]": 0, "[UNK]": 1, "a": 2}, unk_token="[UNK]"))
    bare.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=bare, pad_token="[PAD]", unk_token="[UNK]").save_pretrained(
        tmp_path / "bare")
    with pytest.raises(TokenizerError, match=r"data.tokenizer.path=.*no mask token"):
        load_or_train_tokenizer(TokenizerConfig(path=str(tmp_path / "bare")), corpus, tmp_path)


def test_config_errors_name_keys(corpus: TextSource, tmp_path: Path) -> None:
    with pytest.raises(TokenizerError, match=r"data.tokenizer.type='sentencepiece'.*wordpiece \| bpe \| unigram"):
        load_or_train_tokenizer(TokenizerConfig(type="sentencepiece"), corpus, tmp_path)
    with pytest.raises(TokenizerError, match=r"data.tokenizer.vocab_size=3"):
        load_or_train_tokenizer(TokenizerConfig(vocab_size=3), corpus, tmp_path)


def test_extra_special_tokens_follow_the_fixed_ones(corpus: TextSource, tmp_path: Path) -> None:
    cfg = TokenizerConfig(type="bpe", vocab_size=VOCAB)
    tok, digest = load_or_train_tokenizer(cfg, corpus, tmp_path)
    assert tok.convert_tokens_to_ids(list(SPECIAL_TOKENS) + ["[NLU]", "[NLG]", "[S2S]"]) == list(range(10))
    assert tok.convert_tokens_to_ids("<extra_id_0>") == len(tok) - 1
    info = TokenInfo.from_tokenizer(tok)
    assert {"[NLU]", "[NLG]", "[S2S]"} <= set(info.named_ids) and {7, 8, 9} <= set(info.special_ids)
    assert tok("[S2S] a city.", add_special_tokens=False)["input_ids"][0] == 9
    _, plain = load_or_train_tokenizer(TokenizerConfig(type="bpe", vocab_size=VOCAB, extra_special_tokens=[]),
                                       corpus, tmp_path)
    assert plain != digest and len(list((tmp_path / "tokenizers").iterdir())) == 2
    with pytest.raises(TokenizerError, match="extra_special_tokens"):
        load_or_train_tokenizer(TokenizerConfig(extra_special_tokens=["[MASK]"]), corpus, tmp_path)


@pytest.mark.parametrize("kind", ["wordpiece", "bpe", "unigram"])
def test_vocabulary_ids_are_canonical(kind: str, corpus: TextSource) -> None:
    """Specials keep their fixed ids; the rest of a WordPiece vocabulary is numbered by sorted string and
    a Unigram one by descending score, so ids do not depend on the process's hash-map order."""
    from dataclasses import replace

    from lmbench.config import TokenizerConfig

    tok = train_tokenizer(replace(TokenizerConfig(), type=kind, vocab_size=200, min_frequency=1), corpus)
    model = json.loads(tok.backend_tokenizer.to_str())["model"]
    n_special = len(SPECIAL_TOKENS) + 3  # UL2's [NLU] [NLG] [S2S] by default
    if kind == "wordpiece":
        ordinary = [t for t, _ in sorted(model["vocab"].items(), key=lambda kv: kv[1])][n_special:]
        assert ordinary == sorted(ordinary)
    elif kind == "unigram":
        scores = [(-score, piece) for piece, score in model["vocab"][n_special:]]
        assert scores == sorted(scores)
