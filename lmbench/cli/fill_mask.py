"""`lmbench-fill-mask`: the most likely fillers of one [MASK] slot, for a model of any objective family.

    lmbench-fill-mask runs/mlm/model "The film was [MASK] ." --top-k 5
    lmbench-fill-mask runs/clm/model "The film was [MASK] ." --json

A masked LM answers natively (softmax over its vocabulary at the mask, the numbers transformers'
fill-mask pipeline gives); causal and seq2seq models score candidate words in place (the first
--max-candidates whole words of the vocabulary, or --candidates) and normalise over that set.
A text without exactly one slot, or a model directory that cannot be loaded, exits with code 2.
"""

from __future__ import annotations

import argparse
import json
import sys

import transformers
from rich.console import Console
from rich.table import Table

from lmbench.eval.family import ModelDirError, load_scorer_model
from lmbench.eval.scoring import DEFAULT_MAX_CANDIDATES, SLOT, SlotError, fill_mask, vocabulary_words


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lmbench-fill-mask", description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", metavar="MODEL_DIR", help="local directory written by save_pretrained "
                        "(model and tokenizer), e.g. <run>/model")
    parser.add_argument("text", metavar="TEXT", help=f"text with exactly one {SLOT} slot")
    parser.add_argument("--top-k", type=int, default=5, help="how many completions to print (default 5)")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON instead of a table")
    parser.add_argument("--candidates", help="comma-separated candidate words to rank instead of the "
                        "vocabulary (any family)")
    parser.add_argument("--max-candidates", type=int, default=DEFAULT_MAX_CANDIDATES,
                        help=f"vocabulary words scored for causal / seq2seq models (default {DEFAULT_MAX_CANDIDATES})")
    parser.add_argument("--slot", default=SLOT, help=f"the slot marker in TEXT (default {SLOT})")
    parser.add_argument("--batch-size", type=int, default=64, help="rows per forward pass (default 64)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    transformers.utils.logging.disable_progress_bar()  # no "Loading weights" bars around the answer
    if args.text.count(args.slot) != 1:
        parser.error(f"TEXT {args.text!r} has {args.text.count(args.slot)} {args.slot} slots; it needs exactly "
                     f"one, e.g. \"The film was {args.slot} .\"")
    for key in ("top_k", "max_candidates", "batch_size"):
        if getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')}={getattr(args, key)}; allowed values: >= 1")
    words = [w.strip() for w in args.candidates.split(",") if w.strip()] if args.candidates else None
    if args.candidates is not None and not words:
        parser.error(f"--candidates {args.candidates!r} holds no word; give comma-separated words")
    try:
        loaded = load_scorer_model(args.model_dir, device=args.device)
        if words is None and loaded.kind != "encoder":
            words = vocabulary_words(loaded, args.max_candidates)
        completions = fill_mask(loaded, args.text, args.top_k, vocab_candidates=words, slot=args.slot,
                                batch_size=args.batch_size)
    except (ModelDirError, SlotError) as exc:
        parser.error(str(exc))
    method = ("softmax over the vocabulary at the mask" if words is None
              else f"softmax over {len(words)} candidate words scored in place")
    if args.json:
        print(json.dumps({
            "model_dir": args.model_dir, "family": loaded.family, "kind": loaded.kind, "text": args.text,
            "method": method,
            "completions": [{"rank": r, "token": c.token, "score": c.score, "sequence": c.sequence}
                            for r, c in enumerate(completions, start=1)],
        }, indent=2))
        return 0
    table = Table(title=args.text)
    for column, justify in (("rank", "right"), ("token", "left"), ("score", "right"), ("sequence", "left")):
        table.add_column(column, justify=justify, overflow="fold")
    for rank, c in enumerate(completions, start=1):
        table.add_row(str(rank), c.token, f"{c.score:.4g}", c.sequence)
    console = Console(width=120)
    console.print(table)
    console.print(f"{loaded.family} ({loaded.kind}): {method}", highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
