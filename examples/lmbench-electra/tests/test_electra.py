"""Tests of the ELECTRA plugin: corruption statistics, sampling law, detection targets, training, packaging.

Models are tiny BERTs built locally from lmbench's own preset kwargs (shrunk); nothing is downloaded.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import BertConfig, BertForMaskedLM, RobertaConfig, RobertaForMaskedLM

from lmbench.backbones.presets import family_config_kwargs
from lmbench.cli.plugins import plugin_rows
from lmbench.config import OptimConfig
from lmbench.objectives import Blocks, ObjectiveConfigError, TokenInfo, default_registry
from lmbench.train.module import PretrainModule
from lmbench_electra import Electra, ElectraConfig
from lmbench_electra.generator import sample_tokens, shared_parameter_names

SPECIALS = (0, 1, 2, 3, 4, 5, 6)  # pad, unk, cls, sep, mask, bos, eos
TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models train faster on one thread than on two contended ones (CI shares its 2 cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tokens() -> TokenInfo:
    return TokenInfo(vocab_size=300, pad_id=0, mask_id=4, bos_id=5, eos_id=6, cls_id=2, sep_id=3, unk_id=1,
                     special_ids=SPECIALS)


def tiny_model(tokens: TokenInfo, family: str = "bert", seed: int = 0) -> BertForMaskedLM:
    """lmbench's tiny preset for `family`, shrunk to 64 wide and 2 deep."""
    torch.manual_seed(seed)
    kwargs = {**family_config_kwargs(family, "tiny", tokens, 64), **TINY}
    config_class, model_class = (BertConfig, BertForMaskedLM) if family == "bert" else (RobertaConfig,
                                                                                        RobertaForMaskedLM)
    return model_class._from_config(config_class(**kwargs), attn_implementation="sdpa")


