"""The one tokenizer every objective in a comparison shares, trained on the pretraining corpus.

A fair comparison needs identical token ids for every objective, so the tokenizer is trained once per
(corpus content, tokenizer config) and cached on disk; later jobs of a sweep load the cached copy. All
three types share one layout of special tokens, so every objective finds what it needs by id:

    ids 0..6   [PAD] [UNK] [CLS] [SEP] [MASK] <s>(bos) </s>(eos)
    ids 7..    `extra_special_tokens` if the config has any (e.g. UL2's [NLU] [NLG] [S2S]), then
               the trained vocabulary: `vocab_size` ordinary tokens (fewer if the corpus is small)
    top 100    <extra_id_99> ... <extra_id_0>: T5 sentinels counted down, <extra_id_0> = len(tokenizer) - 1

so len(tokenizer) = vocab_size + 7 + len(extra_special_tokens) + 100 at most. Types (all keep '.', '!'
and '?' as tokens of their own, so sentence ends are detectable):
    wordpiece  BERT-style: lowercase, NFD + strip accents, split on whitespace and punctuation, ## pieces.
    bpe        GPT-2-style byte-level BPE, case kept, NFC; never produces [UNK].
    unigram    SentencePiece-style Unigram LM with a metaspace (U+2581), case kept, NFKC; the
               unk_token goes to the trainer, as `tokenizers` requires.
A single sentence encodes as "[CLS] A [SEP]" and a pair as "[CLS] A [SEP] B [SEP]" (fill-mask ready);
the token cache (blocks.py) encodes without these. [MASK] and the sentinels absorb the space before
them (lstrip), as RoBERTa's mask does, so "the [MASK] sat" predicts the word with its leading space.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Sequence, Any, Iterator

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from tokenizers import trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from lmbench.data.sources import CorpusSource
from lmbench.objectives.base import TokenInfo

TOKENIZER_FORMAT = "lmbench-tokenizer-v2"  # bump when training or layout changes: part of the cache key
TOKENIZER_TYPES: tuple[str, ...] = ("wordpiece", "bpe", "unigram")
SPECIAL_TOKENS: tuple[str, ...] = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "<s>", "</s>")
N_SENTINELS = 100
SENTINELS: tuple[str, ...] = tuple(f"<extra_id_{k}>" for k in range(N_SENTINELS))
_SENTENCE_ENDS = Regex(r"[.!?]")
_TRAIN_BATCH_DOCS = 1000


class TokenizerError(ValueError):
    """The tokenizer config or a tokenizer directory is unusable; the message names the key or path."""


@contextmanager
def atomic_cache_dir(final: Path) -> Iterator[Path]:
    """Yield a fresh temporary folder beside `final`; when the block succeeds, rename it to `final`.

    The rename is atomic, so readers see either no cache entry or a complete one. If another process
    published `final` first (two sweep jobs racing), its copy wins and ours is deleted. On an error the
    temporary folder is removed and `final` is left untouched.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; a shared cache should be readable by all
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.exists():
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # someone else finished first; theirs is complete
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def extra_special_tokens(cfg: Any) -> tuple[str, ...]:
    """`cfg.extra_special_tokens` (objective-specific special tokens such as UL2's modes), () if unset."""
    extra = tuple(str(t) for t in (getattr(cfg, "extra_special_tokens", None) or ()))
    clash = [t for t in extra if t in SPECIAL_TOKENS or t in SENTINELS or extra.count(t) > 1]
    if clash:
        raise TokenizerError(f"data.tokenizer.extra_special_tokens: {clash} repeat a built-in or another "
                             "special token")
    return extra


def _check_config(cfg: Any) -> None:
    if cfg.type not in TOKENIZER_TYPES:
        raise TokenizerError(f"data.tokenizer.type={cfg.type!r} is unknown; allowed values: "
                             f"{' | '.join(TOKENIZER_TYPES)}")
    if int(cfg.vocab_size) < 16:
        raise TokenizerError(f"data.tokenizer.vocab_size={cfg.vocab_size!r}; allowed values: an integer >= 16 "
                             "(ordinary tokens, not counting the 7 specials and 100 sentinels)")
    if int(cfg.min_frequency) < 0:
        raise TokenizerError(f"data.tokenizer.min_frequency={cfg.min_frequency!r}; allowed values: >= 0")


