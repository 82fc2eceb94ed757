"""Backbones: kind resolution, every family builds with the shared vocabulary, size matching across kinds,
a saved model loads back through transformers' Auto classes, and hub names fail fast offline."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
import transformers
from omegaconf import OmegaConf

from lmbench.backbones import (
    FAMILIES,
    PRESETS,
    BackboneError,
    build_backbone,
    describe,
    parameter_count,
    resolve_kind,
)
from lmbench.backbones.build import AUTO_CLASSES
from lmbench.config import BackboneConfig
from lmbench.objectives.base import BACKBONE_KINDS, TokenInfo

CONF = Path(__file__).resolve().parents[1] / "conf" / "backbone"


def make_tokens(vocab_size: int = 512, pad_id: int = 0) -> TokenInfo:
    return TokenInfo(vocab_size=vocab_size, pad_id=pad_id, unk_id=1, cls_id=2, sep_id=3, mask_id=4, bos_id=5,
                     eos_id=6, special_ids=tuple(sorted({pad_id, 1, 2, 3, 4, 5, 6})))


def forward(model: transformers.PreTrainedModel, ids: torch.Tensor) -> torch.Tensor:
    """Logits (B, L, V) of any kind; encoder-decoders get the inputs as decoder inputs too."""
    if model.config.is_encoder_decoder:
        return model(input_ids=ids, decoder_input_ids=ids).logits
    return model(input_ids=ids).logits


# ----------------------------------------------------------------------------- resolve_kind

def test_auto_kind_is_objectives_first_supported_kind() -> None:
    assert resolve_kind(BackboneConfig(), "mlm", ("encoder",)) == "encoder"
    assert resolve_kind(BackboneConfig(), "x", ("encoder-decoder", "decoder")) == "encoder-decoder"
    # a named family decides the kind when the objective trains it
    assert resolve_kind(BackboneConfig(family="llama"), "x", ("encoder", "decoder")) == "decoder"
    assert resolve_kind(BackboneConfig(kind="decoder", family="gpt2"), "clm", ("decoder",)) == "decoder"


def test_unsupported_kind_names_objective_and_its_kinds() -> None:
    with pytest.raises(BackboneError) as err:
        resolve_kind(BackboneConfig(kind="decoder"), "mlm", ("encoder",))
    assert "'mlm'" in str(err.value) and "encoder" in str(err.value) and "backbone.kind" in str(err.value)
    with pytest.raises(BackboneError, match="clm.*decoder.*family='bert'"):
        resolve_kind(BackboneConfig(family="bert"), "clm", ("decoder",))


@pytest.mark.parametrize("field,value,allowed", [
    ("kind", "decodr", ["auto", "encoder", "decoder", "encoder-decoder"]),
    ("size", "huge", ["tiny", "small", "base"]),
    ("family", "gpt3", ["auto", "bert", "roberta", "gpt2", "llama", "t5", "bart"]),
])
def test_unknown_values_list_allowed_values(field: str, value: str, allowed: list[str]) -> None:
    with pytest.raises(BackboneError) as err:
        resolve_kind(BackboneConfig(**{field: value}), "clm", ("decoder",))
    message = str(err.value)
    assert f"backbone.{field}={value!r}" in message
    assert all(a in message for a in allowed)


def test_family_of_another_kind_is_rejected() -> None:
    with pytest.raises(BackboneError, match="family='gpt2' is not a encoder family.*bert, roberta"):
        resolve_kind(BackboneConfig(kind="encoder", family="gpt2"), "mlm", ("encoder",))


# ----------------------------------------------------------------------------- build

@pytest.mark.parametrize("kind,family", [(k, f) for k, fs in FAMILIES.items() for f in fs])
def test_every_family_builds_with_shared_vocab(kind: str, family: str) -> None:
    tokens = make_tokens(vocab_size=517, pad_id=3)
    max_positions = 40
    model = build_backbone(BackboneConfig(kind=kind, family=family), kind, tokens, max_positions).eval()
    assert type(model).__name__ in {"BertForMaskedLM", "RobertaForMaskedLM", "GPT2LMHeadModel", "LlamaForCausalLM",
                                    "T5ForConditionalGeneration", "BartForConditionalGeneration"}
    assert model.get_input_embeddings().num_embeddings == tokens.vocab_size
    assert model.config.pad_token_id == tokens.pad_id
    info = describe(model)
    tiny = PRESETS["tiny"]
    assert info == {**info, "family": family, "kind": kind, "hidden": tiny["hidden"], "heads": tiny["heads"],
                    "layers": tiny["layers"]}
    if kind == "encoder-decoder":
        assert (info["encoder_layers"], info["decoder_layers"]) == (2, 2)
        start = tokens.pad_id if family == "t5" else tokens.eos_id
        assert model.config.decoder_start_token_id == start
    ids = torch.randint(7, tokens.vocab_size, (2, max_positions))  # full length: position tables are big enough
    with torch.no_grad():
        logits = forward(model, ids)
    assert logits.shape == (2, max_positions, tokens.vocab_size)
    assert torch.isfinite(logits).all()
    assert model.dtype == torch.float32 and model.config._attn_implementation == "sdpa"


@pytest.mark.parametrize("size", ["tiny", "small"])
@pytest.mark.parametrize("vocab_size", [4096, 8192])
def test_kinds_are_size_matched(size: str, vocab_size: int) -> None:
    tokens = make_tokens(vocab_size)
    counts = {k: parameter_count(build_backbone(BackboneConfig(size=size), k, tokens, 128)) for k in BACKBONE_KINDS}
    for part in ("total", "non_embedding"):
        values = [c[part] for c in counts.values()]
        assert max(values) / min(values) < 1.25, (part, counts)
    # the preset's shape, not the family defaults: ~12 h^2 per layer for the encoder
    h, layers = PRESETS[size]["hidden"], PRESETS[size]["layers"]
    assert abs(counts["encoder"]["non_embedding"] / (12 * h * h * layers) - 1) < 0.1


def test_parameter_count_counts_tied_weights_once() -> None:
    tokens = make_tokens(1000)
    h = PRESETS["tiny"]["hidden"]
    tied = build_backbone(BackboneConfig(family="llama"), "decoder", tokens, 64)
    untied = build_backbone(BackboneConfig(family="llama", config_overrides={"tie_word_embeddings": False}),
                            "decoder", tokens, 64)
    a, b = parameter_count(tied), parameter_count(untied)
    assert a["embedding"] == 1000 * h and b["embedding"] == 2 * 1000 * h
    assert b["total"] - a["total"] == 1000 * h and a["non_embedding"] == b["non_embedding"]
    gpt2 = build_backbone(BackboneConfig(family="gpt2"), "decoder", tokens, 64)
    assert parameter_count(gpt2)["embedding"] == (1000 + 64) * h  # wte (tied to lm_head) + wpe
    for model in (tied, untied, gpt2):  # transformers' own count agrees
        assert parameter_count(model)["total"] == model.num_parameters()


def test_config_overrides_applied_and_bad_keys_rejected() -> None:
    tokens = make_tokens()
    gpt2 = build_backbone(BackboneConfig(config_overrides={"n_layer": 2, "activation_function": "relu"}),
                          "decoder", tokens, 32)
    assert describe(gpt2)["layers"] == 2 and len(gpt2.transformer.h) == 2
    assert gpt2.config.activation_function == "relu"
    # overrides go through the config constructor, so derived fields follow (T5 parses feed_forward_proj)
    t5 = build_backbone(BackboneConfig(config_overrides={"feed_forward_proj": "gated-gelu"}),
                        "encoder-decoder", tokens, 32)
    assert t5.config.is_gated_act and hasattr(t5.encoder.block[0].layer[1].DenseReluDense, "wi_0")
    with pytest.raises(BackboneError) as err:
        build_backbone(BackboneConfig(config_overrides={"n_layers": 2}), "decoder", tokens, 32)
    assert "backbone.config_overrides" in str(err.value) and "'n_layers'" in str(err.value)
    assert "n_layer" in str(err.value)  # the allowed keys are listed


def test_bad_attn_implementation_is_a_backbone_error() -> None:
    with pytest.raises(BackboneError, match="backbone.attn_implementation='bogus'"):
        build_backbone(BackboneConfig(attn_implementation="bogus"), "decoder", make_tokens(), 32)


# ----------------------------------------------------------------------------- pretrained

@pytest.mark.parametrize("kind", BACKBONE_KINDS)
def test_saved_model_loads_back_through_transformers(kind: str, tmp_path: Path) -> None:
    tokens = make_tokens(300)
    torch.manual_seed(0)
    model = build_backbone(BackboneConfig(), kind, tokens, 32).eval()
    model.save_pretrained(tmp_path)
    ids = torch.randint(7, 300, (2, 16))
    auto = getattr(transformers, AUTO_CLASSES[kind]).from_pretrained(tmp_path, local_files_only=True).eval()
    assert type(auto) is type(model)
    ours = build_backbone(BackboneConfig(pretrained=str(tmp_path)), kind, tokens, 32).eval()
    with torch.no_grad():
        reference = forward(model, ids)
        assert torch.equal(forward(auto, ids), reference)
        assert torch.equal(forward(ours, ids), reference)
    assert auto.config.pad_token_id == tokens.pad_id
    start = getattr(model.config, "decoder_start_token_id", None)
    assert getattr(auto.config, "decoder_start_token_id", None) == start


def test_hub_name_fails_fast_without_network() -> None:
    start = time.perf_counter()
    with pytest.raises(BackboneError) as err:
        build_backbone(BackboneConfig(pretrained="bert-base-uncased"), "encoder", make_tokens(), 32)
    assert time.perf_counter() - start < 5.0
    message = str(err.value)
    assert "backbone.pretrained='bert-base-uncased'" in message and "local" in message and "preset" in message


def test_pretrained_dir_problems_are_backbone_errors(tmp_path: Path) -> None:
    with pytest.raises(BackboneError, match="no config.json"):
        build_backbone(BackboneConfig(pretrained=str(tmp_path)), "encoder", make_tokens(), 32)
    build_backbone(BackboneConfig(), "decoder", make_tokens(100), 32).save_pretrained(tmp_path)
    with pytest.raises(BackboneError, match="100 embedding rows.*512 tokens"):
        build_backbone(BackboneConfig(pretrained=str(tmp_path)), "decoder", make_tokens(512), 32)
    with pytest.raises(BackboneError, match="accepts 32 positions.*needs 64"):
        build_backbone(BackboneConfig(pretrained=str(tmp_path)), "decoder", make_tokens(100), 64)
    with pytest.raises(BackboneError, match="could not be loaded as a encoder-decoder"):
        build_backbone(BackboneConfig(pretrained=str(tmp_path)), "encoder-decoder", make_tokens(100), 32)


# ----------------------------------------------------------------------------- conf/backbone

def test_backbone_yamls_match_the_schema() -> None:
    files = sorted(p.stem for p in CONF.glob("*.yaml"))
    expected = ["auto"] + [f"{k}_{s}" for k in ("decoder", "encoder", "encoder_decoder") for s in PRESETS]
    assert files == sorted(expected)
    for stem in files:
        text = (CONF / f"{stem}.yaml").read_text()
        assert text.startswith("# ")
        cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(BackboneConfig), OmegaConf.create(text)))
        if stem == "auto":
            assert (cfg.kind, cfg.size) == ("auto", "tiny")
            continue
        kind, size = stem.rsplit("_", 1)
        assert (cfg.kind, cfg.size) == (kind.replace("_", "-"), size)
        assert resolve_kind(cfg, "any", (cfg.kind,)) == cfg.kind


@pytest.mark.parametrize("model_class,kind,hidden_attr", [
    ("DistilBertForMaskedLM", "encoder", "dim"), ("OPTForCausalLM", "decoder", "hidden_size"),
    ("MT5ForConditionalGeneration", "encoder-decoder", "d_model")])
def test_any_transformers_class_of_the_kind_at_the_preset_size(model_class: str, kind: str, hidden_attr: str,
                                                               tmp_path) -> None:
    tokens = make_tokens(1000)
    cfg = BackboneConfig(model_class=model_class, size="tiny")
    model = build_backbone(cfg, kind, tokens, max_positions=64)
    assert type(model).__name__ == model_class
    assert getattr(model.config, hidden_attr) == 128 and model.get_input_embeddings().num_embeddings >= 1000
    assert describe(model)["kind"] == kind
    model.save_pretrained(tmp_path)
    assert type(getattr(transformers, AUTO_CLASSES[kind]).from_pretrained(tmp_path)).__name__ == model_class


def test_model_class_errors_name_the_problem() -> None:
    tokens = make_tokens(1000)
    with pytest.raises(BackboneError, match="not a transformers model class"):
        build_backbone(BackboneConfig(model_class="NoSuchForMaskedLM"), "encoder", tokens, 64)
    with pytest.raises(BackboneError, match=r"not a encoder LM class.*ForMaskedLM"):
        build_backbone(BackboneConfig(model_class="OPTForCausalLM"), "encoder", tokens, 64)
    with pytest.raises(BackboneError, match="set backbone.family=auto"):
        build_backbone(BackboneConfig(model_class="OPTForCausalLM", family="gpt2"), "decoder", tokens, 64)
