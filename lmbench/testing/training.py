"""The loss-side conformance checks: the objective's loss trains a real backbone of every kind it declares.

A loss that is finite on step 0 can still be wrong (targets shifted twice, labels passed to the HF
model, a head that never receives gradient). The one behaviour every correct objective shares is that
it can overfit a single repeated batch, so that is what is checked: a shrunken `tiny` backbone of each
declared kind, AdamW, `steps` steps on one fixed corrupted batch, final loss below 0.9 x the first.
Objective-owned modules (`build_modules`) are optimised with the backbone, as in the core.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel

from lmbench.backbones import build_backbone, resolve_family
from lmbench.config import BackboneConfig
from lmbench.objectives.base import Batch, LossOutput, Objective, TokenInfo
from lmbench.testing.checks import one_line
from lmbench.testing.report import CheckResult

DECREASE = 0.9  # final loss must be below this fraction of the first
LEARNING_RATE = 3e-3
# `tiny` is 128 wide and 4 deep; the kit shrinks it further so a check takes about a second per kind.
SHRINK: dict[str, dict[str, int]] = {
    "bert": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128),
    "roberta": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128),
    "gpt2": dict(n_embd=64, n_layer=2, n_head=2, n_inner=128),
    "llama": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                  head_dim=32, intermediate_size=128),
    "t5": dict(d_model=64, num_layers=1, num_decoder_layers=1, num_heads=2, d_kv=32, d_ff=128),
    "bart": dict(d_model=64, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                 decoder_attention_heads=2, encoder_ffn_dim=128, decoder_ffn_dim=128),
}


def micro_backbone(kind: str, tokens: TokenInfo, max_positions: int, family: str = "auto") -> PreTrainedModel:
    """The kind's default family (bert / gpt2 / t5) at size `tiny`, shrunk to 64 wide and 2 layers."""
    cfg = BackboneConfig(kind=kind, size="tiny", family=family)
    cfg.config_overrides = dict(SHRINK[resolve_family(cfg, kind)])
    return build_backbone(cfg, kind, tokens, max_positions)


@dataclass
class TrainingRun:
    """What one overfitting run saw: the loss per step (last = after all updates) and the first stats."""

    family: str
    losses: list[float] = field(default_factory=list)
    first: LossOutput | None = None
    modules: dict[str, nn.Module] = field(default_factory=dict)
    idle_modules: list[str] = field(default_factory=list)


def save_micro_backbones(tokenizer: Any, kinds: Sequence[str], make_dir: Callable[[str], Path],
                         max_positions: int = 128) -> dict[str, Path]:
    """kind -> a `save_pretrained` directory (model + tokenizer) of a random-init micro backbone per kind,
    each built after `torch.manual_seed(0)`: the local model directories evaluation code loads."""
    tokens = TokenInfo.from_tokenizer(tokenizer)
    dirs = {}
    for kind in kinds:
        torch.manual_seed(0)
        path = make_dir(kind)
        micro_backbone(kind, tokens, max_positions).save_pretrained(path)
        tokenizer.save_pretrained(path)
        dirs[kind] = path
    return dirs


