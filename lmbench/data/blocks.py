"""The packed token cache: the corpus tokenised once into one flat memory-mapped stream, cut into blocks.

Every objective reads the same stream, so they see the same text; only the block length differs (an
objective may need room for sentinels). The stream is written chunk by chunk, so memory stays flat in
corpus size, and cached under `cache_dir/tokens/<hash(source, tokenizer, version)>/`:

    tokens.bin       uint16 (int32 when the vocabulary has 65536 ids or more): each document's tokens
                     (no [CLS]/[SEP]) followed by one eos, documents in source order
    word_starts.bin  uint8, 1 where a token begins a word (from the fast tokenizer's word_ids()); eos is 1
    meta.json        counts, dtype, eos id, source fingerprint and tokenizer hash

The validation split is the *last* `val_fraction` of the stream (moved back to a document boundary),
so it holds the same text for every objective whatever its block length.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from tokenizers import Tokenizer

from lmbench.data.sources import CorpusSource
from lmbench.data.tokenizer import atomic_cache_dir
from lmbench.objectives.base import Blocks

BLOCKS_FORMAT = "lmbench-tokens-v1"  # bump when the stream layout changes: part of the cache key
_CHUNK_CHARS = 2_000_000  # documents are encoded in batches of about this many characters
_CHUNK_DOCS = 20_000


@dataclass
class TokenStream:
    """A view on the cached memmaps: tokens (N,) and word_starts (N,), starting at `start` in the file."""

    tokens: np.memmap
    word_starts: np.memmap
    path: Path
    n_tokens: int
    start: int = 0
    eos_id: int = -1

    @classmethod
    def open(cls, path: Path) -> TokenStream:
        """Open a finished cache folder read-only (checks the files against meta.json)."""
        path = Path(path)
        meta = json.loads((path / "meta.json").read_text())
        n, dtype = int(meta["n_tokens"]), np.dtype(meta["dtype"])
        for name, itemsize in (("tokens.bin", dtype.itemsize), ("word_starts.bin", 1)):
            size = (path / name).stat().st_size
            if size != n * itemsize:
                raise OSError(f"token cache {path} is damaged ({name}: {size} bytes, expected {n * itemsize}); "
                              "delete that folder and run again")
        tokens = np.memmap(path / "tokens.bin", dtype=dtype, mode="r", shape=(n,))
        word_starts = np.memmap(path / "word_starts.bin", dtype=np.uint8, mode="r", shape=(n,))
        return cls(tokens, word_starts, path, n, 0, int(meta["eos_id"]))

    def slice(self, start: int, stop: int) -> TokenStream:
        """Tokens [start, stop) of this view, as a view."""
        start, stop = max(0, start), min(self.n_tokens, stop)
        return TokenStream(self.tokens[start:stop], self.word_starts[start:stop], self.path,
                           max(0, stop - start), self.start + start, self.eos_id)

    def split(self, val_fraction: float) -> tuple[TokenStream, TokenStream]:
        """(train, val): val is the last `val_fraction` of the tokens, its start moved back to just after
        the nearest eos (by at most a quarter of its size) so no document straddles the two."""
        if not 0.0 < float(val_fraction) < 1.0:
            raise ValueError(f"data.val_fraction={val_fraction!r}; allowed values: 0 < val_fraction < 1")
        n_val = max(1, int(self.n_tokens * float(val_fraction)))
        cut = self.n_tokens - n_val
        window = np.asarray(self.tokens[max(0, cut - n_val // 4):cut])
        ends = np.flatnonzero(window == self.eos_id)
        if len(ends):
            cut = cut - len(window) + int(ends[-1]) + 1
        return self.slice(0, cut), self.slice(cut, self.n_tokens)

    def __getstate__(self) -> dict[str, Any]:  # pickle by reference: never copy the memmap's data
        return {"path": self.path, "start": self.start, "n_tokens": self.n_tokens}

    def __setstate__(self, state: dict[str, Any]) -> None:
        view = TokenStream.open(state["path"]).slice(state["start"], state["start"] + state["n_tokens"])
        self.__dict__.update(view.__dict__)


def _document_chunks(source: CorpusSource) -> Iterator[list[str]]:
    chunk: list[str] = []
    chars = 0
    for doc in source.iter_documents():
        chunk.append(doc)
        chars += len(doc)
        if chars >= _CHUNK_CHARS or len(chunk) >= _CHUNK_DOCS:
            yield chunk
            chunk, chars = [], 0
    if chunk:
        yield chunk


def _encode_chunk(backend: Tokenizer, docs: list[str], eos_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Tokenise a batch of documents into (ids (T,) int64, word_starts (T,) uint8) with eos after each."""
    encodings = backend.encode_batch(docs, add_special_tokens=False)
    lens = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))  # (D,)
    total = int(lens.sum())
    ids = np.fromiter(chain.from_iterable(e.ids for e in encodings), dtype=np.int64, count=total)  # (T0,)
    # word ids restart at 0 in each document; None (possible for added tokens) becomes NaN: a word start
    words = np.array(list(chain.from_iterable(e.word_ids for e in encodings)), dtype=np.float64)  # (T0,)
    doc_first = np.zeros(total, dtype=bool)  # (T0,)
    doc_first[(np.cumsum(lens) - lens)[lens > 0]] = True
    starts = np.ones(total, dtype=bool)  # (T0,)
    starts[1:] = words[1:] != words[:-1]
    starts |= doc_first
    eos_pos = np.cumsum(lens + 1) - 1  # (D,) position of each document's eos in the output
    is_eos = np.zeros(total + len(docs), dtype=bool)  # (T,)
    is_eos[eos_pos] = True
    out_ids = np.full(total + len(docs), eos_id, dtype=np.int64)  # (T,)
    out_ids[~is_eos] = ids
    out_starts = np.ones(total + len(docs), dtype=np.uint8)  # (T,)
    out_starts[~is_eos] = starts
    return out_ids, out_starts


