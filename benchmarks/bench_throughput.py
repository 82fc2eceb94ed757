"""Training throughput of lmbench's pretraining next to the Hugging Face Trainer recipe, side by side.

For each objective (MLM on a BERT-shaped encoder, CLM on a GPT-2-shaped decoder, T5 span corruption on a
T5-shaped encoder-decoder; all hidden 256, 4 layers, 4 heads, ffn 1024 = lmbench's `small` preset,
sequence 128, batch 32, a WordPiece vocabulary of 8192 trained on the corpus) three arms run, interleaved
a b c a b c ..., each in a fresh process:

    a  HF Trainer with its defaults (fp32 on CPU) + DataCollatorForLanguageModeling (run_mlm/run_clm
       recipe; for T5 a straightforward port of the Flax example's span-corruption collator)
    b  the same with bf16=True
    c  lmbench's own recipe (compose_config + run_pretraining) with its defaults

Both sides use the same lmbench config: same tokenizer and packed blocks (one cache), the same model
(lmbench's builder: same class, config and initial weights), batch, steps, seed and AdamW hyper-parameters
(lr, betas, eps, weight decay, warmup, linear decay, gradient clipping 1.0). A step's time is the wall time
between the ends of consecutive optimizer steps, so data loading, corruption, logging and callbacks
count; startup (imports, tokenizer, audit, peak-FLOPs probe) and what follows training do not; downstream
tasks are off (task=[]). Reported: input tokens/s (median over the timed steps after warm-up) per run;
per arm the median, min and max over --reps runs; c/a and c/b as ratios of those medians, and "paired":
the median over repetitions of the ratio within one repetition (robust when other load drifts). Arm b
runs fewer steps (--b-steps): on a CPU without native bf16 it is emulated and some 30x slower. The
corpus is ../shared/data/wikitext-2 or, when absent, the built-in corpus. --quality adds the 300-step
MLM validation-loss parity check (a vs c, scored on lmbench's fixed validation batches).

    python benchmarks/bench_throughput.py                      # all objectives, arms a b c, 3 reps
    python benchmarks/bench_throughput.py --objectives mlm --quality   # + the MLM loss parity check
    python benchmarks/bench_throughput.py --threads 1 ...      # on a shared machine: no OpenMP oversubscription
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import pytorch_lightning as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lmbench.train.precision import cpu_supports_bf16  # noqa: E402

from _hf_peer import mlm_val_loss, prepare, run_hf, val_batches  # noqa: E402

WIKITEXT = Path(__file__).resolve().parents[2] / "shared" / "data" / "wikitext-2"
BACKBONES = {"mlm": "encoder_small", "clm": "decoder_small", "t5_span": "encoder_decoder_small"}
ARMS = {"a": "HF Trainer fp32", "b": "HF Trainer bf16=True", "c": "lmbench defaults"}
MARK = "BENCH_RESULT "
CONF = Path(__file__).resolve().parents[1] / "conf"


def lmbench_overrides(objective: str, args: argparse.Namespace, cache_dir: str) -> list[str]:
    """The lmbench config both sides run: the objective's preset backbone, the corpus, the shared cache."""
    backbone = BACKBONES[objective].replace("small", "tiny") if args.tiny else BACKBONES[objective]
    if args.tiny:  # test mode: also a short audit and validation
        data = ["data=builtin", "data.builtin_documents=300", "audit_batches=4", "trainer.limit_val_batches=2"]
    elif WIKITEXT.is_dir():
        data = ["data=text", f"data.path={WIKITEXT}"]
    else:
        data = ["data=builtin"]
    tasks = ["task=[]"] if (CONF / "task").is_dir() else []  # downstream evaluation is not pretraining
    return [f"objective={objective}", f"backbone={backbone}", *data, f"data.tokenizer.vocab_size={args.vocab}",
            f"data.cache_dir={cache_dir}", f"data.seq_len={args.seq_len}", f"data.batch_size={args.batch}",
            f"seed={args.seed}", *tasks]


class LightningStepTimer(pl.Callback):
    """perf_counter at the end of every training batch, and the input tokens of those batches."""

    def __init__(self) -> None:
        self.stamps: list[float] = []
        self.input_tokens = 0

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.stamps.append(time.perf_counter())
        self.input_tokens += int(batch["input_ids"].numel())


