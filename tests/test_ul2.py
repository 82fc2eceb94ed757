"""UL2 mixture of denoisers: R/X rows are exactly T5SpanCorruption's output and S rows PrefixLM's (same
generator stream), paradigm tokens lead every input, the mixture realises its weights, shapes are fixed
per run, the config round-trips through OmegaConf, and the loss trains tiny T5 and GPT-2 backbones."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from omegaconf import OmegaConf

from lmbench.backbones import build_backbone
from lmbench.config import BackboneConfig
from lmbench.objectives import Blocks, ObjectiveConfigError, TokenInfo, default_registry
from lmbench_plugins.prefix_lm import PrefixLM, PrefixLMConfig
from lmbench_plugins.seq2seq_loss import seq2seq_loss
from lmbench_plugins.t5_span import T5SpanConfig, T5SpanCorruption
from lmbench_plugins.ul2 import UL2, Denoiser, UL2Config

NLU, NLG, S2S = 7, 8, 9
MODE_ID = {"R": NLU, "X": NLG, "S": S2S}
SENTINELS = tuple(999 - k for k in range(100))
TOKENS = TokenInfo(vocab_size=1000, pad_id=0, unk_id=1, cls_id=2, sep_id=3, mask_id=4, bos_id=5, eos_id=6,
                   special_ids=tuple(sorted({0, 1, 2, 3, 4, 5, 6, NLU, NLG, S2S, *SENTINELS})),
                   sentinel_ids=SENTINELS, sentence_end_ids=(10,),
                   named_ids={"[NLU]": NLU, "[NLG]": NLG, "[S2S]": S2S})
SHRINK = {"t5": dict(d_model=64, num_layers=2, num_decoder_layers=2, num_heads=4, d_kv=16, d_ff=128),
          "gpt2": dict(n_embd=64, n_layer=2, n_head=4, n_inner=128)}


def make(seq_len: int = 64, **kw) -> tuple[UL2, int]:
    objective = UL2(UL2Config(**kw), TOKENS)
    return objective, objective.block_length(seq_len)


def blocks(rows: int, n: int, seed: int = 0) -> Blocks:
    return Blocks(torch.randint(11, 900, (rows, n), generator=torch.Generator().manual_seed(seed)))  # (B, n)


def modes(objective: UL2, choice: torch.Tensor) -> list[str]:
    return [objective.config.denoisers[int(k)].mode for k in choice]


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_registered_on_both_kinds_with_equal_paradigm_weights() -> None:
    assert default_registry().get("ul2") is UL2
    assert UL2.backbone_kinds == ("encoder-decoder", "decoder")
    objective = UL2(UL2Config(), TOKENS)
    shares = {m: sum(float(p) for p, d in zip(objective.probabilities, objective.config.denoisers) if d.mode == m)
              for m in "RSX"}
    assert shares == pytest.approx({"R": 1 / 3, "S": 1 / 3, "X": 1 / 3})
    assert [(d.mode, d.mean_noise_span_length, d.noise_density) for d in objective.config.denoisers[:4]] == [
        ("R", 3.0, 0.15), ("R", 8.0, 0.15), ("X", 3.0, 0.5), ("X", 8.0, 0.5)]


def test_config_round_trips_through_omegaconf() -> None:
    node = OmegaConf.structured(UL2Config)
    back = OmegaConf.to_object(OmegaConf.merge(node, OmegaConf.create(OmegaConf.to_yaml(node))))
    assert back == UL2Config() and isinstance(back.denoisers[0], Denoiser)
    custom = OmegaConf.merge(node, {"denoisers": [{"mode": "X", "noise_density": 0.3}, {"mode": "S"}],
                                    "backbone_kind": "decoder"})
    cfg = OmegaConf.to_object(custom)
    assert cfg.denoisers == [Denoiser("X", 3.0, 0.3, 1.0), Denoiser("S")] and cfg.backbone_kind == "decoder"
    plain = UL2Config(**OmegaConf.to_container(custom))  # the core's path for a plain dict node
    assert plain == cfg
    with pytest.raises(Exception, match="Key 'rate' not in 'Denoiser'"):  # OmegaConf rejects unknown keys
        OmegaConf.merge(node, {"denoisers": [{"mode": "R", "rate": 0.1}]})


@pytest.mark.parametrize("kw,message", [
    ({"denoisers": [Denoiser("Q")]}, r"denoisers\[0\]\.mode='Q' is unknown; allowed values: R, S, X"),
    ({"denoisers": [Denoiser("R"), Denoiser("S", weight=0.0)]}, r"denoisers\[1\]\.weight=0\.0; allowed values: > 0"),
    ({"denoisers": [Denoiser("R", weight=-1)]}, r"denoisers\[0\]\.weight=-1"),
    ({"denoisers": [Denoiser("X", noise_density=1.0)]}, r"denoisers\[0\]\.noise_density=1\.0; allowed values: 0 <"),
    ({"denoisers": [Denoiser("R", noise_density=0.0)]}, r"denoisers\[0\]\.noise_density=0\.0"),
    ({"denoisers": [Denoiser("R", mean_noise_span_length=0.5)]}, r"mean_noise_span_length=0\.5; allowed values: >= 1"),
    ({"denoisers": []}, r"denoisers=\[\]; allowed values: a non-empty list"),
    ({"denoisers": [{"mode": "R", "rate": 0.1}]}, r"denoisers\[0\] has unknown keys \['rate'\]; allowed keys: mode"),
    ({"backbone_kind": "encoder"}, r"backbone_kind='encoder' is unknown; allowed values: any, encoder-decoder, decoder"),
])
def test_config_validation(kw: dict, message: str) -> None:
    with pytest.raises(ObjectiveConfigError, match=message):
        UL2Config(**kw)


def test_missing_mode_token_is_a_clear_error() -> None:
    no_nlg = dataclasses.replace(TOKENS, named_ids={"[NLU]": NLU, "[S2S]": S2S})
    with pytest.raises(ValueError, match=r"denoisers\[2\] \(mode X\) needs the paradigm token '\[NLG\]'.*has: "
                                         r"\[NLU\], \[S2S\]"):
        UL2(UL2Config(), no_nlg)
    UL2(UL2Config(denoisers=[Denoiser("R"), Denoiser("S")]), no_nlg)  # only the tokens in use are needed


@pytest.mark.parametrize("kind,seq_len,expected", [("any", 128, 93), ("decoder", 128, 93),
                                                   ("encoder-decoder", 128, 127), ("any", 64, 45)])
def test_block_length_is_the_longest_that_fits(kind: str, seq_len: int, expected: int) -> None:
    objective, n = make(seq_len, backbone_kind=kind)
    assert n == expected
    fits = lambda w: (kind == "decoder" or w.encoder <= seq_len) and (kind == "encoder-decoder" or w.decoder <= seq_len)  # noqa: E731
    assert fits(objective.widths(n)) and not fits(objective.widths(n + 1))
    batch = objective.corrupt(blocks(64, n), torch.Generator().manual_seed(0))
    width = lambda key: batch[key].shape[1]  # noqa: E731
    if kind == "encoder-decoder":
        assert width("input_ids") == seq_len and width("labels") == n
    else:
        assert width("lm_input_ids" if kind == "any" else "input_ids") <= seq_len


def test_each_mode_prepends_its_paradigm_token() -> None:
    objective, n = make()
    batch = objective.corrupt(blocks(64, n), torch.Generator().manual_seed(1))
    expected = torch.tensor([MODE_ID[m] for m in modes(objective, batch["stat_denoiser"])])
    assert set(expected.tolist()) == {NLU, NLG, S2S}
    assert torch.equal(batch["input_ids"][:, 0], expected) and torch.equal(batch["lm_input_ids"][:, 0], expected)
    assert (batch["attention_mask"][:, 0] == 1).all() and (batch["lm_labels"][:, 0] == -100).all()


def test_rows_are_exactly_t5_span_and_prefix_lm_outputs() -> None:
    """Replay the generator stream: the denoiser draw, then each denoiser on its rows in index order."""
    objective, n = make(128)
    ids = blocks(48, n, seed=3).input_ids
    batch = objective.corrupt(Blocks(ids), torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)
    choice = objective.assign(48, g)
    assert torch.equal(choice, batch["stat_denoiser"])
    for i, d in enumerate(objective.config.denoisers):
        rows = (choice == i).nonzero().squeeze(1)
        assert rows.numel() > 0
        sub = {k: v[rows] for k, v in batch.items()}
        if d.mode == "S":
            ref = PrefixLM(PrefixLMConfig(), TOKENS).corrupt(Blocks(ids[rows]), g)
            assert torch.equal(sub["lm_prefix_len"], ref["prefix_len"] + 1)
            assert torch.equal(sub["lm_input_ids"][:, 1:n + 1], ids[rows])
            assert torch.equal(sub["lm_labels"][:, 1:n + 1], ref["labels"])
            continue
        ref = T5SpanCorruption(T5SpanConfig(noise_density=d.noise_density,
                                            mean_noise_span_length=d.mean_noise_span_length), TOKENS
                               ).corrupt(Blocks(ids[rows]), g)
        lin, ltgt = ref["input_ids"].shape[1], ref["labels"].shape[1]
        assert torch.equal(sub["input_ids"][:, 1:lin + 1], ref["input_ids"])
        assert (sub["input_ids"][:, lin + 1:] == TOKENS.pad_id).all() and (sub["attention_mask"][:, lin + 1:] == 0).all()
        assert torch.equal(sub["labels"][:, :ltgt], ref["labels"]) and (sub["labels"][:, ltgt:] == -100).all()
        # decoder layout: token, T5 inputs, T5 targets; bidirectional prefix = token + inputs, loss on targets
        assert torch.equal(sub["lm_input_ids"][:, 1:lin + 1 + ltgt], torch.cat([ref["input_ids"], ref["labels"]], 1))
        assert (sub["lm_prefix_len"] == 1 + lin).all()
        assert (sub["lm_labels"][:, :1 + lin] == -100).all()
        assert torch.equal(sub["lm_labels"][:, 1 + lin:1 + lin + ltgt], ref["labels"])


def test_s_rows_split_the_block_like_prefix_lm() -> None:
    objective, n = make(64)
    ids = blocks(64, n, seed=5).input_ids
    for r in range(0, 64, 2):
        ids[r, n - 1 - r // 4:] = TOKENS.pad_id  # right-padded blocks
    batch = objective.corrupt(Blocks(ids), torch.Generator().manual_seed(2))
    s_rows = [r for r, m in enumerate(modes(objective, batch["stat_denoiser"])) if m == "S"]
    assert len(s_rows) > 10 and any(r % 2 == 0 for r in s_rows)
    for r in s_rows:
        real = int((ids[r] != TOKENS.pad_id).sum())
        P = int(batch["lm_prefix_len"][r]) - 1
        assert 1 <= P <= real - 1
        # decoder: PrefixLM semantics with [S2S] in front: -100 over token + prefix, targets after
        lm_labels = batch["lm_labels"][r]
        assert batch["lm_input_ids"][r, 0] == S2S and (lm_labels[:P + 1] == -100).all()
        assert lm_labels[P + 1:real + 1].tolist() == ids[r, P:real].tolist() and (lm_labels[real + 1:] == -100).all()
        # encoder-decoder: [S2S] prefix EOS -> rest EOS; together they rebuild the block
        enc = batch["input_ids"][r][batch["attention_mask"][r].bool()].tolist()
        labels = batch["labels"][r][batch["labels"][r] != -100].tolist()
        assert enc[0] == S2S and enc[-1] == TOKENS.eos_id and labels[-1] == TOKENS.eos_id
        assert enc[1:-1] + labels[:-1] == ids[r, :real].tolist() and len(enc) == P + 2


def test_mixture_frequencies_and_promised_stats_over_600_batches() -> None:
    objective, n = make(64)
    promised = objective.promised_stats()
    counts = torch.zeros(5)
    sums = {k: [] for k in promised}
    for seed in range(600):
        b = blocks(8, n, seed=seed % 10)
        batch = objective.corrupt(b, torch.Generator().manual_seed(seed))
        counts += torch.bincount(batch["stat_denoiser"], minlength=5)
        for key, value in objective.measure_stats(b, batch).items():
            sums[key].append(value)
    freq = counts / counts.sum()
    assert torch.allclose(freq, objective.probabilities.float(), atol=0.02), freq
    for key, stat in promised.items():
        values = torch.tensor(sums[key], dtype=torch.float64)
        mean = values[~values.isnan()].mean().item()
        assert abs(mean - stat.value) <= stat.tolerance, (key, mean, stat)
    assert promised["denoisers[2].noise_density"].value == pytest.approx(22 / 45)  # T5 rounds 22.5 to 22
    # unequal weights: R 0.6, S 0.2, X 0.2
    skewed = UL2(UL2Config(denoisers=[Denoiser("R", weight=3.0), Denoiser("S"), Denoiser("X", 3.0, 0.5)]), TOKENS)
    g = torch.Generator().manual_seed(0)
    draws = torch.cat([skewed.assign(8, g) for _ in range(600)])
    assert torch.allclose(torch.bincount(draws) / draws.numel(), torch.tensor([0.6, 0.2, 0.2]), atol=0.02)


def test_deterministic_per_seed_and_shapes_fixed_per_run() -> None:
    objective, n = make(64)
    b = blocks(8, n)
    first = objective.corrupt(b, torch.Generator().manual_seed(5))
    again = objective.corrupt(b, torch.Generator().manual_seed(5))
    other = objective.corrupt(b, torch.Generator().manual_seed(6))
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["input_ids"], other["input_ids"])
    seen, shapes = set(), set()
    for seed in range(40):  # one row per batch: every batch is a single denoiser
        batch = objective.corrupt(blocks(1, n, seed), torch.Generator().manual_seed(seed))
        seen.add(int(batch["stat_denoiser"]))
        shapes.add(tuple((k, tuple(v.shape[1:])) for k, v in batch.items()))
    assert seen == {0, 1, 2, 3, 4} and len(shapes) == 1, shapes


def backbone(family: str, kind: str, max_positions: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_backbone(BackboneConfig(family=family, config_overrides=SHRINK[family]), kind, TOKENS, max_positions)


def test_padding_to_run_widths_changes_no_loss(one_thread) -> None:
    """The loss of a denoiser's rows is the same padded to the run's widths or cut to their own."""
    objective, n = make(64)
    batch = objective.corrupt(blocks(32, n), torch.Generator().manual_seed(0))
    rows = (batch["stat_denoiser"] == 0).nonzero().squeeze(1)  # R(3, 0.15) rows
    assert rows.numel() > 0
    sub = {k: v[rows] for k, v in batch.items()}
    w = objective.denoiser_widths(0, n)
    assert w.encoder < sub["input_ids"].shape[1] and w.decoder < sub["lm_input_ids"].shape[1]
    cut = {"input_ids": sub["input_ids"][:, :w.encoder], "attention_mask": sub["attention_mask"][:, :w.encoder],
           "labels": sub["labels"][:, :w.target]}
    cut.update({f"lm_{k}": sub[f"lm_{k}"][:, :w.decoder] for k in ("input_ids", "attention_mask", "labels")})
    cut["lm_prefix_len"] = sub["lm_prefix_len"]
    with torch.no_grad():
        for model in (backbone("t5", "encoder-decoder", 64).eval(), backbone("gpt2", "decoder", 66).eval()):
            padded, own = objective.loss(model, sub), objective.loss(model, cut)
            assert padded.loss.item() == pytest.approx(own.loss.item(), rel=1e-5)
            assert padded.stats["supervised_tokens"] == own.stats["supervised_tokens"] == rows.numel() * w.target


@pytest.mark.parametrize("family,kind", [("t5", "encoder-decoder"), ("gpt2", "decoder")])
def test_loss_matches_reference_and_decreases(family: str, kind: str, one_thread) -> None:
    objective, n = make(64)
    batch = objective.corrupt(blocks(8, n, seed=1), torch.Generator().manual_seed(1))
    model = backbone(family, kind, 66).eval()
    with torch.no_grad():
        out = objective.loss(model, batch)
        if kind == "encoder-decoder":
            reference = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                              labels=batch["labels"]).loss  # HF's own shift + cross-entropy
        else:
            lm = {k[3:]: v for k, v in batch.items() if k.startswith("lm_")}
            reference = PrefixLM(PrefixLMConfig(), TOKENS).loss(model, lm).loss
    assert out.loss.item() == pytest.approx(reference.item(), rel=1e-5)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        result = objective.loss(model, batch)
        optimizer.zero_grad()
        result.loss.backward()
        optimizer.step()
        losses.append(result.loss.item())
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < 0.6 * losses[0], losses


def test_batch_built_for_the_other_kind_is_a_clear_error() -> None:
    objective, n = make(64, backbone_kind="encoder-decoder")
    batch = objective.corrupt(blocks(2, n), torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"model is a decoder but the batch was built for "
                                         r"backbone_kind='encoder-decoder'; set objective.backbone_kind to any or decoder"):
        objective.loss(backbone("gpt2", "decoder", 66), batch)
    assert seq2seq_loss(backbone("t5", "encoder-decoder", 64), batch).loss.isfinite()


def test_conforms_on_both_kinds(monkeypatch: pytest.MonkeyPatch) -> None:
    testing = pytest.importorskip("lmbench.testing")
    conformance = pytest.importorskip("lmbench.testing.conformance")
    kit_tokens = conformance.conformance_tokens()
    if not {"[NLU]", "[NLG]", "[S2S]"} <= set(kit_tokens.named_ids):  # the kit's ids lack UL2's tokens: add them
        extra = {"[NLU]": NLU, "[NLG]": NLG, "[S2S]": S2S}
        patched = dataclasses.replace(kit_tokens, special_ids=tuple(sorted({*kit_tokens.special_ids, *extra.values()})),
                                      named_ids={**kit_tokens.named_ids, **extra})
        monkeypatch.setattr(conformance, "conformance_tokens", lambda: patched)
    report = testing.assert_conforms(UL2)
    assert report.get("loss[encoder-decoder]").passed and report.get("loss[decoder]").passed


@pytest.mark.parametrize("kind,keys_absent", [("encoder-decoder", "lm_labels"), ("decoder", "lm_labels")])
def test_kind_bound_by_the_core_builds_one_full_length_layout(kind: str, keys_absent: str) -> None:
    bound = UL2(UL2Config(), TOKENS)
    bound.backbone_kind = kind  # what lmbench.pretrain does before asking for the block length
    configured, _ = make(128, backbone_kind=kind)
    assert bound.block_length(128) == configured.block_length(128)
    if kind == "encoder-decoder":
        assert bound.block_length(128) > make(128)[0].block_length(128)  # "any" must fit the decoder layout too
    n = bound.block_length(128)
    batch = bound.corrupt(blocks(4, n), torch.Generator().manual_seed(0))
    assert keys_absent not in batch
