"""Corpus sources: where pretraining text comes from, as a stream of documents with a content hash.

Every objective in a comparison must see the same text, and the tokenizer and token caches are keyed by
what the text *is*, not where it lives: a source's `fingerprint()` hashes the content itself (file bytes,
dataset rows, or the generator's parameters), so an edited file can never reuse a stale cache. Documents
are streamed one at a time so that memory stays flat whatever the corpus size.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Iterator, Protocol, runtime_checkable

SOURCE_KINDS: tuple[str, ...] = ("builtin", "text", "hf")
_TEXT_FORMAT = "text-v1"  # bump when the document splitting rules change: it is part of the fingerprint
_BOM = b"\xef\xbb\xbf"
_HF_BUILDERS = {".txt": "text", ".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet",
                ".arrow": "arrow"}


class CorpusError(ValueError):
    """The corpus cannot be read as configured; the message names the file, line or config key."""


@runtime_checkable
class CorpusSource(Protocol):
    """A corpus: documents in a fixed order, and a stable hash of their content."""

    def iter_documents(self) -> Iterator[str]:
        """Yield the documents (non-empty strings) in a fixed order."""
        ...

    def fingerprint(self) -> str:
        """Hex digest that changes whenever the documents would change."""
        ...


class BuiltinSource:
    """The generated corpus of `lmbench.corpus`: `n_documents` documents from generator `seed`."""

    def __init__(self, n_documents: int, seed: int = 0) -> None:
        if int(n_documents) <= 0:
            raise CorpusError(f"data.builtin_documents={n_documents!r}; allowed values: an integer > 0")
        self.n_documents = int(n_documents)
        self.seed = int(seed)

    @staticmethod
    def _corpus() -> Any:
        import lmbench.corpus as corpus  # lazy: the corpus generator is only needed for this source

        if not hasattr(corpus, "generate_documents") or not hasattr(corpus, "corpus_fingerprint"):
            raise ImportError("lmbench.corpus provides no generate_documents/corpus_fingerprint; "
                              "use data.source=text or data.source=hf")
        return corpus

    def iter_documents(self) -> Iterator[str]:
        yield from self._corpus().generate_documents(self.n_documents, seed=self.seed)

    def fingerprint(self) -> str:
        inner = self._corpus().corpus_fingerprint(self.n_documents, self.seed)
        return hashlib.sha256(f"builtin:{inner}".encode()).hexdigest()

    def __repr__(self) -> str:
        return f"BuiltinSource(n_documents={self.n_documents}, seed={self.seed})"


class TextSource:
    """A UTF-8 .txt file, or a folder of them (searched recursively, sorted by relative path).

    Documents are separated by blank lines (whitespace-only lines count as blank); the lines of one
    document are joined with "\\n". A leading BOM and CRLF line ends are accepted; a missing final
    newline is fine. Bytes that are not UTF-8 raise `CorpusError` naming `path:line`.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        if not self.path.exists():
            raise FileNotFoundError(f"text corpus not found: {str(self.path)!r} (data.path); "
                                    "give a .txt file or a folder of .txt files")
        if self.path.is_dir():
            self.files = sorted(self.path.rglob("*.txt"), key=lambda p: p.relative_to(self.path).as_posix())
            if not self.files:
                raise CorpusError(f"empty corpus: no .txt files under {str(self.path)!r} (data.path)")
        else:
            self.files = [self.path]
        self._fingerprint: str | None = None

    def _iter_file(self, file: Path) -> Iterator[str]:
        lines: list[str] = []
        with open(file, "rb") as handle:
            for lineno, raw in enumerate(handle, start=1):
                if lineno == 1 and raw.startswith(_BOM):
                    raw = raw[len(_BOM):]
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise CorpusError(
                        f"{file}:{lineno}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at byte {exc.start + 1} "
                        "of the line); "
                        "convert the file to UTF-8, e.g. `iconv -f latin1 -t utf-8`") from None
                line = line.rstrip("\r\n")
                if line.strip():
                    lines.append(line)
                elif lines:
                    yield "\n".join(lines)
                    lines = []
        if lines:
            yield "\n".join(lines)

    def iter_documents(self) -> Iterator[str]:
        n = 0
        for file in self.files:
            for doc in self._iter_file(file):
                n += 1
                yield doc
        if n == 0:
            raise CorpusError(f"empty corpus: {str(self.path)!r} (data.path) holds no text, only blank lines")

    def fingerprint(self) -> str:
        """sha256 over the splitting-rule version, each file's relative name, and its bytes (streamed)."""
        if self._fingerprint is None:
            digest = hashlib.sha256(_TEXT_FORMAT.encode())
            for file in self.files:
                name = file.name if file == self.path else file.relative_to(self.path).as_posix()
                digest.update(f"\0file\0{name}\0".encode())
                with open(file, "rb") as handle:
                    while chunk := handle.read(1 << 20):
                        digest.update(chunk)
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    def __repr__(self) -> str:
        return f"TextSource({str(self.path)!r}, {len(self.files)} files)"


