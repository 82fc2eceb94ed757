"""Speed (and span F1) of zero-shot NER by prompts over the CoNLL-2003 dev set with a tiny lmbench MLM.

The model, unless --model-dir names a saved lmbench run (`<run>/model/`), is lmbench's `tiny` BERT
(hidden 128, 4 layers, 4 heads, ffn 512), randomly initialised with 130 positions (what a default
lmbench pretraining run with data.seq_len=128 saves), and a WordPiece tokenizer (8192) trained by
lmbench on the CoNLL-2003 train sentences. Its speed is that of a pretrained model of the same shape;
its F1 is near 0 (it was never trained), so give --model-dir for a meaningful F1. Without
../shared/data/conll2003 the built-in "ner" dev set is used instead (the message says so).

    python benchmarks/bench_zeroshot_ner.py [--max-sentences 200] [--threads 2] [--span-filter cased]

Reports wall seconds (model build excluded), sentences/s, scored spans/s and the span F1.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from types import SimpleNamespace

import torch

from lmbench.backbones import build_backbone
from lmbench.config import BackboneConfig, TokenizerConfig
from lmbench.data.tokenizer import train_tokenizer
from lmbench.eval.family import LoadedModel, load_scorer_model, wrap_model
from lmbench.eval.metrics import SpanF1
from lmbench.eval.zeroshot_ner import SPAN_FILTERS, ZeroShotNERConfig, predict_entities
from lmbench.objectives.base import TokenInfo
from lmbench.tasks import TokenExample, builtin_task, read_conll

CONLL = Path(__file__).resolve().parents[2] / "shared" / "data" / "conll2003"


def load_data() -> tuple[list[TokenExample], list[TokenExample], str]:
    """(train, dev, name): CoNLL-2003 if present, else the built-in NER set (with a message)."""
    if (CONLL / "valid.txt").is_file():
        return read_conll(CONLL / "train.txt"), read_conll(CONLL / "valid.txt"), "CoNLL-2003 dev (valid.txt)"
    print(f"NOTE: {CONLL} is absent; using the built-in 'ner' dev set (3250 sentences) instead of CoNLL-2003")
    return builtin_task("ner", "train", 2000, 0), builtin_task("ner", "dev", 3250, 0), "built-in ner dev"


def tiny_model(train: list[TokenExample]) -> LoadedModel:
    """lmbench's tiny BERT (random init, 130 positions) with a WordPiece tokenizer trained on `train`."""
    texts = [" ".join(e.tokens) for e in train]
    cfg = TokenizerConfig(type="wordpiece", vocab_size=8192, min_frequency=2, extra_special_tokens=[])
    tok = train_tokenizer(cfg, SimpleNamespace(iter_documents=lambda: iter(texts)))
    torch.manual_seed(0)
    model = build_backbone(BackboneConfig(kind="encoder", size="tiny"), "encoder", TokenInfo.from_tokenizer(tok), 130)
    return wrap_model(model, tok)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-sentences", type=int, default=None, help="score only the first N dev sentences")
    parser.add_argument("--model-dir", default=None,
                        help="a saved lmbench model directory instead of the random tiny BERT")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the target is 2 cores)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--span-filter", default="cased", choices=SPAN_FILTERS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train, dev, name = load_data()
    loaded = load_scorer_model(args.model_dir) if args.model_dir else tiny_model(train)
    cfg = ZeroShotNERConfig(max_sentences=args.max_sentences, batch_size=args.batch_size,
                            span_filter=args.span_filter)
    examples = dev[:args.max_sentences] if args.max_sentences else dev
    start = time.perf_counter()
    pred = predict_entities(loaded, examples, cfg)
    seconds = time.perf_counter() - start
    metric = SpanF1(entity_types=list(cfg.type_words), mode=cfg.mode)  # zeroshot_ner's scores, without re-predicting
    metric.update(pred.tags, [list(e.tags) for e in examples])
    scores = {k: float(v) for k, v in metric.compute().items()}
    report = {"data": name, "model": args.model_dir or "random tiny BERT (128x4, 130 positions, WordPiece 8192)",
              "threads": args.threads, "sentences": len(examples), "words": sum(len(e.tokens) for e in examples),
              "spans_scored": pred.num_spans, "entities_predicted": pred.num_entities, "span_filter": cfg.span_filter,
              "seconds": round(seconds, 2), "sentences_per_s": round(len(examples) / seconds, 1),
              "spans_per_s": round(pred.num_spans / seconds, 1), "precision": round(scores["precision"], 4),
              "recall": round(scores["recall"], 4), "f1": round(scores["f1"], 4)}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