def overfit(objective: Objective, kind: str, tokens: TokenInfo, batch: Batch, max_positions: int,
            steps: int) -> TrainingRun:
    """Train a micro backbone (+ `build_modules`) on `batch` for `steps` AdamW steps, one thread,
    with the global RNG forked so the caller's random state is untouched."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = micro_backbone(kind, tokens, max_positions)
            run = TrainingRun(family=model.config.model_type)
            run.modules = objective.build_modules(model)
            if not isinstance(run.modules, dict) or not all(isinstance(m, nn.Module) for m in run.modules.values()):
                raise TypeError(f"build_modules returned {type(run.modules).__name__}; expected dict[str, nn.Module]")
            holder = nn.ModuleDict({"model": model, **{f"objective_{k}": m for k, m in run.modules.items()}})
            params = [p for p in holder.parameters() if p.requires_grad]  # shared tensors appear once
            optimizer = torch.optim.AdamW(params, lr=LEARNING_RATE, weight_decay=0.0)
            holder.train()
            touched: set[str] = set()
            for step in range(steps + 1):
                out = objective.loss(model, batch)
                if step == 0:
                    run.first = out
                    check_loss_output(out)
                run.losses.append(float(out.loss.detach()))
                if step == steps or not math.isfinite(run.losses[-1]):
                    break
                optimizer.zero_grad(set_to_none=True)
                out.loss.backward()
                for key, module in run.modules.items():
                    if any(p.grad is not None for p in module.parameters()):
                        touched.add(key)
                optimizer.step()
            run.idle_modules = [k for k, m in run.modules.items()
                                if any(p.requires_grad for p in m.parameters()) and k not in touched]
            return run
    finally:
        torch.set_num_threads(threads)


def check_loss_output(out: object) -> None:
    """Raise TypeError unless `out` is a LossOutput with a scalar float loss that requires grad."""
    if not isinstance(out, LossOutput):
        raise TypeError(f"loss returned a {type(out).__name__}; return LossOutput(loss, stats)")
    loss = out.loss
    if not isinstance(loss, Tensor) or loss.dim() != 0 or not loss.is_floating_point():
        shape = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
        raise TypeError(f"LossOutput.loss is {shape}; expected a 0-dim float tensor")
    if not loss.requires_grad:
        raise TypeError("LossOutput.loss does not require grad (detached, or computed under no_grad)")


def check_training(objective: Objective, kind: str, tokens: TokenInfo, batch: Batch, max_positions: int,
                   steps: int) -> tuple[CheckResult, TrainingRun | None]:
    """`loss[kind]`: finite, decreasing to < 0.9 x the first loss, every owned module trained."""
    name = f"loss[{kind}]"
    try:
        run = overfit(objective, kind, tokens, batch, max_positions, steps)
    except Exception as exc:  # noqa: BLE001 - reported
        return CheckResult(name, False, f"raised {one_line(exc)}",
                           f"make loss(model, batch) work on the {kind} backbone, calling the model without labels "
                           "and returning LossOutput(scalar loss, stats)"), None
    losses, first = run.losses, run.losses[0]
    shown = f"{run.family}: loss {first:.3f} -> {losses[-1]:.3f} in {len(losses) - 1} steps"
    if not all(math.isfinite(v) for v in losses):
        return CheckResult(name, False, f"{shown}: non-finite loss at step {next(i for i, v in enumerate(losses) if not math.isfinite(v))}",
                           "compute cross-entropy in float32 and divide by max(count, 1)"), run
    if run.idle_modules:
        return CheckResult(name, False, f"{shown}; module(s) {run.idle_modules} from build_modules got no gradient",
                           "use the modules build_modules returns in loss, or do not return them"), run
    if not losses[-1] < DECREASE * first:
        return CheckResult(name, False, f"{shown}; needed < {DECREASE} x {first:.3f} on a repeated batch",
                           "check the targets line up with the logits (shift once for decoders, never pass "
                           "labels to the HF model) and that the loss reaches every trained parameter"), run
    return CheckResult(name, True, shown), run


def check_loss_stats(run: TrainingRun | None) -> CheckResult:
    """`supervised_tokens` is in the stats, a positive count; every stat is a tensor."""
    name = "loss_stats"
    if run is None or run.first is None:
        return CheckResult(name, False, "loss did not run; see the loss check",
                           "fix the loss check first")
    stats = run.first.stats
    fix = "return stats={'supervised_tokens': (labels != -100).sum(), ...} as tensors (the core detaches them)"
    if not isinstance(stats, dict):
        return CheckResult(name, False, f"LossOutput.stats is a {type(stats).__name__}", fix)
    not_tensor = [k for k, v in stats.items() if not isinstance(v, Tensor)]
    if not_tensor:
        return CheckResult(name, False, f"stats {not_tensor} are not tensors", fix)
    count = stats.get("supervised_tokens")
    if count is None:
        return CheckResult(name, False, f"no 'supervised_tokens' in stats (keys: {sorted(stats)})", fix)
    if count.numel() != 1 or not math.isfinite(float(count)) or float(count) <= 0:
        return CheckResult(name, False, f"supervised_tokens = {count.tolist()}; expected a positive scalar count",
                           fix)
    return CheckResult(name, True, f"stats {sorted(stats)}; supervised_tokens = {int(float(count))}")