def _new_tokenizer(kind: str, vocab_size: int, min_frequency: int, extra: tuple[str, ...] = (),
                   alphabet: Sequence[str] = (".", "!", "?")) -> tuple[Tokenizer, trainers.Trainer]:
    """An untrained tokenizer pipeline of `kind` and its trainer (specials first, in their fixed order)."""
    specials = [AddedToken(t, special=True, normalized=False, lstrip=(t == "[MASK]"))
                for t in SPECIAL_TOKENS + extra]
    size = vocab_size + len(specials)  # the trainers count the specials in their vocab_size
    isolate_ends = pre_tokenizers.Split(_SENTENCE_ENDS, behavior="isolated")
    if kind == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                    strip_accents=True, lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()  # isolates every punctuation mark
        tok.decoder = decoders.WordPiece(prefix="##")
        trainer = trainers.WordPieceTrainer(vocab_size=size, min_frequency=min_frequency, special_tokens=specials,
                                            show_progress=False, initial_alphabet=list(alphabet),
                                            continuing_subword_prefix="##")
    elif kind == "bpe":
        tok = Tokenizer(models.BPE())
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [isolate_ends, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=size, min_frequency=min_frequency, special_tokens=specials,
                                      show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    elif kind == "unigram":
        tok = Tokenizer(models.Unigram())
        tok.normalizer = normalizers.NFKC()
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always"), isolate_ends])
        tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
        # Unigram has no min_frequency; tokenizers wants its unk_token on the trainer
        trainer = trainers.UnigramTrainer(vocab_size=size, special_tokens=specials, unk_token="[UNK]",
                                          show_progress=False, initial_alphabet=[".", "!", "?"])
    else:
        raise TokenizerError(f"data.tokenizer.type={kind!r}; allowed values: {' | '.join(TOKENIZER_TYPES)}")
    return tok, trainer


def _finish(tok: Tokenizer, extra: tuple[str, ...] = ()) -> PreTrainedTokenizerFast:
    """Add the sentinels at the top of the vocabulary and the [CLS]/[SEP] template; wrap for transformers."""
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False, lstrip=True) for s in reversed(SENTINELS)])
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", bos_token="<s>", eos_token="</s>", extra_special_tokens=list(extra + SENTINELS),
        clean_up_tokenization_spaces=False)


def _batched_documents(source: CorpusSource) -> Iterator[list[str]]:
    batch: list[str] = []
    for doc in source.iter_documents():
        batch.append(doc)
        if len(batch) == _TRAIN_BATCH_DOCS:
            yield batch
            batch = []
    if batch:
        yield batch


def train_tokenizer(cfg: Any, source: CorpusSource) -> PreTrainedTokenizerFast:
    """Train a tokenizer of `cfg.type` on the documents of `source` (streamed) and wrap it.

    The same corpus and settings give the same tokenizer in every process: `tokenizers` breaks
    frequency ties and numbers WordPiece/Unigram vocabularies in hash-map order (different per
    process), so WordPiece gets the corpus's sorted alphabet up front and both get canonical ids.
    """
    _check_config(cfg)
    extra = extra_special_tokens(cfg)
    alphabet: Sequence[str] = (".", "!", "?")
    if cfg.type == "wordpiece":
        chars: set[str] = set()
        for batch in _batched_documents(source):
            for doc in batch:
                chars.update(doc.lower())
        alphabet = sorted(c for c in chars | {".", "!", "?"} if not c.isspace())
    tok, trainer = _new_tokenizer(cfg.type, int(cfg.vocab_size), int(cfg.min_frequency), extra, alphabet)
    tok.train_from_iterator(_batched_documents(source), trainer=trainer)
    _canonicalise_ids(tok, len(SPECIAL_TOKENS) + len(extra))
    return _finish(tok, extra)


def _canonicalise_ids(tok: Tokenizer, n_special: int) -> None:
    """Renumber the trained vocabulary deterministically: specials keep ids 0..n_special-1, the rest
    follow sorted (WordPiece: by string; Unigram: by descending score, then string). BPE is already
    deterministic (its merges define the order) and is left as it is."""
    state = json.loads(tok.to_str())["model"]
    if state["type"] == "WordPiece":
        vocab = sorted(state["vocab"].items(), key=lambda kv: kv[1])
        head, rest = vocab[:n_special], sorted(t for t, _ in vocab[n_special:])
        ordered = {t: i for i, t in enumerate([t for t, _ in head] + rest)}
        tok.model = models.WordPiece(ordered, unk_token=state["unk_token"],
                                     continuing_subword_prefix=state["continuing_subword_prefix"],
                                     max_input_chars_per_word=state["max_input_chars_per_word"])
    elif state["type"] == "Unigram":
        pieces = [tuple(p) for p in state["vocab"]]
        head, rest = pieces[:n_special], sorted(pieces[n_special:], key=lambda p: (-p[1], p[0]))
        unk = pieces[state["unk_id"]][0]
        ordered = head + rest
        tok.model = models.Unigram(ordered, unk_id=[p[0] for p in ordered].index(unk),
                                   byte_fallback=bool(state.get("byte_fallback", False)))


