"""Analytic training FLOPs of one batch, for FLOP budgets and model FLOP utilisation (MFU).

A fair comparison of objectives can fix compute instead of steps or tokens, and MFU says how well a
run used the hardware. Both need the FLOPs a training step costs, computed from the model's dims and
the batch's shapes, with no profiler in the hot loop. Only matrix multiplications are counted, each
multiply-accumulate (MAC) as 2 FLOPs; norms, activations, softmax, biases, the loss and embedding
lookups are free (they are a few percent at most). The backward pass costs twice the forward
(gradients for the inputs and for the weights), so training = 3 x forward, the standard 6ND
accounting. Per layer and per query position of a stack (d: residual width, a = heads x head_dim,
a_kv = kv heads x head_dim, f: feed-forward width, T_k: key length), forward FLOPs are

    attention projections   2 (d a + 2 d a_kv + a d)          q, k, v, o  (= 8 d^2 when a = a_kv = d)
    attention scores        2 (T_k a + T_k a)                 Q K^T and A V, over all T_k keys
    feed-forward            2 m d f                           m = 2 matrices (m = 3: Llama, gated T5)
    cross-attention         2 (d a + a d) + 2 (T_k a + T_k a) per decoder position, T_k = encoder length
                            + 2 (2 d a) per encoder position  k, v of the encoder output, in each layer

and the output projection to the vocabulary V costs 2 d V per projected position (BERT and RoBERTa
heads add their d x d transform, 2 d^2). Which positions are projected and which lengths apply:

The vocabulary head runs only at supervised positions, as the objectives' loss computes it
(lmbench.objectives.lm_loss skips rows without a target), and at every position of a batch without labels:

- encoder (bert, roberta): T = input length; head at labels != -100 (MLM's sparse head);
- decoder (gpt2, llama): T = input length; head at next-token targets (labels[:, 1:] != -100: a
  prefix LM's prefix and padding are not projected). Causal attention is counted over
  all T keys (what dense and PyTorch's own kernels compute; a flash kernel skips about half of it);
  UL2 batches built for both layouts carry the decoder's under `lm_*` keys, which are used;
- encoder-decoder (t5, bart): encoder over the input length T_in, decoder over the target length
  T_out (`labels` or `decoder_input_ids`) with self-attention over T_out and cross-attention over
  T_in; head at decoder positions with a label (labels != -100).

Shapes are the batch's padded shapes: padding costs compute like any other position. Check: the
numbers agree with `torch.utils.flop_counter.FlopCounterMode` within a few percent on every family
and built-in objective (tests/test_flops.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

IGNORE_INDEX = -100
BACKWARD_FACTOR = 2.0  # backward = 2 x forward (input and weight gradients)
FAMILY_KIND: dict[str, str] = {"bert": "encoder", "roberta": "encoder", "gpt2": "decoder", "llama": "decoder",
                               "t5": "encoder-decoder", "bart": "encoder-decoder"}
SUPPORTED_FAMILIES: tuple[str, ...] = tuple(FAMILY_KIND)


class FlopFormulaError(ValueError):
    """No FLOP formula applies: an unsupported model family, or a batch without the shapes it needs."""


@dataclass
class FlopEstimate:
    """FLOPs of one forward+backward pass over one batch (one micro-batch; x accumulation for a step).

    forward:   forward matmul FLOPs.
    training:  forward + backward = 3 x forward.
    per_token: training / tokens (tokens: the `tokens` argument, default batch size x input length).
    detail:    forward FLOPs per component (attention_proj, attention_scores, ffn, cross_attention_proj,
               cross_attention_scores, head) and the shapes used (batch, input_len, target_len,
               head_positions, tokens).
    """

    forward: float
    training: float
    per_token: float
    detail: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class StackDims:
    """One transformer stack: `layers` blocks of width d, attention width a (kv: a_kv), FFN f x m matrices."""

    layers: int
    d: int
    a: int
    a_kv: int
    f: int
    ffn_matrices: int


def check_family(family: str) -> str:
    """Return the kind of `family`, or raise FlopFormulaError naming it and the supported families."""
    if family not in FAMILY_KIND:
        raise FlopFormulaError(f"no FLOP formula for backbone family {family!r}; supported families: "
                               f"{', '.join(SUPPORTED_FAMILIES)} (use a steps or tokens budget for others)")
    return FAMILY_KIND[family]


def stack_dims(config: Any) -> tuple[StackDims, StackDims | None]:
    """(encoder or only stack, decoder stack or None) of a transformers config of a supported family."""
    family = str(getattr(config, "model_type", None))
    check_family(family)
    c = config
    if family in ("bert", "roberta"):
        d = c.hidden_size
        return StackDims(c.num_hidden_layers, d, d, d, c.intermediate_size, 2), None
    if family == "gpt2":
        d = c.n_embd
        return StackDims(c.n_layer, d, d, d, c.n_inner or 4 * d, 2), None
    if family == "llama":
        d, heads = c.hidden_size, c.num_attention_heads
        head_dim = getattr(c, "head_dim", None) or d // heads
        kv_heads = getattr(c, "num_key_value_heads", None) or heads
        return StackDims(c.num_hidden_layers, d, heads * head_dim, kv_heads * head_dim, c.intermediate_size, 3), None
    if family == "t5":
        a, m = c.num_heads * c.d_kv, 3 if getattr(c, "is_gated_act", False) else 2
        dec_layers = c.num_decoder_layers if c.num_decoder_layers is not None else c.num_layers
        return StackDims(c.num_layers, c.d_model, a, a, c.d_ff, m), StackDims(dec_layers, c.d_model, a, a, c.d_ff, m)
    d = c.d_model  # bart
    return StackDims(c.encoder_layers, d, d, d, c.encoder_ffn_dim, 2), StackDims(c.decoder_layers, d, d, d,
                                                                                 c.decoder_ffn_dim, 2)


def stack_flops(s: StackDims, positions: int, key_len: int, cross_len: int = 0,
                cross_positions: int = 0) -> dict[str, float]:
    """Forward FLOPs of a stack over `positions` query positions (batch x length) attending to `key_len`
    keys each; with `cross_len` > 0, also cross-attention to `cross_len` encoder keys, whose k and v
    projections run over `cross_positions` encoder positions (batch x encoder length) in every layer."""
    n, L = float(positions), s.layers
    out = {
        "attention_proj": L * n * 2 * (2 * s.d * s.a + 2 * s.d * s.a_kv),
        "attention_scores": L * n * 2 * (2 * key_len * s.a),
        "ffn": L * n * 2 * s.ffn_matrices * s.d * s.f,
    }
    if cross_len:
        out["cross_attention_proj"] = L * (n * 2 * (2 * s.d * s.a) + float(cross_positions) * 2 * (2 * s.d * s.a))
        out["cross_attention_scores"] = L * n * 2 * (2 * cross_len * s.a)
    return out


def _shape_of(batch: dict[str, Tensor], keys: tuple[str, ...], family: str, objective: str) -> torch.Size:
    for key in keys:
        value = batch.get(key)
        if isinstance(value, Tensor) and value.dim() >= 2:
            return value.shape
    raise FlopFormulaError(f"the batch of objective {objective!r} has none of {list(keys)} as a (B, L) tensor, "
                           f"which the {family} FLOP formula reads; batch keys: {sorted(batch)}")


def training_flops(model: nn.Module, batch: dict[str, Tensor], objective_name: str | None = None,
                   tokens: int | None = None) -> FlopEstimate:
    """Analytic forward and training (forward + backward) FLOPs of `model` on `batch` (formula: module doc).

    model:          a transformers model of a supported family (`model.config.model_type`).
    batch:          the objective's batch as the loss sees it: `input_ids` (B, T) and, for encoder-decoders,
                    `labels` or `decoder_input_ids` (B, T_out); for encoders, `labels` picks the
                    positions of the sparse vocabulary head (labels != -100).
    objective_name: named in error messages.
    tokens:         what `per_token` divides by, e.g. the corpus tokens the batch was built from
                    (batch_size x block_len); default: batch size x input length.
    Raises FlopFormulaError for an unsupported family (naming it and the supported ones) or a batch
    without the needed keys.
    """
    config = getattr(model, "config", None)
    family = str(getattr(config, "model_type", type(model).__name__))
    kind = check_family(family)
    objective = objective_name or "?"
    main, decoder = stack_dims(config)
    vocab = int(config.vocab_size)
    get_head = getattr(model, "get_output_embeddings", None)
    has_head = callable(get_head) and get_head() is not None
    if kind == "decoder" and "lm_labels" in batch:  # UL2 with both layouts: the decoder's is under lm_*
        batch = {k[3:]: v for k, v in batch.items() if k.startswith("lm_")}
    B, T = (int(x) for x in _shape_of(batch, ("input_ids", "inputs_embeds"), family, objective)[:2])
    detail: dict[str, float] = {}

    def add(part: dict[str, float]) -> None:
        for key, value in part.items():
            detail[key] = detail.get(key, 0.0) + value

    target_len = 0
    if kind == "encoder-decoder":
        assert decoder is not None
        target_len = int(_shape_of(batch, ("decoder_input_ids", "labels"), family, objective)[1])
        add(stack_flops(main, B * T, T))
        add(stack_flops(decoder, B * target_len, target_len, cross_len=T, cross_positions=B * T))
        head_positions, head_cost = B * target_len, 2.0 * main.d * vocab
        labels = batch.get("labels")
        if isinstance(labels, Tensor):
            head_positions = int((labels != IGNORE_INDEX).sum())  # rows without a target are not projected
    else:
        add(stack_flops(main, B * T, T))
        head_positions, head_cost = B * T, 2.0 * main.d * vocab
        labels = batch.get("labels")
        if kind == "encoder":
            if isinstance(labels, Tensor):
                head_positions = int((labels != IGNORE_INDEX).sum())  # the sparse MLM head
            head_cost += 2.0 * main.d * main.d  # BERT / RoBERTa head: dense d x d transform, then d x V
        elif isinstance(labels, Tensor):
            head_positions = int((labels[:, 1:] != IGNORE_INDEX).sum())  # next-token targets only
    detail["head"] = float(head_positions) * head_cost if has_head else 0.0
    forward = float(sum(detail.values()))
    training = forward * (1.0 + BACKWARD_FACTOR)
    count = int(tokens) if tokens is not None else B * T
    detail.update(batch=float(B), input_len=float(T), target_len=float(target_len),
                  head_positions=float(head_positions if has_head else 0), tokens=float(count))
    return FlopEstimate(forward=forward, training=training, per_token=training / max(count, 1), detail=detail)


_PEAK_CACHE: dict[tuple[str, torch.dtype, int, int], float] = {}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def peak_matmul_flops(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                      seconds: float = 1.0, size: int = 2048) -> float:
    """Measured peak matmul throughput in FLOP/s: the best of several timed rounds of (size x size) @
    (size x size) products over about `seconds`. Cached per (device, dtype, size, CPU threads) in this
    process, so every run of a process pays for it once.

    Use the dtype the run computes in (bfloat16 for bf16-mixed), so MFU compares like with like.
    """
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    key = (str(device), dtype, int(size), torch.get_num_threads() if device.type == "cpu" else 0)
    if key in _PEAK_CACHE:
        return _PEAK_CACHE[key]
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, generator=g, device=device).to(dtype)  # (S, S)
    b = torch.randn(size, size, generator=g, device=device).to(dtype)  # (S, S)
    flops_per_matmul = 2.0 * size ** 3
    torch.matmul(a, b)  # warm-up: kernel selection, library initialisation
    _sync(device)
    per_round, deadline = 1, time.perf_counter() + seconds
    while True:  # grow the round until it is long enough to time (tiny on a GPU: launch latency dominates)
        t0 = time.perf_counter()
        for _ in range(per_round):
            torch.matmul(a, b)
        _sync(device)
        took = time.perf_counter() - t0
        if took >= seconds / 10 or time.perf_counter() >= deadline:
            break
        per_round *= 2
    best, rounds = per_round * flops_per_matmul / max(took, 1e-9), 1
    while rounds < 3 or time.perf_counter() < deadline:
        t0 = time.perf_counter()
        for _ in range(per_round):
            torch.matmul(a, b)
        _sync(device)
        best = max(best, per_round * flops_per_matmul / max(time.perf_counter() - t0, 1e-9))
        rounds += 1
    _PEAK_CACHE[key] = best
    return best


def mfu(achieved_flops_per_s: float, peak: float) -> float:
    """Model FLOP utilisation: achieved FLOP/s (analytic training FLOPs / wall time) over peak FLOP/s."""
    if not peak > 0:
        raise ValueError(f"mfu: peak={peak!r} FLOP/s; allowed values: > 0 (see peak_matmul_flops)")
    return float(achieved_flops_per_s) / float(peak)
