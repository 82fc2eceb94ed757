"""precision=auto: bf16-mixed where the hardware runs bf16 natively, fp32 where bf16 would be emulated
(on this AVX2 CPU HF's bf16=True is about 40x slower than fp32); explicit values pass through."""

from __future__ import annotations

import pytest
import torch

import lmbench.train.trainer as trainer_mod
from lmbench.config import TrainerConfig
from lmbench.train.trainer import resolve_precision


@pytest.mark.parametrize("native,expected", [(True, "bf16-mixed"), (False, "32-true")])
def test_auto_follows_native_bf16_on_cpu(monkeypatch: pytest.MonkeyPatch, native: bool, expected: str) -> None:
    monkeypatch.setattr(trainer_mod, "cpu_supports_bf16", lambda: native)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_precision(TrainerConfig(precision="auto", accelerator="cpu")) == expected
    assert resolve_precision(TrainerConfig(precision="auto", accelerator="auto")) == expected


def test_detection_agrees_with_torch_and_explicit_values_pass_through() -> None:
    assert trainer_mod.cpu_supports_bf16() == bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    for value in ("32-true", "bf16-mixed", "16-mixed", "bf16-true"):
        assert resolve_precision(TrainerConfig(precision=value, accelerator="cpu")) == value
    with pytest.raises(ValueError, match=r"trainer.precision='fp8'; allowed values: auto, 32-true, bf16-mixed"):
        resolve_precision(TrainerConfig(precision="fp8", accelerator="cpu"))