def make_blocks(rows: int, length: int, seed: int = 0, vocab: int = 300) -> Blocks:
    """Ordinary tokens framed by [CLS] ... [SEP] with a padded tail in every fourth row."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(len(SPECIALS), vocab, (rows, length), generator=g)  # (B, L)
    ids[:, 0], ids[:, -1] = 2, 3
    ids[::4, -length // 8:] = 0
    return Blocks(input_ids=ids)


def electra(tokens: TokenInfo, model=None, **overrides) -> Electra:
    objective = Electra(ElectraConfig(**overrides), tokens)
    if model is not None:
        objective.build_modules(model)
    return objective


# ---- packaging ----------------------------------------------------------------------------------------
def test_discovered_only_through_its_entry_point() -> None:
    assert default_registry().get("electra") is Electra
    row = next(r for r in plugin_rows(default_registry()) if r["name"] == "electra")
    assert row["package"] == "lmbench-electra" and row["status"] == "ok"
    assert row["target"] == "lmbench_electra.objective:Electra"
    assert row["backbone_kinds"] == ["encoder"] and row["config"]["discriminator_weight"] == 50.0


# ---- corruption ---------------------------------------------------------------------------------------
def test_corruption_statistics_on_a_million_tokens(tokens: TokenInfo) -> None:
    objective = electra(tokens)
    blocks = make_blocks(1000, 1000, seed=1)  # 1M tokens, ~97% ordinary
    batch = objective.corrupt(blocks, torch.Generator().manual_seed(0))
    measured = objective.measure_stats(blocks, batch)
    for key, promise in objective.promised_stats().items():
        assert abs(measured[key] - promise.value) <= promise.tolerance, (key, measured[key], promise)
    assert set(objective.promised_stats()) == {"selection_rate", "mask_fraction"}

    ids, inputs, labels = blocks.input_ids, batch["input_ids"], batch["labels"]
    selected = labels != -100
    eligible = ~torch.isin(ids, torch.tensor(SPECIALS))
    assert torch.equal(batch["discriminator_mask"], eligible)
    assert not (selected & ~eligible).any()  # specials and padding are never selected
    assert torch.equal(labels[selected], ids[selected])
    assert torch.equal(inputs[~selected], ids[~selected])
    assert set(inputs[selected].unique().tolist()) - set(ids[selected].unique().tolist()) == {4}  # only [MASK]
    kept = (inputs[selected] == ids[selected]).float().mean().item()
    assert abs(kept - 0.15) < 0.01
    u = batch["sample_uniform"]
    assert u.shape == ids.shape and float(u.min()) >= 0.0 and float(u.max()) < 1.0
    assert abs(float(u[selected].mean()) - 0.5) < 0.005  # uniform mean, sd 0.289 / sqrt(~145k)
    assert torch.equal(batch["attention_mask"], (ids != 0).long())


def test_corruption_is_a_pure_function_of_the_generator(tokens: TokenInfo) -> None:
    objective = electra(tokens)
    blocks = make_blocks(16, 64)
    a = objective.corrupt(blocks, torch.Generator().manual_seed(7))
    b = objective.corrupt(blocks, torch.Generator().manual_seed(7))
    c = objective.corrupt(blocks, torch.Generator().manual_seed(8))
    assert a.keys() == b.keys() == {"input_ids", "attention_mask", "labels", "discriminator_mask", "sample_uniform"}
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["labels"], c["labels"]) and not torch.equal(a["sample_uniform"], c["sample_uniform"])


# ---- sampling from the generator ----------------------------------------------------------------------
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_samples_follow_the_tempered_softmax_over_ordinary_tokens(temperature: float) -> None:
    vocab, n = 20, 200_000
    logits = torch.linspace(-2.0, 2.0, vocab)  # (V,)
    logits[[0, 4, 19]] = 30.0  # special ids with overwhelming logits must still never be drawn
    allowed = torch.ones(vocab, dtype=torch.bool)
    allowed[[0, 4, 19]] = False
    u = torch.rand(n, generator=torch.Generator().manual_seed(3))
    draws = sample_tokens(logits.expand(n, vocab), u, allowed, temperature)  # (n,)
    freq = torch.bincount(draws, minlength=vocab).double() / n
    expected = torch.softmax((logits / temperature).masked_fill(~allowed, float("-inf")).double(), dim=0)
    assert freq[~allowed].sum() == 0
    sigma = (expected * (1 - expected) / n).sqrt()
    assert ((freq - expected).abs() <= 5 * sigma + 1e-12).all(), (freq, expected)


# ---- loss -------------------------------------------------------------------------------------------------
def test_discriminator_learns_exactly_which_tokens_were_replaced(tokens: TokenInfo) -> None:
    model = tiny_model(tokens)
    objective = electra(tokens, model)
    blocks = make_blocks(8, 64)
    batch = objective.corrupt(blocks, torch.Generator().manual_seed(0))
    seen: dict[str, list[torch.Tensor]] = {"disc_in": [], "gen_in": [], "head_out": []}
    hooks = [
        model.base_model.register_forward_pre_hook(lambda m, a, kw: seen["disc_in"].append(kw["input_ids"]),
                                                   with_kwargs=True),
        objective.generator.electra.register_forward_pre_hook(
            lambda m, a, kw: seen["gen_in"].append(kw["input_ids"]), with_kwargs=True),
        objective.discriminator_head.register_forward_hook(lambda m, a, out: seen["head_out"].append(out)),
    ]
    with torch.no_grad():
        out, again = objective.loss(model, batch), objective.loss(model, batch)
    for hook in hooks:
        hook.remove()
    original, eligible = blocks.input_ids, batch["discriminator_mask"]
    selected = batch["labels"] != -100
    assert torch.equal(seen["gen_in"][0], batch["input_ids"])  # the generator sees the masked input
    disc_in = seen["disc_in"][0]
    assert torch.equal(disc_in, seen["disc_in"][1])  # sampling is reproducible: randomness is in the batch
    assert torch.equal(disc_in[~selected], original[~selected])  # only selected positions may change
    assert not torch.isin(disc_in[selected], torch.tensor(SPECIALS)).any()  # samples are ordinary tokens
    targets = ((disc_in != original) & eligible)[eligible].float()  # the reference definition
    logits = seen["head_out"][0].squeeze(-1)
    bce = F.binary_cross_entropy_with_logits(logits, targets)
    assert torch.allclose(out.stats["discriminator_loss"], bce, atol=1e-6)
    assert torch.allclose(out.stats["replaced_fraction"], targets.mean())
    assert 0 < float(targets.sum()) <= float(selected.sum())  # an untrained generator replaces most of them
    assert int(out.stats["supervised_tokens"]) == int(eligible.sum())
    expected = 1.0 * out.stats["generator_loss"] + 50.0 * out.stats["discriminator_loss"]
    assert torch.allclose(out.loss, expected) and torch.equal(out.loss, again.loss)


def test_training_lowers_the_loss_and_trains_the_generator(tokens: TokenInfo) -> None:
    model = tiny_model(tokens)
    objective = electra(tokens)
    module = PretrainModule(model, objective, OptimConfig(lr=2e-3, warmup_fraction=0.0, schedule="constant"),
                            total_steps=30, tokens_per_batch=8 * 64)
    generator = objective.generator
    assert module.objective_modules["generator"] is generator  # registered by the core, not by us
    assert generator.config.hidden_size == 16 and generator.config.num_hidden_layers == 2
    assert generator.electra.embeddings.word_embeddings is model.get_input_embeddings()
    assert generator.generator_lm_head.weight is model.get_input_embeddings().weight
    optimizer = module.configure_optimizers()["optimizer"]
    optimised = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(optimised)  # shared tensors once
    assert all(id(p) in optimised for p in generator.parameters())
    assert all(id(p) in optimised for p in objective.discriminator_head.parameters())

    own = [n for n, _ in generator.named_parameters() if n not in shared_parameter_names(generator, model)]
    before = {n: p.detach().clone() for n, p in generator.named_parameters()}
    batch = objective.corrupt(make_blocks(8, 64), torch.Generator().manual_seed(0))
    losses, gen_losses = [], []
    for step in range(30):
        out = objective.loss(model, batch)
        optimizer.zero_grad()
        out.loss.backward()
        if step == 0:
            grads = dict(generator.named_parameters())
            assert all(grads[n].grad is not None and grads[n].grad.abs().sum() > 0 for n in own)
        optimizer.step()
        assert math.isfinite(out.loss.item())
        losses.append(out.loss.item())
        gen_losses.append(out.stats["generator_loss"].item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.7 * first, losses
    assert gen_losses[-1] < gen_losses[0] - 0.3, gen_losses
    assert all(not torch.equal(before[n], p) for n, p in generator.named_parameters() if n in own)


def test_roberta_discriminator_and_generator_size_options(tokens: TokenInfo) -> None:
    model = tiny_model(tokens, family="roberta")
    objective = electra(tokens, model, generator_size_divisor=2, generator_layers=1)
    config = objective.generator.config
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (32, 1, 2)
    # RoBERTa offsets positions by pad_id + 1: only the token matrix is shared.
    assert shared_parameter_names(objective.generator, model) == [
        "electra.embeddings.word_embeddings.weight", "generator_lm_head.weight"]
    batch = objective.corrupt(make_blocks(4, 32), torch.Generator().manual_seed(0))
    assert math.isfinite(objective.loss(model, batch).loss.item())


# ---- configuration ------------------------------------------------------------------------------------
@pytest.mark.parametrize("key, value, allowed", [
    ("mlm_probability", 1.5, "[0, 1]"),
    ("mlm_probability", 0.0, "(0, 1]"),
    ("mask_replace_prob", -0.1, "[0, 1]"),
    ("generator_size_divisor", 0, "integer >= 1"),
    ("generator_size_divisor", 2.5, "integer >= 1"),
    ("generator_layers", -1, "integer >= 0"),
    ("discriminator_weight", -1.0, ">= 0"),
    ("generator_weight", -0.5, ">= 0"),
    ("temperature", 0.0, "> 0"),
])
def test_config_rejects_out_of_range_values(key: str, value: object, allowed: str) -> None:
    with pytest.raises(ObjectiveConfigError, match="allowed values") as err:
        ElectraConfig(**{key: value})
    assert key in str(err.value) and allowed in str(err.value)


def test_config_rejects_no_loss_and_a_divisor_that_does_not_fit(tokens: TokenInfo) -> None:
    with pytest.raises(ObjectiveConfigError, match="at least one > 0"):
        ElectraConfig(generator_weight=0.0, discriminator_weight=0.0)
    with pytest.raises(ObjectiveConfigError, match="generator_size_divisor=3 does not divide .* 64"):
        electra(tokens, tiny_model(tokens), generator_size_divisor=3)


# ---- conformance kit -----------------------------------------------------------------------------------
def test_passes_the_lmbench_conformance_kit() -> None:
    testing = pytest.importorskip("lmbench.testing", reason="lmbench.testing (conformance kit) not installed yet")
    report = testing.assert_conforms(Electra, package="lmbench-electra")
    assert report.passed and report.get("loss[encoder]").passed and report.get("statistics").passed


# ---- end to end through the CLI ------------------------------------------------------------------------
@pytest.mark.slow
def test_cli_sweep_runs_mlm_and_electra(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    env = {**os.environ, "LMBENCH_CACHE": str(tmp_path / "cache"), "WANDB_MODE": "disabled"}
    cmd = [sys.executable, "-m", "lmbench.cli.main", "-m", "objective=mlm,electra", "data.builtin_documents=300",
           "data.tokenizer.vocab_size=800", "data.seq_len=64", "data.batch_size=8", "trainer=smoke",
           f"hydra.sweep.dir={sweep}"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    results = {json.loads(p.read_text())["objective"]["name"]: json.loads(p.read_text())
               for p in sweep.glob("*/results.json")}
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert set(results) == {"mlm", "electra"}, proc.stderr[-4000:]
    for name, record in results.items():
        assert record["status"] == "completed", (name, record.get("error"))
        assert math.isfinite(record["val_loss"]) and record["supervised_tokens"] > 0
    assert results["electra"]["objective"]["config"]["discriminator_weight"] == 50.0