def hf_step_timer() -> Any:
    from transformers import TrainerCallback

    class HFStepTimer(TrainerCallback):
        """perf_counter at the end of every optimizer step."""

        def __init__(self) -> None:
            self.stamps: list[float] = []

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.stamps.append(time.perf_counter())

    return HFStepTimer()


def run_arm(spec: dict[str, Any]) -> dict[str, Any]:
    """One run of one arm (in this process): train, then return step times and counts."""
    from lmbench.config import compose_config
    from lmbench.pretrain import run_pretraining
    from lmbench.results import empty_record

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))

    with tempfile.TemporaryDirectory() as out:
        cfg = compose_config([*spec["overrides"], f"trainer.max_steps={spec['steps']}", f"output_dir={out}"])
        if spec["arm"] == "c":
            timer, record = LightningStepTimer(), empty_record()
            run_pretraining(cfg, record, callbacks=[timer])
            result = {"steps": record["steps"], "input_tokens": timer.input_tokens, "precision": record["precision"],
                      "parameters": record["backbone"]["parameters"]["total"], "lmbench_val_loss": record["val_loss"]}
            if spec["quality"]:
                from transformers import AutoModelForMaskedLM

                model = AutoModelForMaskedLM.from_pretrained(record["model_dir"], local_files_only=True)
                result["val_loss"] = mlm_val_loss(model, val_batches(cfg, prepare(cfg)))
        else:
            timer = hf_step_timer()
            result = run_hf(cfg, bf16=spec["arm"] == "b", timer=timer, evaluate=spec["quality"])
            result["precision"] = "bf16-mixed" if spec["arm"] == "b" else "32-true"
    intervals = [b - a for a, b in zip(timer.stamps, timer.stamps[1:])][spec["warmup"]:]
    tokens_per_step = result["input_tokens"] / max(1, result["steps"])
    speed = tokens_per_step / statistics.median(intervals) if intervals else float("nan")
    result.update(arm=spec["arm"], objective=spec["objective"], rep=spec.get("rep"), step_s=intervals,
                  tokens_per_step=tokens_per_step, tokens_per_s=speed)
    return result


