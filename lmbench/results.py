"""`results.json`: the one documented record every run leaves in its output directory.

Hydra multirun keeps going after a failed job and only reports at the end, so each job writes its own
record — `status: completed` with its numbers, or `status: failed` with the error — and leaderboards
are built from these files alone. Writes are atomic (temporary file, then rename), so a crash never
leaves a half-written record that could be mistaken for a result.

Schema (version 1), every key always present:
    schema_version  int     1
    status          str     "running" | "completed" | "failed"
    error           obj?    {"type": str, "message": str} when failed, else null
    objective       obj     {"name": str, "config": {...}}
    backbone        obj     {"kind", "family", "size", "pretrained", "parameters": {"total", "embedding",
                            "non_embedding"}, "hidden", "layers", "heads"}
    objective_parameters int  trainable parameters the objective adds beside the backbone (0 for most)
    seed            int
    steps           int     optimizer steps taken
    tokens_seen     int     raw corpus tokens consumed by training batches
    supervised_tokens int   target positions that carried loss
    train_loss      float?  last logged training loss
    val_loss        float?  validation loss at the end of training
    wall_time_s     float   seconds from start of the recipe to the end of training
    budget          obj?    the budget honoured: {"kind": steps|tokens|flops|time, "value", "key" (budget.value,
                            or the alias trainer.max_steps / trainer.max_tokens that overrode it), "description",
                            "max_steps" (null for time), "max_time_s" (null unless time), "tokens_per_step"}
    train_time_s    float?  seconds inside the training loop, validation excluded, summed over resumes: the
                            time budget's clock and the denominator of tokens_per_s, flops_per_s and mfu
    tokens_per_s    float?  tokens_seen / train_time_s
    flops           float?  training FLOPs actually spent: steps x flops_per_step (null: the backbone family
                            has no FLOP formula, see lmbench.budget.flops)
    flops_per_step  float?  analytic training FLOPs (forward + backward matmuls) of one optimizer step,
                            counted on the run's first batch x accumulate_grad_batches
    flops_per_token float?  flops_per_step / corpus tokens per step
    flops_per_s     float?  flops / train_time_s
    peak_flops      float?  measured peak matmul FLOP/s of the device in the run's compute dtype, times the
                            data-parallel devices (flops count the global batch)
    peak_flops_dtype str?   the dtype of peak_flops ("float32", "bfloat16", "float16")
    peak_flops_fp32 float?  the same device's measured fp32 peak: the common yardstick across precisions
    mfu             float?  model FLOP utilisation: flops_per_s / peak_flops (against its own dtype's peak)
    mfu_fp32        float?  flops_per_s / peak_flops_fp32 (comparable between runs of different precisions)
    precision       str     canonical Lightning precision that ran (e.g. "bf16-mixed" also when
                            "16-mixed" was asked for on a CPU, "32-true" for `32`)
    precision_detail obj?   {"requested", "name", "device", "reason", "emulated", "compute_dtype"}
    hardware        obj?    {"cpu", "machine", "cpu_count", "torch_threads", "cpu_bf16_flags", "cpu_native_bf16",
                            "torch"} (+ "gpu", "gpu_count", "gpu_capability", "gpu_bf16", "cuda" on CUDA)
    data            obj     {"source", "fingerprint", "n_tokens", "train_tokens", "val_tokens", "seq_len",
                            "block_len", "batch_size"}
    audit           obj?    corruption audit on the first batches: {"passed", "batches", "tokens", "stats":
                            {name: {"promised", "tolerance", "measured", "ok"}}}; null if nothing promised
    config_hash     str     sha256 of the resolved config (output_dir, hydra and resume excluded)
    tokenizer_hash  str?    sha256 of the tokenizer's tokenizer.json
    model_dir       str?    the saved transformers directory
    versions        obj     package versions (python, torch, transformers, pytorch_lightning, hydra, lmbench)
    started_at, finished_at  str  ISO-8601 UTC timestamps
    resumes         list    [{"from_checkpoint": str, "step": int}, ...]: every resume this run's final
                            state went through, oldest first; [] for an uninterrupted run
    rejected_checkpoints list  [{"path": str, "error": str}]: checkpoints resume=auto found invalid
                            (truncated, corrupt, no manifest) and passed over
    skipped_steps   int     steps skipped for a non-finite loss (trainer.nonfinite=skip); 0 otherwise
    skipped_at      list    the first 100 skipped steps (0-based optimizer steps)
    scores          obj     downstream scores {"<task>/<mode>/<metric>": float | [float per fine-tuning seed]}
                            (lmbench.eval.runner); {} when no task ran (task=[])
    eval            obj?    {"device", "seconds", "tasks": {task: {"type", "source", "sizes", "modes": {mode:
                            {"seconds", ...full result: grids, per-template and per-type scores}}}}}; null: none

A run writes this file with status "running" as soon as its inputs are checked, so an output directory
whose run was killed says "running", never an older run's "completed".
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
RESULTS_FILE = "results.json"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for dist in ("torch", "transformers", "pytorch-lightning", "hydra-core", "tokenizers", "lmbench"):
        try:
            versions[dist.replace("-", "_")] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist.replace("-", "_")] = "not installed"
    return versions


RUN_LOCATION_KEYS = ("output_dir", "hydra", "resume")


def run_config(resolved: dict[str, Any]) -> dict[str, Any]:
    """The resolved config without the keys that say where a run lives or how it was (re)started."""
    return {k: v for k, v in resolved.items() if k not in RUN_LOCATION_KEYS}


def config_hash(resolved: dict[str, Any]) -> str:
    """Hash of the resolved config without run-location keys, so identical setups hash identically
    (a resumed run hashes like the run it continues)."""
    return hashlib.sha256(json.dumps(run_config(resolved), sort_keys=True, default=str).encode()).hexdigest()


def empty_record() -> dict[str, Any]:
    """A record with every schema key present; the run fills it in as it goes."""
    return {
        "schema_version": SCHEMA_VERSION, "status": "running", "error": None,
        "objective": {"name": None, "config": {}}, "backbone": {}, "objective_parameters": 0, "seed": None,
        "steps": 0, "tokens_seen": 0, "supervised_tokens": 0, "train_loss": None, "val_loss": None,
        "wall_time_s": 0.0, "budget": None, "train_time_s": None, "tokens_per_s": None, "flops": None,
        "flops_per_step": None, "flops_per_token": None, "flops_per_s": None, "peak_flops": None, "mfu": None,
        "peak_flops_dtype": None, "peak_flops_fp32": None, "mfu_fp32": None,
        "precision": None, "precision_detail": None, "hardware": None, "data": {}, "audit": None, "config_hash": None, "tokenizer_hash": None,
        "model_dir": None, "versions": package_versions(), "started_at": now_iso(), "finished_at": None,
        "resumes": [], "rejected_checkpoints": [], "skipped_steps": 0, "skipped_at": [], "scores": {}, "eval": None,
    }


def write_results(output_dir: Path, record: dict[str, Any]) -> Path:
    """Atomically write `record` as output_dir/results.json and return the path."""
    output_dir.mkdir(parents=True, exist_ok=True)
    target = output_dir / RESULTS_FILE
    fd, tmp = tempfile.mkstemp(prefix=".results.", suffix=".tmp", dir=output_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(record, fh, indent=2, sort_keys=False, default=str)
            fh.write("\n")
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def read_results(path: Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)
