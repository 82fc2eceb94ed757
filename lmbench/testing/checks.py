"""The corruption-side conformance checks: contract, config, block length, determinism, batch format,
padding targets, introduced special tokens and the statistics audit.

Each check takes an objective (class or instance) and toy data and returns one `CheckResult` whose
failure carries a one-line fix. `lmbench.testing.conformance` runs them in order; the loss checks
that need a backbone live in `lmbench.testing.training`.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any, Sequence

import numpy as np
import torch
from omegaconf import OmegaConf
from torch import Tensor

from lmbench.audit import audit_corruption
from lmbench.objectives.base import Batch, Blocks, Objective, ObjectiveConfig, PromisedStat, TokenInfo
from lmbench.objectives.registry import validate_objective_class
from lmbench.testing.report import CheckResult
from lmbench.testing.toy import pad_row_ends, toy_blocks

IGNORE_INDEX = -100
# TokenInfo fields whose ids must never appear where the block had an ordinary token, unless the
# objective declares them in `inserted_special_tokens` (mask and sentinels are always allowed).
GUARDED_SPECIALS = ("pad", "cls", "sep", "unk", "bos")
Pair = tuple[Blocks, Batch]


def one_line(exc: BaseException) -> str:
    """`TypeName: first line of the message`, cut to 300 characters."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}"


def is_label_key(key: str) -> bool:
    return "labels" in key and not key.startswith("stat_")


def is_id_key(key: str) -> bool:
    """Keys holding token ids: `*input_ids` and label-like keys (not the `stat_*` audit tensors)."""
    return not key.startswith("stat_") and (key.endswith("input_ids") or is_label_key(key))


def check_contract(cls: Any) -> tuple[CheckResult, bool]:
    """The registry's own contract test; returns (result, fatal) where fatal stops the run."""
    name = getattr(cls, "name", None)
    problem = validate_objective_class(cls, name if isinstance(name, str) else "")
    if problem is None:
        return CheckResult("contract", True, f"name={name!r}, backbone_kinds={tuple(cls.backbone_kinds)}, "
                           f"config_class={cls.config_class.__name__}"), False
    fatal = not (isinstance(cls, type) and issubclass(cls, Objective)) or "config_class" in problem[0]
    return CheckResult("contract", False, problem[0], problem[1]), fatal


def check_config(cls: type[Objective], config: ObjectiveConfig | None) -> tuple[CheckResult, ObjectiveConfig | None]:
    """Defaults construct and validate, and the config survives Hydra's structured-config round trip."""
    name = "config"
    if config is None:
        try:
            config = cls.config_class()
        except Exception as exc:  # noqa: BLE001 - reported
            return CheckResult(name, False, f"{cls.config_class.__name__}() raised {one_line(exc)}",
                               "give every config field a default that passes __post_init__"), None
    elif not isinstance(config, cls.config_class):
        return CheckResult(name, False, f"config is a {type(config).__name__}, not a {cls.config_class.__name__}",
                           "pass an instance of the objective's config_class"), None
    try:
        text = OmegaConf.to_yaml(OmegaConf.structured(config))
        merged = OmegaConf.merge(OmegaConf.structured(cls.config_class), OmegaConf.create(text))
        back = OmegaConf.to_object(merged)
    except Exception as exc:  # noqa: BLE001
        return CheckResult(name, False, f"Hydra/OmegaConf round trip raised {one_line(exc)}",
                           "use field types OmegaConf supports (int, float, bool, str, Optional, list, dict, "
                           "nested dataclasses) with defaults"), config
    if back != config:
        diff = [f.name for f in dataclasses.fields(config) if getattr(back, f.name, None) != getattr(config, f.name)]
        return CheckResult(name, False, f"round trip through YAML changed field(s) {diff}",
                           "use field types YAML keeps: list[float] = field(default_factory=...) instead of "
                           "a tuple, str instead of an Enum"), config
    return CheckResult(name, True, f"{type(config).__name__} constructs, validates and round-trips "
                       f"through OmegaConf YAML"), config


def check_block_length(objective: Objective, seq_len: int) -> tuple[CheckResult, int | None]:
    """`block_length(seq_len)` is an int >= 1; returns (result, block length or None)."""
    try:
        block_len = objective.block_length(seq_len)
    except Exception as exc:  # noqa: BLE001
        return CheckResult("block_length", False, f"block_length({seq_len}) raised {one_line(exc)}",
                           "return the raw tokens per block, or check at a seq_len the objective supports "
                           "(check_objective(..., seq_len=128))"), None
    if isinstance(block_len, bool) or not isinstance(block_len, int) or block_len < 1:
        return CheckResult("block_length", False, f"block_length({seq_len}) returned {block_len!r}",
                           "return a Python int >= 1"), None
    return CheckResult("block_length", True, f"block_length({seq_len}) = {block_len}"), block_len


