"""Speed and memory of lmbench's tokenise-and-pack step (`build_token_stream`) at growing corpus sizes.

The corpus is the Project Gutenberg books in ../shared/data/gutenberg (about 2.2M WordPiece tokens) or,
without them, the built-in corpus; it is repeated to reach the sizes measured. Each measurement runs in
a fresh subprocess with a fresh cache, and reports wall seconds, tokens/s and peak RSS
(resource.getrusage), so the RSS of the 1x and 10x runs shows whether memory stays flat in corpus size.
Next to it, the usual script approach (tokenise the whole document list in one call, then concatenate)
shows what holding the corpus's token lists in memory costs.

    python benchmarks/bench_packing.py [--sizes 1 5 10] [--naive-sizes 1 5] [--vocab 8192]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import numpy as np

from lmbench.config import TokenizerConfig
from lmbench.data.blocks import build_token_stream
from lmbench.data.sources import BuiltinSource, CorpusSource, TextSource
from lmbench.data.tokenizer import load_or_train_tokenizer

GUTENBERG = Path(__file__).resolve().parents[2] / "shared" / "data" / "gutenberg"


class RepeatedSource:
    """`base` documents `times` times over (a larger corpus with the same text statistics)."""

    def __init__(self, base: CorpusSource, times: int) -> None:
        self.base, self.times = base, times

    def iter_documents(self) -> Iterator[str]:
        for _ in range(self.times):
            yield from self.base.iter_documents()

    def fingerprint(self) -> str:
        return hashlib.sha256(f"{self.base.fingerprint()}x{self.times}".encode()).hexdigest()

    def __repr__(self) -> str:
        return f"RepeatedSource({self.base!r}, {self.times})"


def base_source() -> CorpusSource:
    return TextSource(GUTENBERG) if GUTENBERG.is_dir() else BuiltinSource(4000, seed=0)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child(mode: str, times: int, tokenizer_cache: Path, vocab: int) -> dict:
    """One measurement in this (fresh) process; the tokenizer comes from the shared cache."""
    source = RepeatedSource(base_source(), times)
    tok, digest = load_or_train_tokenizer(TokenizerConfig(vocab_size=vocab), base_source(), tokenizer_cache)
    rss_before = peak_rss_mb()
    started = time.perf_counter()
    if mode == "lmbench":
        with tempfile.TemporaryDirectory() as cache:
            stream = build_token_stream(source, tok, digest, Path(cache))
            n_tokens = stream.n_tokens
    else:  # the usual script: every document's token list in memory at once, then one array
        docs = list(source.iter_documents())
        ids = tok(docs, add_special_tokens=False)["input_ids"]
        flat = np.concatenate([np.asarray(x + [tok.eos_token_id], dtype=np.uint16) for x in ids])
        n_tokens = len(flat)
    seconds = time.perf_counter() - started
    return {"mode": mode, "times": times, "n_tokens": n_tokens, "seconds": round(seconds, 2),
            "tokens_per_s": round(n_tokens / seconds), "rss_before_mb": round(rss_before),
            "peak_rss_mb": round(peak_rss_mb())}


def measure(mode: str, times: int, tokenizer_cache: Path, vocab: int) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--times", str(times), "--tokenizer-cache",
           str(tokenizer_cache), "--vocab", str(vocab)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 5, 10], help="corpus repetitions (lmbench)")
    parser.add_argument("--naive-sizes", type=int, nargs="*", default=[1, 5], help="repetitions (in-memory)")
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--child", choices=["lmbench", "naive"], help=argparse.SUPPRESS)
    parser.add_argument("--times", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--tokenizer-cache", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.times, args.tokenizer_cache, args.vocab)))
        return
    print(f"corpus: {base_source()!r}; WordPiece vocab {args.vocab}")
    with tempfile.TemporaryDirectory() as tokenizer_cache:
        started = time.perf_counter()
        load_or_train_tokenizer(TokenizerConfig(vocab_size=args.vocab), base_source(), Path(tokenizer_cache))
        print(f"tokenizer training: {time.perf_counter() - started:.1f} s")
        print(f"{'mode':8} {'x':>3} {'tokens':>11} {'seconds':>8} {'tokens/s':>10} {'RSS before':>11} {'peak RSS':>9}")
        runs = [("lmbench", t) for t in args.sizes] + [("naive", t) for t in args.naive_sizes]
        for mode, times in runs:
            r = measure(mode, times, Path(tokenizer_cache), args.vocab)
            print(f"{r['mode']:8} {r['times']:>3} {r['n_tokens']:>11,} {r['seconds']:>8.1f} {r['tokens_per_s']:>10,} "
                  f"{r['rss_before_mb']:>8} MB {r['peak_rss_mb']:>6} MB", flush=True)


if __name__ == "__main__":
    main()