class HFDatasetSource:
    """One split of a Hugging Face dataset; each non-blank value of `text_column` is a document.

    `name` is a hub name (`wikitext`), a packaged builder (`text`, `json`, `csv`, `parquet`) used with
    `data_files`, or a local path: a folder written by `save_to_disk`, a folder of data files, or a
    single .txt/.json/.jsonl/.csv/.parquet file (read as the requested split). Local paths need no
    network. The dataset is loaded on first use; the fingerprint hashes the documents themselves.
    """

    def __init__(self, name: str, config: str | None = None, split: str = "train", text_column: str = "text",
                 data_files: Any = None, cache_dir: str | Path | None = None) -> None:
        if not name:
            raise CorpusError("data.hf_name is required for data.source=hf (a hub name or a local path)")
        self.name, self.config, self.split, self.text_column = str(name), config, str(split), str(text_column)
        self.data_files = data_files
        self.cache_dir = None if cache_dir is None else str(cache_dir)
        self._dataset: Any = None
        self._fingerprint: str | None = None

    def _where(self) -> str:
        return f"data.hf_name={self.name!r}, data.hf_config={self.config!r}, data.hf_split={self.split!r}"

    def _load(self) -> Any:
        import datasets  # lazy: heavy import, only needed for this source

        local = Path(self.name).expanduser()
        try:
            if local.is_dir() and ((local / "dataset_dict.json").exists() or (local / "state.json").exists()):
                loaded = datasets.load_from_disk(str(local))
            elif local.is_file():
                builder = _HF_BUILDERS.get(local.suffix.lower())
                if builder is None:
                    raise CorpusError(f"data.hf_name={self.name!r}: unknown file type {local.suffix!r}; "
                                      f"allowed: {', '.join(sorted(_HF_BUILDERS))}")
                loaded = datasets.load_dataset(builder, data_files={self.split: str(local)},
                                               cache_dir=self.cache_dir)
            elif local.is_dir():
                loaded = datasets.load_dataset(str(local), self.config, cache_dir=self.cache_dir)
            else:
                loaded = datasets.load_dataset(self.name, self.config, split=self.split,
                                               data_files=self.data_files, cache_dir=self.cache_dir)
        except CorpusError:
            raise
        except Exception as exc:  # datasets raises many types (network, missing config, bad split)
            raise CorpusError(f"cannot load Hugging Face dataset ({self._where()}): {type(exc).__name__}: {exc}. "
                              "Without network, point data.hf_name at a local path or set "
                              "HF_DATASETS_OFFLINE=1 to use the local cache") from exc
        if isinstance(loaded, (datasets.DatasetDict, dict)):
            if self.split not in loaded:
                raise CorpusError(f"data.hf_split={self.split!r} not in dataset {self.name!r}; "
                                  f"available splits: {', '.join(sorted(loaded))}")
            loaded = loaded[self.split]
        if self.text_column not in loaded.column_names:
            raise CorpusError(f"data.hf_text_column={self.text_column!r} not in dataset {self.name!r} "
                              f"split {self.split!r}; columns present: {', '.join(loaded.column_names)}")
        return loaded.select_columns([self.text_column])

    @property
    def dataset(self) -> Any:
        if self._dataset is None:
            self._dataset = self._load()
        return self._dataset

    def iter_documents(self) -> Iterator[str]:
        n = 0
        for batch in self.dataset.iter(batch_size=1000):
            for text in batch[self.text_column]:
                if isinstance(text, str) and text.strip():
                    n += 1
                    yield text
        if n == 0:
            raise CorpusError(f"empty corpus: column {self.text_column!r} holds no text ({self._where()})")

    def fingerprint(self) -> str:
        """sha256 over every document (length-prefixed), computed once per instance."""
        if self._fingerprint is None:
            digest = hashlib.sha256(b"hf-v1")
            for doc in self.iter_documents():
                data = doc.encode("utf-8")
                digest.update(len(data).to_bytes(8, "little"))
                digest.update(data)
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    def __repr__(self) -> str:
        return f"HFDatasetSource({self._where()}, text_column={self.text_column!r})"


def make_source(cfg: Any) -> CorpusSource:
    """Build the source a `DataConfig` (or its DictConfig) describes; errors name the key to fix."""
    kind = str(cfg.source)
    if kind == "builtin":
        return BuiltinSource(int(cfg.builtin_documents), int(cfg.builtin_seed))
    if kind == "text":
        if not cfg.path:
            raise CorpusError("data.path is required for data.source=text (a .txt file or a folder of .txt files)")
        return TextSource(cfg.path)
    if kind == "hf":
        if not cfg.hf_name:
            raise CorpusError("data.hf_name is required for data.source=hf (a hub dataset name or a local path)")
        return HFDatasetSource(cfg.hf_name, cfg.hf_config, cfg.hf_split, cfg.hf_text_column)
    raise CorpusError(f"data.source={kind!r} is unknown; allowed values: {' | '.join(SOURCE_KINDS)}")
