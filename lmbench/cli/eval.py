"""`lmbench-eval`: evaluate an already-trained model on downstream tasks, without pretraining.

Objectives are compared on the same tasks and modes whether a model was trained by `lmbench` a minute
ago or months ago, or is any local transformers checkpoint of a supported kind (masked LM, causal LM,
seq2seq LM, saved with its fast tokenizer). Tasks and modes are chosen exactly as for `lmbench`, with
Hydra overrides of the `task/` config group, and the scores have the same keys as results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

EVAL_FILE = "eval_results.json"
EXAMPLES = """\
task presets (conf/task/*.yaml; several at once: task=[a,b]):
  sentiment   built-in reviews, negative / positive (classification)
  topic       built-in passages, five topics (classification)
  ner         built-in sentences, PER / LOC / ORG / MISC (IOB2 span F1)
  sst2        SST-2 from <data_root>/sst2/*.tsv (data_root: $LMBENCH_DATA, else ./data)
  conll2003   CoNLL-2003 from <data_root>/conll2003/*.txt
modes (task.<name>.modes): classification: finetune, probe, zeroshot, pet; ner: finetune, probe, zeroshot
  default: probe + zeroshot; finetune (lrs x seeds grid, selected on dev) and pet are opt-in.

examples:
  lmbench-eval outputs/2026-01-01/12-00-00_mlm_s0/model
  lmbench-eval runs/mlm/model 'task=[sentiment,ner]' 'task.sentiment.modes=[probe,zeroshot,finetune]'
  lmbench-eval runs/clm/model 'task=[sst2]' task.sst2.max_train=2000 --device cuda
  lmbench-eval ~/models/my-bert 'task=[conll2003]' task.conll2003.data_root=/data --output scores.json
  lmbench-eval runs/mlm/model 'task=[topic]' --update-results   # add the scores to the run's results.json

Scores are keyed "<task>/<mode>/<metric>": the test score of the dev-selected setting is the bare metric
(acc, f1), dev_<metric> the best dev score, dev_<metric>_median the grid median (finetune), and
<metric>_std the spread over prompt templates (zeroshot). Exit status: 0 done, 2 bad input (the
message names the key or file and the allowed values)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lmbench-eval", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Evaluate an already-trained model on downstream tasks, without pretraining. Writes "
        f"{EVAL_FILE} (scores, per-mode details, model kind) and prints a table of the scores.",
        epilog=EXAMPLES)
    parser.add_argument("model_dir", metavar="MODEL_DIR", help="local directory written by save_pretrained (model "
                        "and fast tokenizer), e.g. <run>/model of an lmbench run; never a hub name")
    parser.add_argument("overrides", metavar="KEY=VALUE", nargs="*",
                        help="Hydra overrides of lmbench's config: task=[...] picks tasks (default: sentiment, ner), "
                        "task.<name>.<key>=... changes one (modes, n_train, max_test, templates, finetune.lrs, ...), "
                        "data.builtin_seed=N picks the world of the built-in tasks (the one the model was trained on)")
    parser.add_argument("--output", metavar="PATH", help=f"file to write, or a folder to write {EVAL_FILE} into "
                        f"(default: the run folder when MODEL_DIR is <run>/model, else MODEL_DIR)")
    parser.add_argument("--update-results", action="store_true", help="also merge the scores into the run's "
                        "results.json (MODEL_DIR must be <run>/model of an lmbench run), so lmbench-board shows them")
    parser.add_argument("--seed", type=int, default=0, help="seed of the evaluation's global torch RNG (default 0)")
    parser.add_argument("--device", default="auto", help="torch device: auto (cuda if available), cpu, cuda, ...")
    parser.add_argument("--json", action="store_true", help="print the scores as JSON instead of a table")
    return parser


def run_dir_of(model_dir: Path) -> Path | None:
    """The lmbench run folder holding `model_dir` (<run>/model with <run>/results.json), else None."""
    from lmbench.results import RESULTS_FILE

    parent = model_dir.resolve().parent
    return parent if (parent / RESULTS_FILE).is_file() else None


def output_path(args: argparse.Namespace, model_dir: Path) -> Path:
    if args.output:
        out = Path(args.output).expanduser()
        return out / EVAL_FILE if out.is_dir() or args.output.endswith(("/", "\\")) else out
    return (run_dir_of(model_dir) or model_dir) / EVAL_FILE


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean bad input (answered with exit status 2 and the message)."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from lmbench.eval.family import ModelDirError
    from lmbench.eval.prompts import PromptError
    from lmbench.eval.scoring import SlotError
    from lmbench.tasks.config import TaskConfigError
    from lmbench.tasks.readers import TaskDataError

    return (HydraException, OmegaConfBaseException, ModelDirError, PromptError, SlotError, TaskConfigError,
            TaskDataError)


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Compose the config, check every task, load the model and evaluate; returns the eval record."""
    from omegaconf import OmegaConf

    from lmbench.config import compose_config
    from lmbench.eval.family import load_scorer_model
    from lmbench.eval.runner import check_tasks, evaluate_tasks, resolve_device
    from lmbench.results import now_iso, package_versions

    started, start = now_iso(), time.perf_counter()
    cfg = compose_config(["output_dir=.", *args.overrides])
    tasks = check_tasks(cfg)  # names, modes, files, labels, prompts: before the model is loaded
    if not tasks:
        raise ValueError("no task selected (task=[]); choose some, e.g. task=[sentiment,ner]")
    device = resolve_device(args.device)
    loaded = load_scorer_model(args.model_dir, device=device)  # a bad MODEL_DIR fails before any scoring
    details: dict[str, Any] = {}
    scores = evaluate_tasks(args.model_dir, tasks, args.seed, device=device, details=details)
    return {
        "schema_version": 1, "status": "completed", "model_dir": str(Path(args.model_dir).resolve()),
        "kind": loaded.kind, "family": loaded.family, "seed": args.seed, "device": device,
        "overrides": list(args.overrides),
        "tasks": {t.name: OmegaConf.to_container(OmegaConf.structured(t.config)) for t in tasks},
        "scores": scores, "eval": {"device": device, "seconds": round(time.perf_counter() - start, 3),
                                   "tasks": details},
        "versions": package_versions(), "started_at": started, "finished_at": now_iso(),
    }


def write_json(path: Path, record: dict[str, Any]) -> None:
    """Write `record` to `path` atomically (temporary file in the same folder, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(record, fh, indent=2, default=str)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def update_run_results(run_dir: Path, record: dict[str, Any]) -> Path:
    """Merge `record`'s scores (and eval details, per task) into <run>/results.json; returns its path."""
    from lmbench.results import RESULTS_FILE, read_results, write_results

    results = read_results(run_dir / RESULTS_FILE)
    results["scores"] = {**(results.get("scores") or {}), **record["scores"]}
    previous = results.get("eval") or {}
    results["eval"] = {**previous, "device": record["device"],
                       "tasks": {**(previous.get("tasks") or {}), **record["eval"]["tasks"]}}
    return write_results(run_dir, results)


def print_table(record: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{record['model_dir']} ({record['family']}, {record['kind']})")
    for column, justify in (("task", "left"), ("mode", "left"), ("metric", "left"), ("value", "right")):
        table.add_column(column, justify=justify)
    for key, value in record["scores"].items():
        task, mode, metric = key.split("/", 2)
        shown = ", ".join(f"{v:.4f}" for v in value) if isinstance(value, list) else f"{value:.4f}"
        table.add_row(task, mode, metric, shown)
    console = Console(width=120)
    console.print(table)
    seconds = {f"{t}/{m}": d["seconds"] for t, info in record["eval"]["tasks"].items()
               for m, d in info["modes"].items()}
    console.print("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in seconds.items()), highlight=False)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    bad = [o for o in args.overrides if "=" not in o and not o.startswith("~")]
    if bad:
        parser.error(f"{bad[0]!r} is not an override; write KEY=VALUE, e.g. task=[sentiment,ner]")
    model_dir = Path(args.model_dir).expanduser()
    run_dir = run_dir_of(model_dir) if model_dir.is_dir() else None
    if args.update_results and run_dir is None:
        parser.error(f"--update-results needs MODEL_DIR to be <run>/model of an lmbench run; {args.model_dir!r} has "
                     "no results.json beside it")
    import transformers

    transformers.utils.logging.disable_progress_bar()
    try:
        record = evaluate(args)
    except Exception as exc:
        from lmbench.cli.main import is_user_error

        if not (isinstance(exc, user_errors()) or is_user_error(exc)):
            raise  # a bug: keep the traceback
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    out = output_path(args, model_dir)
    write_json(out, record)
    if args.update_results and run_dir is not None:
        update_run_results(run_dir, record)
    if args.json:
        print(json.dumps(record["scores"], indent=2))
    else:
        print_table(record)
        print(f"wrote {out}" + (f" and updated {run_dir / 'results.json'}" if args.update_results else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