def token_cache_key(source: CorpusSource, tokenizer_hash: str) -> str:
    """The cache key of a token stream: corpus content, tokenizer and stream format."""
    fields = {"format": BLOCKS_FORMAT, "source": source.fingerprint(), "tokenizer": tokenizer_hash}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def build_token_stream(source: CorpusSource, tokenizer: Any, tokenizer_hash: str, cache_dir: Path) -> TokenStream:
    """Tokenise `source` once into `cache_dir/tokens/<key>/` (atomically) and open it; reuse it if cached."""
    final = Path(cache_dir).expanduser() / "tokens" / token_cache_key(source, tokenizer_hash)[:24]
    if (final / "meta.json").exists():
        return TokenStream.open(final)
    eos_id = tokenizer.eos_token_id
    if eos_id is None:
        raise ValueError("the tokenizer has no eos token; lmbench separates documents with it")
    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())  # a private copy we may configure
    backend.no_truncation()
    backend.no_padding()
    backend.encode_special_tokens = True  # "</s>" written in the corpus is text, not a document end
    dtype = np.dtype(np.uint16 if len(tokenizer) < 65536 else np.int32)
    n_tokens = n_docs = n_word_starts = 0
    with atomic_cache_dir(final) as tmp:
        with open(tmp / "tokens.bin", "wb") as f_tokens, open(tmp / "word_starts.bin", "wb") as f_starts:
            for docs in _document_chunks(source):
                ids, starts = _encode_chunk(backend, docs, int(eos_id))
                ids.astype(dtype).tofile(f_tokens)
                starts.tofile(f_starts)
                n_tokens += len(ids)
                n_docs += len(docs)
                n_word_starts += int(starts.sum())
        meta = {"format": BLOCKS_FORMAT, "n_tokens": n_tokens, "n_documents": n_docs,
                "n_word_starts": n_word_starts, "dtype": dtype.name, "vocab_size": len(tokenizer),
                "eos_id": int(eos_id), "source": repr(source), "source_fingerprint": source.fingerprint(),
                "tokenizer_hash": tokenizer_hash}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return TokenStream.open(final)


class BlockView:
    """Fixed-length, non-overlapping blocks of `block_len` tokens over a TokenStream slice (tail dropped)."""

    def __init__(self, stream_slice: TokenStream, block_len: int) -> None:
        if int(block_len) <= 0:
            raise ValueError(f"block length {block_len!r}; allowed values: an integer > 0")
        self.stream, self.block_len = stream_slice, int(block_len)
        self.n_blocks = stream_slice.n_tokens // self.block_len
        if self.n_blocks == 0:
            raise ValueError(f"corpus too small: {stream_slice.n_tokens} tokens < one block of {self.block_len} "
                             f"(token cache {stream_slice.path}); use a larger corpus (data.builtin_documents, "
                             "data.path), a smaller data.seq_len, or a larger data.val_fraction for validation")
        used = self.n_blocks * self.block_len
        self._tokens = stream_slice.tokens[:used].reshape(self.n_blocks, self.block_len)  # (N, L) view
        self._word_starts = stream_slice.word_starts[:used].reshape(self.n_blocks, self.block_len)  # (N, L)

    def __len__(self) -> int:
        return self.n_blocks

    def get(self, indices: np.ndarray | torch.Tensor) -> Blocks:
        """Gather blocks `indices` (B,) into Blocks(input_ids (B, L) int64, word_starts (B, L) bool)."""
        if isinstance(indices, torch.Tensor):
            indices = indices.cpu().numpy()
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)  # (B,)
        if len(idx) and (idx.min() < 0 or idx.max() >= self.n_blocks):
            raise IndexError(f"block index out of range [0, {self.n_blocks}): {idx.min()}..{idx.max()}")
        input_ids = torch.from_numpy(self._tokens[idx].astype(np.int64))  # (B, L)
        word_starts = torch.from_numpy(self._word_starts[idx].astype(bool))  # (B, L)
        return Blocks(input_ids=input_ids, word_starts=word_starts)

    def __getstate__(self) -> dict[str, Any]:
        return {"stream": self.stream, "block_len": self.block_len}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["stream"], state["block_len"])