def launch(spec: dict[str, Any], in_process: bool) -> dict[str, Any]:
    """Run one arm in a fresh Python process (or here, with in_process: for tests only)."""
    if in_process:
        return run_arm(spec)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "disabled",
           "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True,
                          env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(MARK)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"arm {spec['arm']} ({spec['objective']}) failed (exit {proc.returncode}):\n"
                           f"{proc.stderr[-4000:]}")
    return json.loads(lines[-1][len(MARK):])


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (objective, arm): median/min/max over runs of the per-run median tokens/s, and c/a, c/b."""
    rows = []
    for objective in dict.fromkeys(r["objective"] for r in runs):
        medians = {}
        for arm in [a for a in ARMS if any(r["arm"] == a and r["objective"] == objective for r in runs)]:
            mine = [r for r in runs if r["objective"] == objective and r["arm"] == arm]
            values = [r["tokens_per_s"] for r in mine]
            medians[arm] = statistics.median(values)
            rows.append({"objective": objective, "arm": arm, "label": ARMS[arm], "precision": mine[0]["precision"],
                         "runs": len(values), "median_tokens_per_s": medians[arm], "min_tokens_per_s": min(values),
                         "max_tokens_per_s": max(values), "parameters": mine[0]["parameters"],
                         "tokens_per_step": mine[0]["tokens_per_step"],
                         "val_loss": [r.get("val_loss") for r in mine]})
        per_rep = {(r["arm"], r["rep"]): r["tokens_per_s"] for r in runs if r["objective"] == objective}
        for row in rows:
            if row["objective"] != objective or row["arm"] != "c":
                continue
            for a in ("a", "b"):
                if a in medians:
                    row[f"c/{a}"] = medians["c"] / medians[a]
                    pairs = [per_rep[("c", rep)] / per_rep[(a, rep)] for arm, rep in per_rep if arm == a
                             and ("c", rep) in per_rep]  # the same repetition: robust to drifting load
                    row[f"c/{a} paired"] = statistics.median(pairs) if pairs else float("nan")
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    print(f"{'objective':9} {'arm':22} {'precision':10} {'median tok/s':>12} {'min':>9} {'max':>9} "
          f"{'c/a':>6} {'c/b':>6} {'c/a paired':>10} {'c/b paired':>10}")
    for r in rows:
        widths = (("c/a", 6), ("c/b", 6), ("c/a paired", 10), ("c/b paired", 10))
        ratios = [f"{r[k]:{w}.2f}" if k in r else f"{'':{w}}" for k, w in widths]
        print(f"{r['objective']:9} {r['arm'] + ' ' + r['label']:22} {r['precision']:10} "
              f"{r['median_tokens_per_s']:12,.0f} {r['min_tokens_per_s']:9,.0f} {r['max_tokens_per_s']:9,.0f} "
              f"{' '.join(ratios)}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--objectives", nargs="+", default=list(BACKBONES), choices=list(BACKBONES))
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    p.add_argument("--reps", type=int, default=3, help="interleaved repetitions (a b c a b c ...)")
    p.add_argument("--steps", type=int, default=20, help="optimizer steps per run")
    p.add_argument("--warmup", type=int, default=4, help="leading step intervals not timed")
    p.add_argument("--b-steps", type=int, default=6, help="steps per run of arm b (bf16; slow without native bf16)")
    p.add_argument("--b-warmup", type=int, default=2, help="untimed leading intervals of arm b")
    p.add_argument("--quality", action="store_true", help="also: MLM val loss of a and c after --quality-steps")
    p.add_argument("--quality-steps", type=int, default=300)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch threads in every arm (default: torch's, one per core)")
    p.add_argument("--cache-dir", help="tokenizer/token cache (default: a temporary folder)")
    p.add_argument("--json", type=Path, help="write every run and the summary here")
    p.add_argument("--tiny", action="store_true", help="tiny models on a small built-in corpus (tests)")
    p.add_argument("--in-process", action="store_true", help="run arms in this process (tests; not for timing)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.child:
        print(MARK + json.dumps(run_arm(json.loads(args.child))), flush=True)
        return {}
    with tempfile.TemporaryDirectory() as tmp_cache:
        cache = args.cache_dir or tmp_cache
        for objective in args.objectives:  # tokenizer + token cache once, outside every timed run
            from lmbench.config import compose_config
            prepare(compose_config([*lmbench_overrides(objective, args, cache), "output_dir=."]))
        print(f"corpus: {WIKITEXT if WIKITEXT.is_dir() and not args.tiny else 'built-in'}; WordPiece {args.vocab}; "
              f"{args.steps} steps per run (b: {args.b_steps}), first {args.warmup} (b: {args.b_warmup}) intervals "
              f"untimed; {args.reps} reps; CPU bf16 native: {cpu_supports_bf16()}", flush=True)
        runs = []
        for rep in range(args.reps):
            for objective in args.objectives:
                for arm in args.arms:
                    short = arm == "b"  # emulated bf16 is several times slower where the CPU lacks it
                    spec = {"arm": arm, "objective": objective, "steps": args.b_steps if short else args.steps,
                            "warmup": args.b_warmup if short else args.warmup, "quality": False,
                            "threads": args.threads, "rep": rep, "overrides": lmbench_overrides(objective, args, cache)}
                    runs.append(launch(spec, args.in_process))
                    print(f"rep {rep} {objective:8} {arm}: {runs[-1]['tokens_per_s']:,.0f} tokens/s", flush=True)
        rows = summarize(runs)
        print_table(rows)
        quality = []
        if args.quality:
            for arm in ("a", "c"):
                spec = {"arm": arm, "objective": "mlm", "steps": args.quality_steps, "warmup": args.warmup,
                        "quality": True, "threads": args.threads, "overrides": lmbench_overrides("mlm", args, cache)}
                quality.append(launch(spec, args.in_process))
            a, c = (q["val_loss"] for q in quality)
            print(f"MLM val loss after {args.quality_steps} steps (seed {args.seed}): HF Trainer {a:.4f}, "
                  f"lmbench {c:.4f} (its own val/loss {quality[1]['lmbench_val_loss']:.4f}); "
                  f"difference {100 * (c - a) / a:+.2f}%")
    report = {"runs": runs, "summary": rows, "quality": quality, "args": {k: str(v) for k, v in vars(args).items()}}
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