def clone_blocks(blocks: Blocks) -> Blocks:
    """A deep copy, so an objective that edits its input in place cannot spoil the next check."""
    starts = None if blocks.word_starts is None else blocks.word_starts.clone()
    return Blocks(input_ids=blocks.input_ids.clone(), word_starts=starts)


def batches_equal(a: Batch, b: Batch) -> list[str]:
    """Keys whose tensors differ (in presence, shape or value) between two batches."""
    keys = sorted(set(a) | set(b))
    return [k for k in keys if k not in a or k not in b or not isinstance(a[k], Tensor) or not isinstance(b[k], Tensor)
            or a[k].shape != b[k].shape or not torch.equal(a[k], b[k])]


def check_determinism(objective: Objective, blocks: Blocks) -> CheckResult:
    """Same generator seed -> same batch; other seeds -> another batch; no global RNG, no in-place edits."""
    name, fix_rng = "determinism", ("pass generator=generator to every torch.rand/randint/randperm/poisson/"
                                    "multinomial/bernoulli call; never use torch's, numpy's or Python's global RNG")
    torch_state, py_state, np_state = torch.get_rng_state(), random.getstate(), np.random.get_state()
    try:
        before = clone_blocks(blocks)
        torch.manual_seed(1234)
        seeded = torch.get_rng_state()
        generator = torch.Generator().manual_seed(0)
        start = generator.get_state()
        first = objective.corrupt(blocks, generator)
        consumed = not torch.equal(generator.get_state(), start)
        np_now = np.random.get_state()
        global_used = [what for what, used in (
            ("torch", not torch.equal(torch.get_rng_state(), seeded)),
            ("Python random", random.getstate() != py_state),
            ("numpy", not np.array_equal(np_now[1], np_state[1]) or np_now[2] != np_state[2]),
        ) if used]
        if not torch.equal(blocks.input_ids, before.input_ids):
            return CheckResult(name, False, "corrupt modified blocks.input_ids in place",
                               "work on a copy (ids.clone(), masked_fill, torch.where); the audit reads the blocks")
        torch.manual_seed(5678)
        second = objective.corrupt(clone_blocks(before), torch.Generator().manual_seed(0))
        others = [objective.corrupt(clone_blocks(before), torch.Generator().manual_seed(s)) for s in (1, 2)]
    finally:
        torch.set_rng_state(torch_state)
        random.setstate(py_state)
        np.random.set_state(np_state)
    if global_used:
        return CheckResult(name, False, f"corrupt drew from the global {' and '.join(global_used)} RNG", fix_rng)
    differ = batches_equal(first, second)
    if differ:
        return CheckResult(name, False, f"two calls with generator seed 0 differ in {differ}", fix_rng)
    if consumed and all(not batches_equal(first, other) for other in others):
        return CheckResult(name, False, "corrupt draws from the generator but seeds 0, 1, 2 give the same batch",
                           "let the drawn random numbers decide the corruption")
    if not consumed:
        return CheckResult(name, True, "draws no randomness: the batch is the same for every seed")
    return CheckResult(name, True, "same seed -> same batch, seeds 0/1/2 differ, no global RNG, blocks untouched")


def audit_pairs(objective: Objective, tokens: TokenInfo, block_len: int, batches: int, rows: int) -> list[Pair]:
    """`batches` toy blocks of (rows, block_len), each corrupted with its own generator seed."""
    pairs = []
    for i in range(batches):
        blocks = toy_blocks(tokens, rows, block_len, seed=1000 + i)
        pairs.append((blocks, objective.corrupt(clone_blocks(blocks), torch.Generator().manual_seed(i))))
    return pairs


