"""Crash-safe checkpoints: atomic writes, a manifest beside every file, verification before loading.

Lightning writes a checkpoint straight to its final name, so a crash, a kill or a full disk in the
middle of a write leaves a truncated file that looks like a checkpoint and fails much later with a raw
zip-reader error. Here a checkpoint is written to a temporary file in the same directory, flushed to
disk and renamed into place (`os.replace` is atomic), and only then described by
`<name>.manifest.json`: its size and sha256 (hashed while writing, no second read), the step, and the
run's config and model config with their hashes. A checkpoint is *valid* when its manifest exists and
the file's size and sha256 match it; `verify_checkpoint` checks that before anything is loaded, and
every error names the file and says what is wrong with it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO, Callable, Optional

import torch
from lightning_fabric.plugins.io.checkpoint_io import CheckpointIO

log = logging.getLogger(__name__)

MANIFEST_SUFFIX = ".manifest.json"
TMP_PREFIX = ".tmp-"
MANIFEST_VERSION = 1
_STEP_IN_NAME = re.compile(r"step-(\d+)")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be written, verified or loaded; the message names the file and the reason."""


@dataclass
class CheckpointInfo:
    """A verified checkpoint: its path, the optimizer step it holds, and its manifest (None if it has none)."""

    path: Path
    step: Optional[int]
    manifest: Optional[dict[str, Any]] = None


@dataclass
class CheckpointScan:
    """What `scan_checkpoints` found: the newest valid checkpoint (or None) and every file it rejected."""

    newest: Optional[CheckpointInfo]
    rejected: list[dict[str, str]] = field(default_factory=list)


def manifest_path(checkpoint: Path) -> Path:
    """`step-0000010.ckpt` -> `step-0000010.ckpt.manifest.json` in the same directory."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.name + MANIFEST_SUFFIX)


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable (POSIX); a no-op where directories cannot be opened (Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class _HashingWriter:
    """A binary file wrapper that hashes and counts what `torch.save` writes through it."""

    def __init__(self, fh: BinaryIO) -> None:
        self.fh, self.sha, self.size = fh, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self.fh.write(data)

    def flush(self) -> None:
        self.fh.flush()


def write_atomically(path: Path, write: Callable[[BinaryIO], None]) -> tuple[int, str]:
    """Call `write(fh)` on a temporary file beside `path`, fsync it and rename it to `path`.

    Returns (size in bytes, sha256 hex) of what was written. On any error the temporary file is removed
    and `path` is untouched (an earlier file of that name stays as it was).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            writer = _HashingWriter(fh)
            write(writer)  # type: ignore[arg-type]
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return writer.size, writer.sha.hexdigest()


def write_json_atomically(path: Path, data: dict[str, Any]) -> None:
    payload = (json.dumps(data, indent=2, sort_keys=True, default=str) + "\n").encode()
    write_atomically(path, lambda fh: fh.write(payload))


def read_manifest(checkpoint: Path) -> Optional[dict[str, Any]]:
    """The manifest of `checkpoint`, None when it has none; a manifest that is not JSON raises."""
    path = manifest_path(checkpoint)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint manifest {path} is unreadable ({exc}); the checkpoint beside it "
                              "cannot be verified") from exc