def load_tokenizer_dir(path: str | Path, key: str = "data.tokenizer.path") -> PreTrainedTokenizerFast:
    """Load a local fast tokenizer directory and check it has every token lmbench needs."""
    directory = Path(path).expanduser()
    if not directory.is_dir():
        raise FileNotFoundError(f"{key}={str(path)!r}: no such tokenizer directory")
    try:
        tok = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    except Exception as exc:  # transformers raises OSError/ValueError/... for unusable folders
        raise TokenizerError(f"{key}={str(path)!r}: cannot load a tokenizer from it: {exc}") from exc
    if not getattr(tok, "is_fast", False):
        raise TokenizerError(f"{key}={str(path)!r}: not a fast tokenizer (no tokenizer.json); "
                             "lmbench needs word_ids() from a fast tokenizer")
    try:
        TokenInfo.from_tokenizer(tok)
    except ValueError as exc:
        raise TokenizerError(f"{key}={str(path)!r}: {exc}; it needs pad, unk, cls, sep, mask, bos and eos "
                             "tokens (add them with tokenizer.add_special_tokens and save it again)") from exc
    return tok


def tokenizer_hash(tokenizer: PreTrainedTokenizerFast) -> str:
    """sha256 of the serialized tokenizer.json (minus transient truncation/padding) and its special tokens."""
    state = json.loads(tokenizer.backend_tokenizer.to_str())
    state.pop("truncation", None)
    state.pop("padding", None)
    names = {attr: str(getattr(tokenizer, attr)) for attr in
             ("pad_token", "unk_token", "cls_token", "sep_token", "mask_token", "bos_token", "eos_token")}
    blob = json.dumps({"tokenizer": state, "special": names}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def tokenizer_cache_key(cfg: Any, source: CorpusSource) -> str:
    """The cache key of a trained tokenizer: corpus content, tokenizer config and format version."""
    fields: dict[str, Any] = {"format": TOKENIZER_FORMAT, "source": source.fingerprint(), "type": str(cfg.type),
                              "vocab_size": int(cfg.vocab_size), "min_frequency": int(cfg.min_frequency)}
    if extra_special_tokens(cfg):
        fields["extra_special_tokens"] = list(extra_special_tokens(cfg))
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def load_or_train_tokenizer(cfg: Any, source: CorpusSource,
                            cache_dir: Path) -> tuple[PreTrainedTokenizerFast, str]:
    """Return (tokenizer, tokenizer_hash) for a `TokenizerConfig`.

    With `cfg.path`, that local directory is loaded. Otherwise the tokenizer trained on `source` with
    these settings is loaded from `cache_dir/tokenizers/<key>/`, or trained and cached there
    atomically (a crash or a concurrent job never leaves a half-written entry).
    """
    if cfg.path:
        tok = load_tokenizer_dir(cfg.path)
        return tok, tokenizer_hash(tok)
    _check_config(cfg)
    final = Path(cache_dir).expanduser() / "tokenizers" / tokenizer_cache_key(cfg, source)[:24]
    if not (final / "tokenizer.json").exists():
        tok = train_tokenizer(cfg, source)
        with atomic_cache_dir(final) as tmp:
            tok.save_pretrained(str(tmp))
            meta = {"format": TOKENIZER_FORMAT, "type": cfg.type, "vocab_size": int(cfg.vocab_size),
                    "min_frequency": int(cfg.min_frequency), "source": repr(source),
                    "source_fingerprint": source.fingerprint(), "len": len(tok), "hash": tokenizer_hash(tok)}
            (tmp / "lmbench_tokenizer.json").write_text(json.dumps(meta, indent=2) + "\n")
    tok = load_tokenizer_dir(final, key=f"tokenizer cache {final}")
    return tok, tokenizer_hash(tok)