def check_batch_format(pairs: Sequence[Pair], tokens: TokenInfo, seq_len: int) -> CheckResult:
    """A dict of tensors with batch dim B; ids integer in [0, V) (-100 allowed in labels); `labels`
    present; `input_ids` no wider than seq_len; `attention_mask` 0/1 and shaped like `input_ids`."""
    problems: dict[str, str] = {}  # detail -> fix (first occurrences, in order)
    V = tokens.vocab_size
    for blocks, batch in pairs:
        B = blocks.input_ids.shape[0]
        if not isinstance(batch, dict):
            problems[f"corrupt returned a {type(batch).__name__}, not a dict"] = "return a dict[str, Tensor]"
            break
        if "labels" not in batch:
            problems[f"no 'labels' key (keys: {sorted(batch)})"] = "return the targets under 'labels' (-100 = no loss)"
        for key, value in batch.items():
            if not isinstance(value, Tensor):
                problems[f"batch[{key!r}] is a {type(value).__name__}, not a tensor"] = \
                    "return only tensors (the data loader collates and moves them)"
                continue
            if value.dim() == 0 or value.shape[0] != B:
                got = "a scalar" if value.dim() == 0 else f"batch dim {value.shape[0]}"
                problems[f"batch[{key!r}] has shape {tuple(value.shape)}: {got}, expected batch dim {B}"] = \
                    "every tensor must have the block batch size B as dim 0"
                continue
            if not is_id_key(key):
                continue
            if value.dtype == torch.bool or value.is_floating_point() or value.is_complex():
                problems[f"batch[{key!r}] has dtype {value.dtype}"] = "token ids and labels must be int64"
                continue
            check = value[value != IGNORE_INDEX] if is_label_key(key) else value
            if check.numel() and (int(check.min()) < 0 or int(check.max()) >= V):
                problems[f"batch[{key!r}] holds ids outside [0, {V}) (min {int(check.min())}, max "
                         f"{int(check.max())})"] = "ids must be vocabulary ids; only label keys may hold -100"
        inputs = batch.get("input_ids")
        if isinstance(inputs, Tensor) and inputs.dim() == 2 and inputs.shape[1] > seq_len:
            problems[f"input_ids width {inputs.shape[1]} exceeds seq_len={seq_len}"] = \
                "make block_length(seq_len) leave room for the tokens corrupt adds"
        mask = batch.get("attention_mask")
        if isinstance(mask, Tensor) and isinstance(inputs, Tensor):
            if mask.shape != inputs.shape:
                problems[f"attention_mask shape {tuple(mask.shape)} != input_ids {tuple(inputs.shape)}"] = \
                    "build attention_mask for the corrupted input_ids"
            elif not torch.isin(mask, torch.tensor([0, 1], dtype=mask.dtype)).all():
                problems["attention_mask holds values other than 0 and 1"] = "use 1 = attend, 0 = padding"
        if len(problems) >= 3:
            break
    if problems:
        details, fixes = list(problems)[:3], list(dict.fromkeys(problems.values()))[:3]
        return CheckResult("batch_format", False, "; ".join(details), "; ".join(fixes))
    keys = ", ".join(f"{k} {tuple(v.shape)}" for k, v in pairs[0][1].items())
    return CheckResult("batch_format", True, f"{len(pairs)} batches of tensors: {keys}")


def check_padding_targets(objective: Objective, tokens: TokenInfo, block_len: int, rows: int = 32) -> CheckResult:
    """Right-padded blocks: no label is the pad id, and when labels align with the blocks (same shape,
    equal to the block ids wherever a real token is supervised) no padding position carries a label."""
    blocks, padding = pad_row_ends(toy_blocks(tokens, rows, block_len, seed=7), tokens.pad_id)
    labels = objective.corrupt(clone_blocks(blocks), torch.Generator().manual_seed(0))["labels"]  # (B, T)
    fix = "set labels to -100 wherever blocks.input_ids == tokens.pad_id (padding is never a target)"
    aligned = labels.shape == padding.shape
    if aligned:
        real_targets = (labels != IGNORE_INDEX) & ~padding  # (B, L)
        aligned = bool((labels[real_targets] == blocks.input_ids[real_targets]).all())
    if aligned:
        at_pad = int(((labels != IGNORE_INDEX) & padding).sum())
        if at_pad:
            return CheckResult("padding_targets", False, f"{at_pad} of {int(padding.sum())} padding positions "
                               f"carry a label (labels aligned with the blocks)", fix)
    pad_targets = int((labels == tokens.pad_id).sum())
    if pad_targets:
        return CheckResult("padding_targets", False, f"{pad_targets} labels are the pad id {tokens.pad_id}", fix)
    layout = "aligned with the blocks" if aligned else f"shape {tuple(labels.shape)}, not aligned with the blocks"
    return CheckResult("padding_targets", True, f"{int(padding.sum())} padding positions, no padding target "
                       f"(labels {layout})")


def guarded_ids(objective: Objective, tokens: TokenInfo) -> dict[int, str]:
    """id -> name of the specials that must not appear where the block had an ordinary token."""
    declared = set(getattr(type(objective), "inserted_special_tokens", ()) or ())
    allowed = {tokens.mask_id, *tokens.sentinel_ids}
    return {getattr(tokens, f"{n}_id"): n for n in GUARDED_SPECIALS
            if n not in declared and getattr(tokens, f"{n}_id") not in allowed}


