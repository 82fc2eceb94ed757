"""Which numeric precision a run trains in, decided once, recorded truthfully, and made to work.

Three jobs that must agree with each other, so they live together:

- `resolve_precision`: the user's `trainer.precision` (lmbench's names or any of Lightning's aliases:
  `32`, `16`, `bf16`, `64`, `32-true`, ...) -> the canonical Lightning name that will actually run on
  this machine. `auto` picks bf16 autocast where the hardware computes bf16 natively (a CUDA GPU with
  bf16, or a CPU with AVX-512 BF16 / AMX), fp16 autocast on older GPUs, fp32 otherwise. `16-mixed` on a
  CPU runs as bf16 autocast (Lightning's rule: CPUs have no fp16 AMP); that change is logged and the
  record keeps both the requested and the running name.
- `build_precision_plugin`: Lightning's mixed-precision plugin refuses `gradient_clip_val` with an
  optimizer that unscales internally (torch's fused AdamW), although with bf16 there is nothing to
  unscale and with fp16 the GradScaler can unscale a fused optimizer's gradients before clipping
  (`GradScaler.step` then passes the fused kernel `grad_scale=None`). `ClippingMixedPrecision` does
  exactly that, so fused AdamW, clipping and every autocast precision work together.
- `describe_hardware`: what the run ran on (CPU model and its bf16/AMX flags, or the GPU), for
  results.json and the benchmarks.
"""

from __future__ import annotations

import logging
import os
import platform
from dataclasses import asdict, dataclass
from typing import Any, Callable, Optional, Union

import torch
from pytorch_lightning.plugins.precision import MixedPrecision, Precision
from torch.optim import Optimizer

log = logging.getLogger(__name__)

CANONICAL = ("32-true", "bf16-mixed", "bf16-true", "16-mixed", "16-true", "64-true")
# Lightning's accepted spellings (pytorch_lightning's _PRECISION_INPUT) -> the canonical name.
ALIASES: dict[str, str] = {
    "32": "32-true", "32-true": "32-true", "fp32": "32-true",
    "16": "16-mixed", "16-mixed": "16-mixed", "16-true": "16-true",
    "bf16": "bf16-mixed", "bf16-mixed": "bf16-mixed", "bf16-true": "bf16-true",
    "64": "64-true", "64-true": "64-true",
}
ALLOWED = ("auto", *ALIASES)
COMPUTE_DTYPES: dict[str, torch.dtype] = {"32-true": torch.float32, "bf16-mixed": torch.bfloat16,
                                          "bf16-true": torch.bfloat16, "16-mixed": torch.float16,
                                          "16-true": torch.float16, "64-true": torch.float64}
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "amx_tile", "bf16")


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision a run asked for and the one that runs.

    requested: the config value as given (`auto`, `16`, ...); name: canonical Lightning precision that
    runs; device: `cpu` or `cuda` (where autocast runs); reason: why `name` (auto's pick, an alias, a
    CPU fallback); emulated: bf16 on a CPU without native bf16 (correct but slow).
    """

    requested: str
    name: str
    device: str
    reason: str
    emulated: bool

    @property
    def compute_dtype(self) -> torch.dtype:
        return COMPUTE_DTYPES[self.name]

    @property
    def mixed(self) -> bool:
        return self.name.endswith("-mixed")

    def to_record(self) -> dict[str, Any]:
        return {**asdict(self), "compute_dtype": str(self.compute_dtype).removeprefix("torch.")}


def cpu_flags() -> set[str]:
    """The CPU feature flags of /proc/cpuinfo (x86 `flags`, ARM `Features`); empty where there is none."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_supports_bf16(flags: Optional[set[str]] = None) -> bool:
    """True when the CPU computes bf16 natively: x86 AVX-512 BF16 or AMX-BF16, ARM's bf16 extension (the
    flags lscpu shows). Where the OS shows no flags, oneDNN's own check. Not torch's mkldnn check alone:
    it also says yes on AVX-512 CPUs without bf16 instructions, where bf16 is emulated and slower than fp32."""
    flags = cpu_flags() if flags is None else flags
    if flags:
        return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _wants_cuda(accelerator: str) -> bool:
    return str(accelerator) in ("auto", "gpu", "cuda") and torch.cuda.is_available()