def verify_checkpoint(path: Path, require_manifest: bool = True) -> CheckpointInfo:
    """Check that `path` is a complete checkpoint before anything loads it; raise `CheckpointError`
    naming the file otherwise.

    With a manifest: size and sha256 must match. Without one: an error when `require_manifest`, else
    the file must at least be a complete zip archive (what `torch.save` writes).
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} is not a file")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): it was cut off by a crash or a full disk")
    manifest = read_manifest(path)
    if manifest is None:
        if require_manifest:
            raise CheckpointError(f"checkpoint {path} has no manifest ({manifest_path(path).name}), so its "
                                  "integrity cannot be checked; it was probably cut off while being written")
        try:
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise CheckpointError(f"checkpoint {path} is truncated or not a torch checkpoint ({size} bytes): "
                                  f"{exc}") from exc
        if bad is not None:
            raise CheckpointError(f"checkpoint {path} is corrupt: member {bad!r} fails its CRC check")
        return CheckpointInfo(path, None, None)
    if int(manifest.get("size", -1)) != size:
        raise CheckpointError(f"checkpoint {path} is truncated or altered: it has {size} bytes, its manifest "
                              f"records {manifest.get('size')}")
    actual = sha256_file(path)
    if actual != manifest.get("sha256"):
        raise CheckpointError(f"checkpoint {path} is corrupt: its sha256 {actual[:16]}... does not match the "
                              f"manifest's {str(manifest.get('sha256'))[:16]}... (a byte changed on disk)")
    return CheckpointInfo(path, int(manifest["step"]), manifest)


def _candidate_step(path: Path) -> int:
    """The step a candidate claims (manifest, else its name), only to order candidates newest first."""
    try:
        manifest = read_manifest(path)
    except CheckpointError:
        manifest = None
    if manifest is not None and isinstance(manifest.get("step"), int):
        return manifest["step"]
    match = _STEP_IN_NAME.search(path.name)
    return int(match.group(1)) if match else -1


def scan_checkpoints(directory: Path) -> CheckpointScan:
    """Find the newest valid checkpoint in `directory`, verifying candidates newest first.

    Candidates are the `*.ckpt` files that are not links (`last.ckpt` links to a step checkpoint) and not
    temporary files of an interrupted write. Every newer candidate that fails verification is returned in
    `rejected` as {"path", "error"}; older ones are not read.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return CheckpointScan(None)
    candidates = [p for p in directory.glob("*.ckpt") if not p.is_symlink() and not p.name.startswith(TMP_PREFIX)]
    candidates.sort(key=lambda p: (_candidate_step(p), p.stat().st_mtime, p.name), reverse=True)
    rejected: list[dict[str, str]] = []
    for path in candidates:
        try:
            return CheckpointScan(verify_checkpoint(path, require_manifest=True), rejected)
        except CheckpointError as exc:
            log.warning("skipping checkpoint: %s", exc)
            rejected.append({"path": str(path), "error": str(exc)})
    return CheckpointScan(None, rejected)


def remove_stale_temporaries(directory: Path) -> list[Path]:
    """Delete temporary files left by a write that was killed (they are never valid checkpoints)."""
    directory = Path(directory)
    stale = [p for p in directory.glob(f"{TMP_PREFIX}*") if p.is_file()] if directory.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


class AtomicCheckpointIO(CheckpointIO):
    """Lightning CheckpointIO plugin: atomic writes with a manifest, verified loads, clean removal.

    `identity` goes into every manifest (the run's config, model config and their hashes) so a resume
    can name what changed. Loads use `torch.load(weights_only=True)` unless Lightning asks otherwise.
    """

    def __init__(self, identity: Optional[dict[str, Any]] = None) -> None:
        self.identity = dict(identity or {})
        self._verified: dict[str, tuple[int, int]] = {}

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Optional[Any] = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options")
        path = Path(path)
        try:  # a crash between the file's and the manifest's rename leaves a mismatch, which is rejected
            size, sha = write_atomically(path, lambda fh: torch.save(checkpoint, fh))
            manifest = {"manifest_version": MANIFEST_VERSION, "file": path.name, "size": size, "sha256": sha,
                        "step": int(checkpoint.get("global_step", 0)), "epoch": int(checkpoint.get("epoch", 0)),
                        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), **self.identity}
            write_json_atomically(manifest_path(path), manifest)
        except OSError as exc:
            raise CheckpointError(f"could not write checkpoint {path}: {exc.strerror or exc}; the earlier "
                                  "checkpoints in that directory are intact") from exc
        stat = path.stat()
        self._verified[str(path)] = (stat.st_size, stat.st_mtime_ns)

    def load_checkpoint(self, path: Any, map_location: Optional[Any] = None,
                        weights_only: Optional[bool] = None) -> dict[str, Any]:
        path = Path(path)
        if not path.is_file() or self._verified.get(str(path)) != (path.stat().st_size, path.stat().st_mtime_ns):
            info = verify_checkpoint(path, require_manifest=False)
            if info.manifest is None:
                log.warning("checkpoint %s has no manifest: its integrity was not verified", path)
        try:
            return torch.load(path, map_location=map_location if map_location is not None else "cpu",
                              weights_only=True if weights_only is None else weights_only)
        except Exception as exc:  # noqa: BLE001 - name the file whatever the reader raised
            raise CheckpointError(f"checkpoint {path} could not be loaded: {type(exc).__name__}: {exc}") from exc

    def mark_verified(self, path: Path) -> None:
        """Skip re-hashing `path` on load (the caller just verified it)."""
        stat = Path(path).stat()
        self._verified[str(path)] = (stat.st_size, stat.st_mtime_ns)

    def remove_checkpoint(self, path: Any) -> None:
        path = Path(path)
        manifest_path(path).unlink(missing_ok=True)
        if path.is_symlink() or path.is_file():
            path.unlink()
        self._verified.pop(str(path), None)
