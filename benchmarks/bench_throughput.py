"""Training throughput of lmbench's pretraining next to the Hugging Face Trainer recipe, like for like.

For each objective (MLM on a BERT-shaped encoder, CLM on a GPT-2-shaped decoder, T5 span corruption on a
T5-shaped encoder-decoder; all hidden 256, 4 layers, 4 heads, ffn 1024 = lmbench's `small` preset,
sequence 128, batch 32, a WordPiece vocabulary of 8192 trained on the corpus) four arms run, each pinned
to one precision, interleaved a b c d a b c d ..., each in a fresh process, all with the same steps:

    a  HF Trainer, fp32 + DataCollatorForLanguageModeling (run_mlm/run_clm recipe; for T5 a
       straightforward port of the Flax example's span-corruption collator)
    b  the same with bf16=True (bf16 autocast)
    c  lmbench's own recipe (compose_config + run_pretraining), trainer.precision=32-true
    d  lmbench's own recipe, trainer.precision=bf16-mixed

Ratios compare like with like: c/a (fp32) and d/b (bf16). Both sides use the same lmbench config: same
tokenizer and packed blocks (one cache), the same model (lmbench's builder: same class, config and
initial weights), batch, steps, seed and AdamW hyper-parameters (lr, betas, eps, weight decay, warmup,
linear decay, gradient clipping 1.0). A step's time is the wall time between the ends of consecutive
optimizer steps, so data loading, corruption, logging and callbacks count; startup (imports, tokenizer,
audit, peak-FLOPs probe) and what follows training do not; downstream tasks are off (task=[]).
Reported: input tokens/s (median over the timed steps after warm-up) per run; per arm the median, min
and max over --reps runs, and MFU (lmbench's analytic FLOPs of the objective's step, the same useful work
for both sides, over the measured peak of the arm's dtype); "paired": the median over repetitions of the
ratio within one repetition (robust when other load drifts). The hardware is printed first; on a CPU
without native bf16 the bf16 arms are marked "emulated" and left out of the targets (--targets). The
corpus is ../shared/data/wikitext-2 or, when absent, the built-in corpus. --quality adds the 300-step
MLM validation-loss parity check (b vs d on a native-bf16 machine, else a vs c; scored in fp32 on
lmbench's fixed validation batches).

    python benchmarks/bench_throughput.py                      # all objectives, arms a b c d, 3 reps
    python benchmarks/bench_throughput.py --objectives mlm --quality   # + the MLM loss parity check
    python benchmarks/bench_throughput.py --arms a c           # fp32 only (where bf16 is emulated)
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
from lmbench.train.precision import cpu_supports_bf16, describe_hardware, hardware_line  # noqa: E402

from _hf_peer import mlm_val_loss, prepare, run_hf, val_batches  # noqa: E402

WIKITEXT = Path(__file__).resolve().parents[2] / "shared" / "data" / "wikitext-2"
BACKBONES = {"mlm": "encoder_small", "clm": "decoder_small", "t5_span": "encoder_decoder_small"}
ARMS = {"a": "HF Trainer fp32", "b": "HF Trainer bf16=True", "c": "lmbench 32-true", "d": "lmbench bf16-mixed"}
PRECISION = {"a": "32-true", "b": "bf16-mixed", "c": "32-true", "d": "bf16-mixed"}
PEER = {"c": "a", "d": "b"}  # each lmbench arm's like-for-like HF arm
TARGETS = {("mlm", "d/b"): 2.5, ("clm", "d/b"): 1.5, ("t5_span", "d/b"): 1.5}  # on a native-bf16 CPU
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
        cfg = compose_config([*spec["overrides"], f"trainer.max_steps={spec['steps']}", f"output_dir={out}",
                              f"trainer.precision={PRECISION[spec['arm']]}"])
        if spec["arm"] in PEER:
            timer, record = LightningStepTimer(), empty_record()
            run_pretraining(cfg, record, callbacks=[timer])
            result = {"steps": record["steps"], "input_tokens": timer.input_tokens, "precision": record["precision"],
                      "parameters": record["backbone"]["parameters"]["total"], "lmbench_val_loss": record["val_loss"],
                      "flops_per_step": record["flops_per_step"], "peak_flops": record["peak_flops"],
                      "peak_flops_fp32": record["peak_flops_fp32"]}
            if spec["quality"]:
                from transformers import AutoModelForMaskedLM

                model = AutoModelForMaskedLM.from_pretrained(record["model_dir"], local_files_only=True)
                result["val_loss"] = mlm_val_loss(model, val_batches(cfg, prepare(cfg)))
        else:
            timer = hf_step_timer()
            result = run_hf(cfg, bf16=spec["arm"] == "b", timer=timer, evaluate=spec["quality"])
            result["precision"] = PRECISION[spec["arm"]]
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


def summarize(runs: list[dict[str, Any]], native_bf16: bool) -> list[dict[str, Any]]:
    """One row per (objective, arm): median/min/max over runs of the per-run median tokens/s, MFU, and for
    the lmbench arms the ratio to their like-for-like HF arm (c/a, d/b), plain and paired."""
    rows = []
    for objective in dict.fromkeys(r["objective"] for r in runs):
        mine = {a: [r for r in runs if r["objective"] == objective and r["arm"] == a] for a in ARMS}
        lm = next((r for a in PEER for r in mine[a]), None)  # the analytic FLOPs of this objective's step
        medians = {}
        for arm, arm_runs in mine.items():
            if not arm_runs:
                continue
            values = [r["tokens_per_s"] for r in arm_runs]
            medians[arm] = statistics.median(values)
            row = {"objective": objective, "arm": arm, "label": ARMS[arm], "precision": PRECISION[arm],
                   "emulated": PRECISION[arm].startswith("bf16") and not native_bf16, "runs": len(values),
                   "median_tokens_per_s": medians[arm], "min_tokens_per_s": min(values),
                   "max_tokens_per_s": max(values), "parameters": arm_runs[0]["parameters"],
                   "tokens_per_step": arm_runs[0]["tokens_per_step"], "val_loss": [r.get("val_loss") for r in arm_runs]}
            peaks = next((r for r in runs if r["arm"] in PEER and PRECISION[r["arm"]] == PRECISION[arm]
                          and r.get("peak_flops")), None)
            if lm is not None and lm.get("flops_per_step") and peaks is not None:
                steps_per_s = medians[arm] / row["tokens_per_step"]
                row["mfu"] = lm["flops_per_step"] * steps_per_s / peaks["peak_flops"]
                row["mfu_fp32"] = lm["flops_per_step"] * steps_per_s / peaks["peak_flops_fp32"]
            rows.append(row)
        per_rep = {(r["arm"], r["rep"]): r["tokens_per_s"] for r in runs if r["objective"] == objective}
        for row in rows:
            peer = PEER.get(row["arm"])
            if row["objective"] != objective or peer not in medians:
                continue
            key = f"{row['arm']}/{peer}"
            row["ratio_name"], row["ratio"] = key, medians[row["arm"]] / medians[peer]
            pairs = [per_rep[(row["arm"], rep)] / per_rep[(peer, rep)] for arm, rep in per_rep
                     if arm == peer and (row["arm"], rep) in per_rep]  # the same repetition: robust to drift
            row["ratio_paired"] = statistics.median(pairs) if pairs else float("nan")
            target = TARGETS.get((objective, key))
            if target is not None:
                row["target"] = target
                row["target_met"] = None if row["emulated"] else row["ratio"] >= target
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    print(f"{'objective':9} {'arm':24} {'median tok/s':>12} {'min':>9} {'max':>9} {'MFU':>6} {'MFU32':>6} "
          f"{'ratio':>10} {'paired':>6}  target")
    for r in rows:
        mfu = f"{r['mfu']:6.3f} {r['mfu_fp32']:6.3f}" if "mfu" in r else f"{'':6} {'':6}"
        ratio = f"{r['ratio_name']} {r['ratio']:5.2f} {r['ratio_paired']:6.2f}" if "ratio" in r else f"{'':10} {'':6}"
        target = ""
        if "target" in r:
            target = (f">= {r['target']}: " + ("n/a (bf16 emulated here)" if r["target_met"] is None else
                                               "met" if r["target_met"] else "NOT met"))
        label = r["arm"] + " " + r["label"] + (" (emulated)" if r["emulated"] else "")
        print(f"{r['objective']:9} {label:24} {r['median_tokens_per_s']:12,.0f} {r['min_tokens_per_s']:9,.0f} "
              f"{r['max_tokens_per_s']:9,.0f} {mfu} {ratio}  {target}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--objectives", nargs="+", default=list(BACKBONES), choices=list(BACKBONES))
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    p.add_argument("--reps", type=int, default=3, help="interleaved repetitions (a b c a b c ...)")
    p.add_argument("--steps", type=int, default=20, help="optimizer steps per run")
    p.add_argument("--warmup", type=int, default=4, help="leading step intervals not timed")
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
        native = cpu_supports_bf16()
        hardware = describe_hardware()
        print(f"hardware: {hardware_line(hardware)}", flush=True)
        print(f"corpus: {WIKITEXT if WIKITEXT.is_dir() and not args.tiny else 'built-in'}; WordPiece {args.vocab}; "
              f"{args.steps} steps per run in every arm, first {args.warmup} intervals untimed; {args.reps} reps",
              flush=True)
        runs = []
        for rep in range(args.reps):
            for objective in args.objectives:
                for arm in args.arms:
                    spec = {"arm": arm, "objective": objective, "steps": args.steps, "warmup": args.warmup,
                            "quality": False,
                            "threads": args.threads, "rep": rep, "overrides": lmbench_overrides(objective, args, cache)}
                    runs.append(launch(spec, args.in_process))
                    print(f"rep {rep} {objective:8} {arm}: {runs[-1]['tokens_per_s']:,.0f} tokens/s", flush=True)
        rows = summarize(runs, native)
        print_table(rows)
        quality = []
        if args.quality:
            pair = ("b", "d") if native and not args.tiny else ("a", "c")
            for arm in pair:
                spec = {"arm": arm, "objective": "mlm", "steps": args.quality_steps, "warmup": args.warmup,
                        "quality": True, "threads": args.threads, "overrides": lmbench_overrides("mlm", args, cache)}
                quality.append(launch(spec, args.in_process))
            a, c = (q["val_loss"] for q in quality)
            print(f"MLM val loss after {args.quality_steps} steps in {PRECISION[pair[0]]} (seed {args.seed}): HF Trainer {a:.4f}, "
                  f"lmbench {c:.4f} (its own val/loss {quality[1]['lmbench_val_loss']:.4f}); "
                  f"difference {100 * (c - a) / a:+.2f}%")
    report = {"hardware": hardware, "runs": runs, "summary": rows, "quality": quality,
              "args": {k: str(v) for k, v in vars(args).items()}}
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