def resolve_precision(precision: Union[str, int], accelerator: str = "auto", *,
                      native_bf16: Optional[Callable[[], bool]] = None) -> PrecisionChoice:
    """The precision that will run for `trainer.precision` on `accelerator` (see the module doc).

    native_bf16: the CPU check (default `cpu_supports_bf16`); tests pass the other answer to exercise
    the branch this machine does not take."""
    requested = str(precision).strip().lower()
    if requested not in ALLOWED:
        raise ValueError(f"trainer.precision={precision!r}; allowed values: {', '.join(ALLOWED)}")
    device = "cuda" if _wants_cuda(accelerator) else "cpu"
    native = (native_bf16 or cpu_supports_bf16)() if device == "cpu" else torch.cuda.is_bf16_supported()
    if requested == "auto":
        if device == "cuda":
            name = "bf16-mixed" if native else "16-mixed"
            reason = f"auto: CUDA GPU {'with' if native else 'without'} bf16"
        else:
            name = "bf16-mixed" if native else "32-true"
            reason = f"auto: CPU {'with native bf16 (AVX-512 BF16/AMX)' if native else 'without native bf16'}"
    else:
        name = ALIASES[requested]
        reason = "as configured" if name == requested else f"alias {requested!r} of {name!r}"
        if device == "cpu" and name == "16-mixed":
            name, reason = "bf16-mixed", "16-mixed on a CPU runs as bf16 autocast (CPUs have no fp16 AMP)"
            log.warning("trainer.precision=%s: %s; recorded as bf16-mixed", precision, reason)
    emulated = device == "cpu" and name.startswith("bf16") and not native
    return PrecisionChoice(requested=requested, name=name, device=device, reason=reason, emulated=emulated)


class ClippingMixedPrecision(MixedPrecision):
    """Lightning's autocast plugin with gradient clipping allowed for fused optimizers.

    bf16: no scaler, so the parent's optimizer_step already clips true gradients; only its refusal in
    clip_gradients is lifted. fp16: the GradScaler unscales every optimizer's gradients (fused or not)
    before the clipping hook; GradScaler.step then tells a fused optimizer they are unscaled."""

    def optimizer_step(self, optimizer: Any, model: Any, closure: Callable[[], Any], **kwargs: Any) -> Any:
        if self.scaler is None:
            return super().optimizer_step(optimizer, model=model, closure=closure, **kwargs)
        closure_result = closure()
        skip = closure_result is None and model.automatic_optimization  # backward skipped: nothing to step
        if not skip:
            self.scaler.unscale_(optimizer)
        self._after_closure(model, optimizer)  # on_before_optimizer_step + gradient clipping
        if skip:
            return closure_result
        step_output = self.scaler.step(optimizer, **kwargs)  # skips the step on inf/nan gradients
        self.scaler.update()
        return step_output

    def clip_gradients(self, optimizer: Optimizer, clip_val: Union[int, float] = 0.0,
                       gradient_clip_algorithm: Any = None) -> None:
        kwargs = {} if gradient_clip_algorithm is None else {"gradient_clip_algorithm": gradient_clip_algorithm}
        Precision.clip_gradients(self, optimizer, clip_val=clip_val, **kwargs)


def build_precision_plugin(choice: PrecisionChoice, strategy: str = "auto") -> Optional[Precision]:
    """The plugin for `choice` where lmbench supplies one (autocast on single-device and DDP strategies);
    None: pass `choice.name` to the Trainer (fp32, true-half, or a sharded strategy with its own plugin)."""
    if not choice.mixed or any(str(strategy).startswith(s) for s in ("fsdp", "deepspeed")):
        return None
    return ClippingMixedPrecision(choice.name, device=choice.device)  # type: ignore[arg-type]


def describe_hardware(device: str = "cpu") -> dict[str, Any]:
    """What a run or benchmark ran on: CPU model, cores, torch threads and the bf16/AMX flags; the GPU
    name and capability when `device` is cuda."""
    flags = cpu_flags()
    info: dict[str, Any] = {
        "cpu": _cpu_model(), "machine": platform.machine(), "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_bf16_flags": sorted(f for f in CPU_BF16_FLAGS if f in flags),
        "cpu_native_bf16": cpu_supports_bf16(flags), "torch": torch.__version__,
    }
    if device == "cuda" and torch.cuda.is_available():
        index = torch.cuda.current_device()
        info.update(gpu=torch.cuda.get_device_name(index), gpu_count=torch.cuda.device_count(),
                    gpu_capability=".".join(map(str, torch.cuda.get_device_capability(index))),
                    gpu_bf16=torch.cuda.is_bf16_supported(), cuda=torch.version.cuda)
    return info


def hardware_line(info: dict[str, Any]) -> str:
    """One human line of `describe_hardware`'s dict."""
    bf16 = "native bf16 (" + ", ".join(info["cpu_bf16_flags"]) + ")" if info["cpu_native_bf16"] else \
        "no native bf16 (bf16 is emulated)"
    line = f"{info['cpu']} ({info['cpu_count']} cores, {info['torch_threads']} torch threads), {bf16}"
    if info.get("gpu"):
        line += f"; GPU {info['gpu']} x{info['gpu_count']} (sm {info['gpu_capability']}, CUDA {info['cuda']})"
    return line


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"
