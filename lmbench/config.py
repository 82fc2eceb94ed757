"""Typed schemas of every Hydra config group, registered in the ConfigStore.

Hydra validates composed configs against these dataclasses, so a typo in a key, a wrong type or an
unknown option stops the run at start with Hydra's message, before any data is read or model built.
Objective schemas are not here: each plugin brings its own dataclass (see `register_configs`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig

from lmbench.budget.plan import BudgetConfig
from lmbench.loggers import LoggerConfig
from lmbench.objectives.registry import ObjectiveRegistry
from lmbench.tasks.config import TaskConfig


@dataclass
class BackboneConfig:
    """Which model the objective trains.

    kind:   encoder | decoder | encoder-decoder | auto (auto = the objective's first supported kind).
    size:   tiny | small | base: presets that match width, depth and heads across kinds.
    family: auto | bert | roberta | gpt2 | llama | t5 | bart (auto = bert / gpt2 / t5 for the kind).
    pretrained: a local transformers model directory to start from instead of a preset.
    model_class: any transformers LM class of the kind (e.g. DistilBertForMaskedLM, OPTForCausalLM) built
        from its config class at the preset size, instead of a family.
    config_overrides: extra keyword arguments for the transformers config class.
    """

    kind: str = "auto"
    size: str = "tiny"
    family: str = "auto"
    pretrained: Optional[str] = None
    model_class: Optional[str] = None
    attn_implementation: str = "sdpa"
    config_overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class TokenizerConfig:
    """The one tokenizer shared by every objective in a comparison.

    type: wordpiece | bpe | unigram (trained locally with `tokenizers` on the pretraining corpus).
    path: a local tokenizer directory to use instead of training one.
    extra_special_tokens: special tokens after the fixed seven (ids 7..); by default UL2's paradigm
        tokens, so every objective of a sweep, UL2 included, shares one tokenizer.
    """

    type: str = "wordpiece"
    vocab_size: int = 4096
    min_frequency: int = 2
    path: Optional[str] = None
    extra_special_tokens: list[str] = field(default_factory=lambda: ["[NLU]", "[NLG]", "[S2S]"])


@dataclass
class DataConfig:
    """Where pretraining text comes from and how it is cut into blocks.

    source: builtin | text | hf.  builtin = the generated corpus (size in documents, seed);
    text = a local file or folder of .txt files (`path`); hf = a Hugging Face dataset (`hf_name`, ...).
    """

    source: str = "builtin"
    path: Optional[str] = None
    builtin_documents: int = 4000
    builtin_seed: int = 0
    hf_name: Optional[str] = None
    hf_config: Optional[str] = None
    hf_split: str = "train"
    hf_text_column: str = "text"
    seq_len: int = 128
    val_fraction: float = 0.05
    batch_size: int = 32
    num_workers: int = 0
    cache_dir: str = "${oc.env:LMBENCH_CACHE,${oc.env:HOME,.}/.cache/lmbench}"
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)


@dataclass
class OptimConfig:
    """AdamW with warmup then linear or cosine decay (or constant)."""

    lr: float = 1e-3
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-8
    warmup_fraction: float = 0.06
    schedule: str = "linear"


@dataclass
class TrainerConfig:
    """Lightning Trainer settings.

    max_steps / max_tokens: aliases of `budget=steps` / `budget=tokens`; when not null they override the
        budget group (max_tokens first). `trainer=smoke` sets max_steps: 4.

    checkpoint_every_n_steps: steps between checkpoints (null: val_check_interval); each is written
        atomically with a manifest, the newest `keep_checkpoints` are kept, `last.ckpt` links the newest.
    nonfinite: fail | skip. fail stops at the first non-finite training loss (naming the step) without
        writing a checkpoint from that state; skip leaves weights and optimizer state unchanged for such a
        step and fails after `max_consecutive_skips` of them in a row.
    """

    max_steps: Optional[int] = None  # alias: overrides the budget group when set
    max_tokens: Optional[int] = None  # alias: overrides the budget group (and max_steps) when set
    precision: str = "auto"
    accelerator: str = "auto"
    devices: Any = 1
    strategy: str = "auto"
    gradient_clip_val: Optional[float] = 1.0
    accumulate_grad_batches: int = 1
    val_check_interval: int = 100
    limit_val_batches: int = 20
    log_every_n_steps: int = 10
    checkpoint: bool = True
    checkpoint_every_n_steps: Optional[int] = None  # null: every val_check_interval steps
    keep_checkpoints: int = 2  # newest step checkpoints kept (plus the last.ckpt link)
    nonfinite: str = "fail"  # fail | skip: what a non-finite training loss does
    max_consecutive_skips: int = 10  # with nonfinite=skip, fail once this many steps in a row were skipped
    progress_bar: bool = True
    optim: OptimConfig = field(default_factory=OptimConfig)


@dataclass
class LmbenchConfig:
    """The root schema; `conf/config.yaml` picks one option per group on top of it."""

    objective: Any = MISSING
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    task: dict[str, TaskConfig] = field(default_factory=dict)  # downstream tasks by name (conf/task/*.yaml)
    seed: int = 0
    save_model: bool = True
    audit_batches: int = 64
    output_dir: str = "${hydra:runtime.output_dir}"
    resume: Optional[str] = None  # null | auto | <checkpoint file or run directory>
    min_free_disk_mb: int = 100  # refuse to start with less free space in output_dir (0: no check)


def compose_config(overrides: Sequence[str] = ()) -> DictConfig:
    """Compose lmbench's config in-process as `lmbench OVERRIDES` would (notebooks, tools, tests).

    `output_dir` interpolates Hydra's run dir, which only exists under the CLI: set `output_dir=...`.
    """
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from lmbench.objectives.registry import default_registry
    from lmbench.tasks.config import check_task_overrides

    register_configs(default_registry())
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="lmbench_conf", version_base="1.3"):
        # an unknown task name fails naming the allowed ones (Hydra lists none for a list of options)
        check_task_overrides(overrides, GlobalHydra.instance().config_loader().get_group_options("task"))
        return compose(config_name="config", overrides=list(overrides))


def register_configs(registry: ObjectiveRegistry) -> None:
    """Store the root schema and one `objective/<name>` node per discovered (loadable) objective."""
    cs = ConfigStore.instance()
    cs.store(name="lmbench_schema", node=LmbenchConfig)
    for record in registry.records():
        if record.ok and record.cls is not None:
            cs.store(group="objective", name=record.name, node=record.cls.config_class(name=record.name))
