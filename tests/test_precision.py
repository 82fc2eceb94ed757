"""Every precision trains every built-in objective through the real Lightning Trainer, with gradient
clipping and the fused AdamW the run uses, and the record says what ran on what hardware.

These tests exist because the default run once crashed on bf16 hardware (Lightning's AMP plugin refused
`gradient_clip_val` with fused AdamW) while every test passed: the only tests of that path mocked the
hardware check or bypassed Lightning. Nothing here mocks the hardware check: `precision=auto` runs end to
end on whatever CPU the suite is on, and the other branch is forced by an explicit precision.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from transformers.pytorch_utils import Conv1D

import lmbench.pretrain as pretrain_mod
from lmbench.config import compose_config
from lmbench.objectives.registry import default_registry
from lmbench.pretrain import run_pretraining
from lmbench.results import empty_record
from lmbench.train.precision import (ClippingMixedPrecision, PrecisionChoice, cpu_flags, cpu_supports_bf16,
                                     resolve_precision)

CLIP = 0.05  # small enough that clipping acts on every step of these tiny models
TINY = ["data.builtin_documents=200", "data.tokenizer.vocab_size=800", "data.seq_len=32", "data.batch_size=4",
        "trainer=smoke", "trainer.max_steps=3", "trainer.limit_val_batches=1", "audit_batches=0",
        "save_model=false", "task=[]", "backbone.size=tiny", f"trainer.gradient_clip_val={CLIP}"]
BUILTIN = sorted(r.name for r in default_registry().records() if r.package == "lmbench")
CPU_PRECISIONS = {"32": "32-true", "bf16-mixed": "bf16-mixed", "bf16-true": "bf16-true"}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class StepProbe(pl.Callback):
    """What the optimizer saw: fused or not, the gradient norm before clipping (Lightning's
    on_before_optimizer_step) and right after the precision plugin's real clip_gradients returned (the
    gradients the step uses, unscaled), and the dtype every linear layer computed in."""

    def __init__(self) -> None:
        self.fused: bool | None = None
        self.pre_clip: list[float] = []
        self.at_step: list[float] = []
        self.matmul_dtypes: set[torch.dtype] = set()
        self.plugin = ""

    def on_train_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        optimizer = trainer.optimizers[0]
        self.fused = bool(optimizer.defaults.get("fused"))
        self.plugin = type(trainer.precision_plugin).__name__
        plugin, clip = trainer.precision_plugin, trainer.precision_plugin.clip_gradients

        def observed_clip(opt: Any, *args: Any, **kwargs: Any) -> None:
            clip(opt, *args, **kwargs)
            self.at_step.append(_grad_norm(opt))

        plugin.clip_gradients = observed_clip
        for module in pl_module.model.modules():
            if isinstance(module, (torch.nn.Linear, Conv1D)):  # GPT-2 projects with Conv1D
                module.register_forward_hook(
                    lambda mod, inp, out: self.matmul_dtypes.add(out.dtype) if torch.is_grad_enabled() else None)

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: Any, optimizer: Any) -> None:
        self.pre_clip.append(_grad_norm(optimizer))


def _grad_norm(optimizer: torch.optim.Optimizer) -> float:
    grads = [p.grad.float() for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))


def _train(tmp_path: Path, objective: str, precision: str, extra: tuple[str, ...] = ()) -> tuple[dict, StepProbe]:
    probe = StepProbe()
    cfg = compose_config([*TINY, f"objective={objective}", f"trainer.precision={precision}", *extra,
                          f"data.cache_dir={tmp_path.parent / 'cache'}", f"output_dir={tmp_path / 'run'}"])
    return run_pretraining(cfg, empty_record(), callbacks=[probe]), probe


def _check_clipped_fused_run(record: dict, probe: StepProbe) -> None:
    # bf16/fp16 gradients (bf16-true, 16-true) carry their norm to about 0.4%: 1% slack; fp32 ones 0.1%
    slack = 1.001 if record["precision"] in ("32-true", "bf16-mixed", "16-mixed", "64-true") else 1.01
    assert record["status"] == "completed" and record["steps"] == 3
    assert math.isfinite(record["train_loss"]) and math.isfinite(record["val_loss"])
    assert probe.fused is True  # the fast path is kept under every precision
    assert len(probe.at_step) == 3 and max(probe.at_step) <= CLIP * slack, probe.at_step  # clipped true gradients
    assert max(probe.pre_clip) > CLIP, probe.pre_clip  # ... and the clipping did something


@pytest.mark.parametrize("precision", sorted(CPU_PRECISIONS))
@pytest.mark.parametrize("objective", BUILTIN)
def test_every_objective_trains_under_every_cpu_precision(tmp_path: Path, objective: str, precision: str) -> None:
    record, probe = _train(tmp_path, objective, precision)
    _check_clipped_fused_run(record, probe)
    name = CPU_PRECISIONS[precision]
    assert record["precision"] == name and record["precision_detail"]["requested"] == precision
    assert probe.plugin == ("ClippingMixedPrecision" if name == "bf16-mixed" else
                            "HalfPrecision" if name == "bf16-true" else "Precision")
    # the forward really ran in the compute dtype: every linear layer's output
    assert probe.matmul_dtypes == {torch.float32 if name == "32-true" else torch.bfloat16}
    emulated = name.startswith("bf16") and not cpu_supports_bf16()
    assert record["precision_detail"]["emulated"] is emulated
    assert record["peak_flops_dtype"] == ("float32" if name == "32-true" else "bfloat16")


def test_auto_runs_end_to_end_on_this_machine(tmp_path: Path) -> None:
    """The README's default path, as a user starts it, on whatever CPU this is (no mock anywhere)."""
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != "CI"} | {"WANDB_MODE": "disabled",
                                                                 "LMBENCH_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "lmbench.cli.main", *TINY[:-1], "objective=clm",
                           f"hydra.run.dir={out}"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((out / "results.json").read_text())
    flags = cpu_flags()
    native = bool(flags & {"avx512_bf16", "amx_bf16", "bf16"}) if flags else cpu_supports_bf16()
    assert record["precision"] == ("bf16-mixed" if native else "32-true")
    assert record["precision_detail"]["requested"] == "auto" and record["precision_detail"]["emulated"] is False
    hw = record["hardware"]
    assert hw["cpu_native_bf16"] is native and hw["torch_threads"] >= 1
    assert set(hw["cpu_bf16_flags"]) == flags & {"avx512_bf16", "amx_bf16", "amx_tile", "bf16"}
    # MFU against both peaks: the compute dtype's and fp32's, from the same achieved FLOP/s
    assert record["mfu"] == pytest.approx(record["flops_per_s"] / record["peak_flops"])
    assert record["mfu_fp32"] == pytest.approx(record["flops_per_s"] / record["peak_flops_fp32"])
    if native:
        assert record["peak_flops"] > record["peak_flops_fp32"]  # AMX/AVX-512 BF16 outruns fp32


def test_fp16_autocast_with_grad_scaler_fused_adamw_and_clipping(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """16-mixed's GradScaler path (CUDA's default on GPUs without bf16), run on the CPU: torch has CPU fp16
    autocast and a CPU GradScaler. Only the precision choice is forced; Lightning, the plugin, fused AdamW
    and clipping are the real ones. Gradients are clipped after unscaling (so at most CLIP)."""
    forced = PrecisionChoice(requested="16-mixed", name="16-mixed", device="cpu", reason="test", emulated=False)
    monkeypatch.setattr(pretrain_mod, "resolve_precision", lambda *a, **k: forced)
    record, probe = _train(tmp_path, "clm", "16-mixed")
    _check_clipped_fused_run(record, probe)
    assert probe.plugin == "ClippingMixedPrecision" and record["peak_flops_dtype"] == "float16"
    assert probe.matmul_dtypes == {torch.float16}


def test_lightning_aliases_resolve_to_canonical_names() -> None:
    cpu = dict(accelerator="cpu", native_bf16=lambda: False)
    assert resolve_precision("32", **cpu).name == "32-true"
    assert resolve_precision(32, **cpu).name == "32-true"
    assert resolve_precision("64", **cpu).name == "64-true"
    assert resolve_precision("bf16", **cpu).name == "bf16-mixed"
    sixteen = resolve_precision("16", **cpu)  # a CPU has no fp16 AMP: Lightning's rule, said out loud
    assert sixteen.name == "bf16-mixed" and sixteen.requested == "16" and "CPU" in sixteen.reason
    with pytest.raises(ValueError, match=r"trainer.precision='fp8'; allowed values: auto, 32, 32-true"):
        resolve_precision("fp8", accelerator="cpu")


@pytest.mark.parametrize("native,expected,emulated", [(True, "bf16-mixed", False), (False, "32-true", False)])
def test_auto_takes_both_cpu_branches(monkeypatch: pytest.MonkeyPatch, native: bool, expected: str,
                                      emulated: bool) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    choice = resolve_precision("auto", "auto", native_bf16=lambda: native)
    assert (choice.name, choice.device, choice.emulated) == (expected, "cpu", emulated)
    assert resolve_precision("bf16-mixed", "cpu", native_bf16=lambda: native).emulated is (not native)


def test_native_bf16_is_read_from_the_cpu_flags() -> None:
    """AVX-512 without BF16 is not native bf16 (torch's mkldnn check says yes there); the flags decide."""
    assert cpu_supports_bf16({"avx2", "avx512f", "avx512bw", "avx512vl"}) is False
    assert cpu_supports_bf16({"avx512f", "avx512_bf16"}) is True
    assert cpu_supports_bf16({"amx_tile", "amx_bf16"}) is True
    assert cpu_supports_bf16({"fp", "asimd", "bf16"}) is True  # ARM


def test_clipping_plugin_is_used_for_autocast_only() -> None:
    from lmbench.train.precision import build_precision_plugin

    bf16 = PrecisionChoice("auto", "bf16-mixed", "cpu", "", False)
    assert isinstance(build_precision_plugin(bf16), ClippingMixedPrecision)
    assert build_precision_plugin(bf16, "fsdp") is None  # FSDP brings its own precision plugin
    assert build_precision_plugin(PrecisionChoice("32", "32-true", "cpu", "", False)) is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["auto", "32", "bf16-mixed", "16-mixed", "bf16-true"])
@pytest.mark.parametrize("objective", BUILTIN)
def test_every_objective_trains_under_every_gpu_precision(tmp_path: Path, objective: str, precision: str) -> None:
    record, probe = _train(tmp_path, objective, precision, ("trainer.accelerator=gpu",))
    _check_clipped_fused_run(record, probe)
    assert record["precision_detail"]["device"] == "cuda" and record["hardware"]["gpu"]
    if precision == "auto":
        assert record["precision"] == ("bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed")
