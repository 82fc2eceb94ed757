"""The packed token cache: round trip to text, eos between documents, word starts, dtype, cache, blocks."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import PreTrainedTokenizerFast

import lmbench.data.blocks as blocksmod
from lmbench.config import TokenizerConfig
from lmbench.data.blocks import BlockView, TokenStream, build_token_stream
from lmbench.data.sources import TextSource
from lmbench.data.tokenizer import load_or_train_tokenizer

KINDS = ("wordpiece", "bpe", "unigram")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> TextSource:
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    try:
        from lmbench.corpus import generate_documents
        docs = list(generate_documents(120, seed=1))
    except ImportError:
        docs = [f"Document {i}.\nThe quick brown fox jumps over the lazy dog! Is it {i}?" for i in range(1500)]
    path.write_text("\n\n".join(docs), encoding="utf-8")
    return TextSource(path)


@pytest.fixture(scope="module")
def built(corpus: TextSource, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple]:
    """kind -> (tokenizer, tokenizer_hash, TokenStream, cache_dir)."""
    cache = tmp_path_factory.mktemp("cache")
    out = {}
    for kind in KINDS:
        tok, digest = load_or_train_tokenizer(TokenizerConfig(type=kind, vocab_size=400), corpus, cache)
        out[kind] = (tok, digest, build_token_stream(corpus, tok, digest, cache), cache)
    return out


def documents_of(stream: TokenStream, eos_id: int) -> list[np.ndarray]:
    tokens = np.asarray(stream.tokens)
    ends = np.flatnonzero(tokens == eos_id)
    return np.split(tokens, ends + 1)[:-1]  # each piece ends with its eos


def squash(text: str) -> str:
    return "".join(text.split())


@pytest.mark.parametrize("kind", KINDS)
def test_stream_decodes_back_to_documents(built: dict, corpus: TextSource, kind: str) -> None:
    tok, _, stream, _ = built[kind]
    docs = list(corpus.iter_documents())
    pieces = documents_of(stream, tok.eos_token_id)
    assert len(pieces) == len(docs) and stream.tokens[-1] == tok.eos_token_id
    assert all(p[-1] == tok.eos_token_id and tok.eos_token_id not in p[:-1] for p in pieces)
    normalize = tok.backend_tokenizer.normalizer.normalize_str
    for doc, piece in zip(docs, pieces):
        decoded = tok.decode(piece[:-1].tolist())
        if kind == "bpe":  # byte-level BPE is lossless
            assert decoded == normalize(doc)
        else:  # modulo normalisation and whitespace
            assert squash(decoded) == squash(normalize(doc))


@pytest.mark.parametrize("kind", KINDS)
def test_word_starts_agree_with_word_ids(built: dict, corpus: TextSource, kind: str) -> None:
    tok, _, stream, _ = built[kind]
    expected = []
    for doc in corpus.iter_documents():
        word_ids = tok(doc, add_special_tokens=False).word_ids()
        expected += [i == 0 or w != word_ids[i - 1] for i, w in enumerate(word_ids)] + [True]  # + eos
    assert np.array_equal(np.asarray(stream.word_starts, dtype=bool), np.array(expected))
    assert 0.3 < np.asarray(stream.word_starts).mean() < 1.0  # some words span several tokens


def test_memmap_dtype_and_meta(built: dict) -> None:
    tok, digest, stream, _ = built["wordpiece"]
    assert isinstance(stream.tokens, np.memmap) and stream.tokens.dtype == np.uint16
    assert stream.word_starts.dtype == np.uint8 and len(stream.word_starts) == stream.n_tokens
    assert (stream.path / "tokens.bin").stat().st_size == 2 * stream.n_tokens
    assert int(np.asarray(stream.tokens).max()) < len(tok)


def test_large_vocab_uses_int32(built: dict, corpus: TextSource, tmp_path: Path) -> None:
    tok, digest, small, _ = built["wordpiece"]

    class HugeVocab:  # the same tokenizer, reporting 70000 ids
        def __getattr__(self, name: str) -> object:
            return getattr(tok, name)

        def __len__(self) -> int:
            return 70_000

    big = build_token_stream(corpus, HugeVocab(), digest + "-huge", tmp_path)
    assert big.tokens.dtype == np.int32 and np.array_equal(np.asarray(big.tokens), np.asarray(small.tokens))


def test_cache_reused_and_chunking_invariant(built: dict, corpus: TextSource, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    tok, digest, stream, cache = built["wordpiece"]
    monkeypatch.setattr(blocksmod, "_encode_chunk", lambda *a: pytest.fail("re-tokenised a cached corpus"))
    again = build_token_stream(corpus, tok, digest, cache)
    assert again.path == stream.path and again.n_tokens == stream.n_tokens
    assert not [p for p in (cache / "tokens").iterdir() if p.name.startswith(".tmp")]
    monkeypatch.undo()
    monkeypatch.setattr(blocksmod, "_CHUNK_CHARS", 500)  # many small chunks: same stream
    chunked = build_token_stream(corpus, tok, digest, tmp_path)
    assert np.array_equal(np.asarray(chunked.tokens), np.asarray(stream.tokens))
    assert np.array_equal(np.asarray(chunked.word_starts), np.asarray(stream.word_starts))


def test_literal_special_token_text_is_not_an_eos(built: dict, tmp_path: Path) -> None:
    tok, digest, _, _ = built["wordpiece"]
    f = tmp_path / "c.txt"
    f.write_text("the end </s> is near. [MASK] too.\n\nsecond.")
    stream = build_token_stream(TextSource(f), tok, digest, tmp_path)
    tokens = np.asarray(stream.tokens)
    assert (tokens == tok.eos_token_id).sum() == 2 and (tokens == tok.mask_token_id).sum() == 0


def test_split_is_fixed_and_on_a_document_boundary(built: dict) -> None:
    tok, _, stream, _ = built["bpe"]
    train, val = stream.split(0.1)
    assert train.n_tokens + val.n_tokens == stream.n_tokens and val.start == train.n_tokens
    assert stream.tokens[val.start - 1] == tok.eos_token_id  # val begins with a whole document
    assert 0.1 <= val.n_tokens / stream.n_tokens <= 0.1 * 1.25 + 1e-3
    first = {}
    for block_len in (16, 48, 100):
        view = BlockView(val, block_len)
        first[block_len] = view.get([0]).input_ids[0]
        assert torch.equal(first[block_len], torch.from_numpy(np.asarray(val.tokens[:block_len], dtype=np.int64)))
    assert torch.equal(first[48][:16], first[16])  # the same validation text whatever the block length
    with pytest.raises(ValueError, match="data.val_fraction=0"):
        stream.split(0.0)


def test_block_view_gather(built: dict) -> None:
    _, _, stream, _ = built["unigram"]
    view = BlockView(stream, 32)
    assert len(view) == stream.n_tokens // 32
    idx = torch.tensor([3, 0, len(view) - 1, 3])
    blocks = view.get(idx)
    assert blocks.input_ids.shape == (4, 32) and blocks.input_ids.dtype == torch.int64
    assert blocks.word_starts.dtype == torch.bool
    for row, i in enumerate(idx.tolist()):
        ref = np.asarray(stream.tokens[i * 32:(i + 1) * 32], dtype=np.int64)
        assert np.array_equal(blocks.input_ids[row].numpy(), ref)
        assert np.array_equal(blocks.word_starts[row].numpy(), np.asarray(stream.word_starts[i * 32:(i + 1) * 32]) == 1)
    with pytest.raises(IndexError):
        view.get([len(view)])
    clone = pickle.loads(pickle.dumps(view))
    assert len(pickle.dumps(view)) < 2000 and torch.equal(clone.get(idx).input_ids, blocks.input_ids)


def test_corpus_smaller_than_one_block(built: dict) -> None:
    _, _, stream, _ = built["wordpiece"]
    tiny = stream.slice(0, 50)
    with pytest.raises(ValueError, match=r"corpus too small: 50 tokens < one block of 128"):
        BlockView(tiny, 128)


def test_transformers_tokenizer_type(built: dict) -> None:
    assert all(isinstance(built[k][0], PreTrainedTokenizerFast) for k in KINDS)