def check_special_tokens(objective: Objective, tokens: TokenInfo, pairs: Sequence[Pair]) -> CheckResult:
    """No pad/cls/sep/unk/bos id in attended corrupted inputs where the block had an ordinary token.

    Same shape as the block: compared position by position. Other shapes (tokens added or removed):
    per row, no more such ids than the block itself held.
    """
    guarded = guarded_ids(objective, tokens)
    names = list(guarded.values())
    V = tokens.vocab_size
    slot = torch.zeros(V + 1, dtype=torch.long)  # id -> 1 + index in `names`, 0 = not guarded
    slot[list(guarded)] = torch.arange(1, len(names) + 1)
    special = torch.zeros(V, dtype=torch.bool)  # (V,) id -> is special
    special[list(tokens.special_ids)] = True
    counts = torch.zeros(len(names) + 1, dtype=torch.long)
    seen = 0
    for blocks, batch in pairs:
        inputs, original = batch.get("input_ids"), blocks.input_ids  # (B, Lin), (B, L)
        if not isinstance(inputs, Tensor) or inputs.dim() != 2 or inputs.shape[0] != original.shape[0]:
            continue
        seen += inputs.numel()
        mask = batch.get("attention_mask")
        attended = mask.bool() if isinstance(mask, Tensor) and mask.shape == inputs.shape else torch.ones_like(inputs, dtype=torch.bool)
        hit = slot[inputs.long().clamp(0, V)] * attended  # (B, Lin) guarded slot at attended positions
        if inputs.shape == original.shape:
            counts += torch.bincount((hit * ~special[original]).flatten(), minlength=len(names) + 1)
        else:
            rows = torch.arange(inputs.shape[0])
            per_row = torch.zeros(inputs.shape[0], len(names) + 1, dtype=torch.long)  # (B, G+1)
            per_row.index_put_((rows[:, None].expand_as(hit), hit), torch.ones_like(hit), accumulate=True)
            before = torch.zeros_like(per_row)
            was = slot[original.long().clamp(0, V)]  # (B, L)
            before.index_put_((rows[:, None].expand_as(was), was), torch.ones_like(was), accumulate=True)
            counts += (per_row - before).clamp_min(0).sum(0)
    if not seen:
        return CheckResult("special_tokens", True, "no input_ids in the batch; nothing to check")
    bad = {names[i]: int(c) for i, c in enumerate(counts[1:].tolist()) if c}
    if bad:
        listing = ", ".join(f"{k} (id {getattr(tokens, k + '_id')}) x{v}" for k, v in bad.items())
        return CheckResult("special_tokens", False, f"corrupted input_ids introduce special tokens where the block "
                           f"had ordinary ones: {listing}, over {seen} input positions",
                           "draw random tokens from tokens.ordinary_ids(), never range(vocab_size); if the objective "
                           "inserts one on purpose, declare it: inserted_special_tokens = ('cls',)")
    return CheckResult("special_tokens", True, f"no {'/'.join(names)} introduced in {seen} input positions")


def check_statistics(objective: Objective, pairs: Sequence[Pair]) -> CheckResult:
    """The core's run-time audit (`lmbench.audit.audit_corruption`) on the toy batches: every promised
    statistic is measured, and its mean is within tolerance + 4 standard errors across batches."""
    name = "statistics"
    promised = objective.promised_stats()
    if not isinstance(promised, dict) or not all(isinstance(p, PromisedStat) for p in promised.values()):
        return CheckResult(name, False, f"promised_stats() returned {promised!r}",
                           "return dict[str, PromisedStat(value, tolerance, description)]")
    if not promised:
        return CheckResult(name, True, "promises no statistics; nothing to audit")
    audit = audit_corruption(objective, pairs)
    where = f"mean of {audit.batches} batches of {tuple(pairs[0][0].input_ids.shape)}"
    missing = [k for k, s in audit.stats.items() if s["measured"] is None]
    if missing:
        return CheckResult(name, False, f"measure_stats() never returns promised key(s) {missing}",
                           "measure every key promised_stats() names, with the same spelling")
    lines = {k: f"{k} {s['measured']:.4g} (promised {s['promised']:.4g} +- {s['tolerance']:.3g}, bound "
                f"{s['bound']:.3g})" for k, s in audit.stats.items()}
    off = [lines[k] for k, s in audit.stats.items() if not s["ok"]]
    if off:
        return CheckResult(name, False, f"outside the audit bound: {'; '.join(off)} [{where}]",
                           "make corrupt realise the promised value at this block length (rounding in short blocks "
                           "counts), promise what it realises there, or correct measure_stats")
    return CheckResult(name, True, f"{'; '.join(lines.values())} [{where}]")
