"""Speed of MLM corruption on one CPU core: lmbench's `mlm` (token, whole_word, span) next to Hugging Face's
DataCollatorForLanguageModeling, on the same packed blocks.

Corruption runs in the data pipeline for every batch, so it must stay far below a training step's cost.
Reports tokens/s (median of --runs timed runs) and, over --quality-batches batches, the selection rate
and how many random replacements drew a special token (lmbench promises none; the HF collator draws from
the whole vocabulary; its whole-word mode turns random replacement off).

    python benchmarks/bench_corruption.py [--rows 256 --length 128 --vocab 30522 --runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch

from lmbench.objectives import Blocks, TokenInfo
from lmbench_plugins.mlm import MaskedLM, MLMConfig

Corruptor = Callable[[], tuple[torch.Tensor, torch.Tensor]]  # () -> (input_ids, labels), both (B, L)


def token_info(vocab: int) -> TokenInfo:
    """BERT-like ids: pad 0, unk 1, cls 2, sep 3, mask 4, bos 5, eos 6, 100 sentinels at the top."""
    sentinels = tuple(vocab - 1 - k for k in range(100))
    return TokenInfo(vocab_size=vocab, pad_id=0, mask_id=4, bos_id=5, eos_id=6, cls_id=2, sep_id=3, unk_id=1,
                     special_ids=tuple(sorted({0, 1, 2, 3, 4, 5, 6, *sentinels})), sentinel_ids=sentinels)


def make_blocks(info: TokenInfo, rows: int, length: int, seed: int = 0) -> Blocks:
    """Packed blocks: [CLS] first, ~3% [SEP], words of 1.7 tokens on average."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(7, info.vocab_size - 100, (rows, length), generator=g)  # (B, L)
    ids[torch.rand(rows, length, generator=g) < 0.03] = info.sep_id
    ids[:, 0] = info.cls_id
    return Blocks(input_ids=ids, word_starts=torch.rand(rows, length, generator=g) < 0.6)  # (B, L)


def lmbench_corruptor(info: TokenInfo, blocks: Blocks, masking: str) -> Corruptor:
    objective = MaskedLM(MLMConfig(masking=masking, add_cls_sep=False), info)  # masking only, like the collator
    generator = torch.Generator().manual_seed(0)

    def run() -> tuple[torch.Tensor, torch.Tensor]:
        batch = objective.corrupt(blocks, generator)
        return batch["input_ids"], batch["labels"]
    return run


def hf_corruptor(info: TokenInfo, blocks: Blocks, whole_word: bool) -> Corruptor:
    """HF's collator on pre-tokenised blocks, given the special-token mask (its fastest path)."""
    from tokenizers import Tokenizer, models
    from transformers import DataCollatorForLanguageModeling, PreTrainedTokenizerFast

    names = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[BOS]", "[EOS]"]
    vocab = {t: i for i, t in enumerate(names)}
    vocab.update({f"w{i}": i for i in range(7, info.vocab_size)})
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="[UNK]")),
                                        pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                        sep_token="[SEP]", mask_token="[MASK]")
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # whole-word mode warns that it turns random replacement off
        collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15, whole_word_mask=whole_word)
    collator.generator = torch.Generator().manual_seed(0)
    special = info.special_mask(blocks.input_ids).long()  # (B, L)
    offsets = None
    if whole_word:  # character offsets that reproduce the word boundaries: a gap before each word start
        starts = blocks.word_starts.long()  # (B, L)
        begin = torch.arange(blocks.input_ids.shape[1]) + starts.cumsum(dim=1)  # (B, L)
        offsets = torch.stack((begin, begin + 1), dim=-1).numpy()  # (B, L, 2)

    def run() -> tuple[torch.Tensor, torch.Tensor]:
        return collator.torch_mask_tokens(blocks.input_ids.clone(), special, offsets)
    return run


def tokens_per_second(run: Corruptor, tokens: int, runs: int, min_seconds: float = 0.3) -> float:
    """Median over `runs` timed runs, each repeating `run` for at least `min_seconds`."""
    run()  # warm-up
    t0 = time.perf_counter()
    run()
    reps = max(1, int(min_seconds / max(time.perf_counter() - t0, 1e-6)))
    rates = []
    for _ in range(runs):
        t0 = time.perf_counter()
        for _ in range(reps):
            run()
        rates.append(tokens * reps / (time.perf_counter() - t0))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--vocab", type=int, default=30522)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--quality-batches", type=int, default=30, help="batches for the quality columns")
    parser.add_argument("--no-hf", action="store_true", help="skip the Hugging Face collator rows")
    args = parser.parse_args()
    torch.set_num_threads(1)
    info = token_info(args.vocab)
    blocks = make_blocks(info, args.rows, args.length)
    tokens = blocks.input_ids.numel()
    eligible = ~info.special_mask(blocks.input_ids)  # (B, L)

    cases: list[tuple[str, Corruptor]] = [
        (f"lmbench mlm {m}", lmbench_corruptor(info, blocks, m)) for m in ("token", "whole_word", "span")]
    if not args.no_hf:
        cases += [("HF collator token", hf_corruptor(info, blocks, whole_word=False)),
                  ("HF collator whole_word", hf_corruptor(info, blocks, whole_word=True))]

    print(f"MLM corruption, batch ({args.rows}, {args.length}), vocab {args.vocab}, 1 thread, "
          f"median of {args.runs} runs, torch {torch.__version__}")
    print(f"{'method':<26}{'Mtok/s':>9}{'ms/batch':>10}{'selected':>10}{'special random':>16}  (quality: {args.quality_batches} batches)")
    for label, run in cases:
        rate = tokens_per_second(run, tokens, args.runs)
        n_selected = bad = 0
        for _ in range(args.quality_batches):  # quality over several batches: one is too noisy
            inputs, labels = run()
            selected = labels != -100  # (B, L)
            changed = selected & (inputs != blocks.input_ids) & (inputs != info.mask_id)  # (B, L)
            bad += int(info.special_mask(inputs[changed]).sum())
            n_selected += int(selected.sum())
        share = n_selected / (args.quality_batches * eligible.sum().item())
        print(f"{label:<26}{rate / 1e6:>9.2f}{tokens / rate * 1e3:>10.3f}{share:>10.4f}{bad:>16d}")


if __name__ == "__main__":
    main()
