"""Shared fixtures: a synthetic TokenInfo, the shared-data location, and fake plugin distributions."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lmbench.objectives.base import TokenInfo

SHARED_DATA = Path(os.environ.get("LMBENCH_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture
def shared_data() -> Path:
    """../shared/data, or skip: a fresh clone elsewhere has no shared data."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (set LMBENCH_SHARED_DATA to use another)")
    return SHARED_DATA


@pytest.fixture
def token_info() -> TokenInfo:
    """Vocab of 1000: pad 0, unk 1, cls 2, sep 3, mask 4, bos 5, eos 6, '.' 10, sentinels 999 down to 900."""
    sentinels = tuple(999 - k for k in range(100))
    return TokenInfo(vocab_size=1000, pad_id=0, mask_id=4, bos_id=5, eos_id=6, cls_id=2, sep_id=3, unk_id=1,
                     special_ids=tuple(sorted({0, 1, 2, 3, 4, 5, 6, *sentinels})),
                     sentinel_ids=sentinels, sentence_end_ids=(10,))


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a whole module: tiny models run faster, and runs compared bit for bit
    must use the same thread count."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tmp_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private LMBENCH_CACHE so tests never share tokenizer/token caches with the user's."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("LMBENCH_CACHE", str(cache))
    return cache
