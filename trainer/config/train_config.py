"""TrainConfig: the typed contract between the job file, the launcher and the pods.

Torch-free on purpose: the CLI imports this module to validate job files and must start fast.
Every model refuses unknown keys, so a typo in a job file is an error, not a silent default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    Field,
    PlainValidator,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from trainer import yaml_io
from trainer.config.data_section import DataConfig
from trainer.config.section import PathText, Section, describe_validation_error
from trainer.config.tracking_section import TrackingConfig
from trainer.errors import ConfigError

PRESETS = ("zero0", "zero1", "zero2", "zero3", "zero3-offload")


class ModelConfig(Section):
    """Which causal LM to train: a pretrained HF model, or a fresh one built from an architecture config."""

    pretrained: PathText | None = Field(
        None, description="HF model directory or hub id to fine-tune. Leave empty to pre-train from `config`."
    )
    config: dict[str, Any] | None = Field(
        None,
        description="Architecture for random init, as for transformers.AutoConfig.for_model "
        "(must contain model_type, e.g. llama).",
    )
    tokenizer: PathText | None = Field(
        None, description="Tokenizer directory or tokenizer.json file; defaults to the pretrained model's."
    )
    gradient_checkpointing: bool = Field(False, description="Recompute activations in backward to save memory.")
    attn_implementation: Literal["sdpa", "eager", "flex_attention", "flash_attention_2"] = Field(
        "sdpa", description="Attention kernel passed to transformers. With packing: sdpa gets a block mask built on "
        "the device; flex_attention a block-sparse mask that skips other documents and the upper triangle; "
        "flash_attention_2 splits documents at position resets and needs run.micro_batch_size 1.",
    )
    trust_remote_code: bool = Field(False, description="Allow model code from the hub (off by default).")
    compile: bool = Field(
        False, description="torch.compile the model (through DeepSpeed's engine.compile; inductor backend). The "
        "first steps are slow while it compiles; with packing off each new batch width may compile again.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> ModelConfig:
        if (self.pretrained is None) == (self.config is None):
            raise ValueError("set exactly one of model.pretrained or model.config")
        if self.config is not None and "model_type" not in self.config:
            raise ValueError("model.config needs a model_type (e.g. llama)")
        if self.pretrained is None and self.tokenizer is None:
            raise ValueError("model.tokenizer is required when pre-training from model.config")
        return self

    def max_positions(self) -> int | None:
        """The model's context limit, read without importing transformers (None when unknown)."""
        if self.config is not None:
            limit = self.config.get("max_position_embeddings")
            if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool)):
                raise ValueError(f"model.config.max_position_embeddings must be an integer (got {limit!r})")
            return limit
        from trainer.storage.hub_cache import model_dir

        cfg = model_dir(self.pretrained) / "config.json"  # a hub id: its snapshot in the HF cache, if there
        if cfg.is_file():
            import json

            try:
                limit = json.loads(cfg.read_text()).get("max_position_embeddings")
            except (OSError, ValueError, AttributeError):  # unreadable: loading the model will say why
                return None
            return limit if isinstance(limit, int) else None
        return None


def _target_modules(value: Any) -> list[str] | str:
    if value == "all-linear" or (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        return list(value) if isinstance(value, list) else value
    raise ValueError("must be a list of module names or all-linear")


# One check and one message for both forms (a plain union reports each member's error on a line of its own).
TargetModules = Annotated[list[str] | Literal["all-linear"], PlainValidator(_target_modules), WithJsonSchema(
    {"anyOf": [{"items": {"type": "string"}, "type": "array"}, {"const": "all-linear", "type": "string"}]})]


class LoraConfig(Section):
    r: int = Field(8, ge=1, description="Rank of the update matrices.")
    alpha: int = Field(16, ge=1, description="Scaling numerator (scale = alpha / r).")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the LoRA input.")
    target_modules: TargetModules = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
        description="Module names to adapt, or all-linear.",
    )
    merge_on_export: bool = Field(
        False, description="At the end also write <output_dir>/final-merged: the adapter merged into the base "
        "weights (safetensors + tokenizer, loadable without peft; for vLLM / TGI). Needs model.pretrained.",
    )


class PrefixConfig(Section):
    num_virtual_tokens: int = Field(16, ge=1, description="Number of learned prefix tokens per layer.")
    prefix_projection: bool = Field(False, description="Reparametrize the prefix through an MLP.")
    encoder_hidden_size: int | None = Field(None, description="Hidden size of that MLP (defaults to the model's).")


class MethodConfig(Section):
    """Full fine-tuning or a parameter-efficient method (through peft)."""

    kind: Literal["full", "lora", "prefix"] = Field("full", description="full | lora | prefix")
    lora: LoraConfig = Field(default_factory=LoraConfig)
    prefix: PrefixConfig = Field(default_factory=PrefixConfig)


class OptimConfig(Section):
    """AdamW, as DeepSpeed runs it."""

    lr: float = Field(3e-4, gt=0, description="Peak learning rate.")
    weight_decay: float = Field(0.1, ge=0, description="Decoupled weight decay (not applied to biases and norms).")
    betas: tuple[float, float] = Field((0.9, 0.95), description="Adam betas.")
    eps: float = Field(1e-8, gt=0, description="Adam epsilon.")
    grad_clip: float = Field(1.0, ge=0, description="Clip the global gradient norm to this (0 = off).")


class ScheduleConfig(Section):
    """Learning rate over steps."""

    kind: Literal["cosine", "linear", "constant"] = Field("cosine", description="Decay after warm-up.")
    warmup_steps: int = Field(0, ge=0, description="Linear warm-up from 0 to optim.lr.")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="Floor of the decay, as a fraction of optim.lr.")


class EarlyStopping(Section):
    patience: int = Field(0, ge=0, description="Evals without improvement before stopping (0 = off).")
    min_delta: float = Field(0.0, ge=0, description="Improvement smaller than this does not count.")


class RunConfig(Section):
    """Length, batch, cadence and where the outputs go."""

    output_dir: PathText = Field("runs/default", description="Checkpoints, final model, metrics.jsonl.")
    max_steps: int | None = Field(None, ge=1, description="Optimizer steps to train (wins over epochs).")
    epochs: float | None = Field(None, gt=0, description="Passes over the training data.")
    micro_batch_size: int = Field(8, ge=1, description="Sequences per device per forward pass.")
    grad_accum: int = Field(1, ge=1, description="Micro batches accumulated per optimizer step.")
    global_batch_size: int | None = Field(
        None, ge=1, description="Sequences per optimizer step; if set it must equal micro x accum x world size."
    )
    eval_every: int = Field(0, ge=0, description="Evaluate every N steps (0 = only at the end).")
    eval_batches: int | None = Field(None, ge=1, description="Cap on eval batches per rank (None = all).")
    save_every: int = Field(0, ge=0, description="Checkpoint every N steps (0 = only at the end).")
    keep_last: int = Field(2, ge=1, description="Checkpoints kept besides the best.")
    max_failed_saves: int = Field(
        3, ge=1, description="Consecutive failed checkpoint saves (full or lost volume) before the run fails; "
        "a failed save is logged, counted as llmlaunch_checkpoints_total{result=\"failed\"} and training goes on.",
    )
    early_stopping: EarlyStopping = Field(default_factory=EarlyStopping)
    log_every: int = Field(10, ge=1, description="Log metrics every N steps (each log synchronises the device).")
    seed: int = Field(1234, description="Seeds init, data order and dropout.")
    checkpoint_mirror: PathText | None = Field(
        None, description="s3://bucket[/prefix]: rank 0 uploads each complete checkpoint there (pruned like the local "
        "ones); a start that finds no local checkpoint resumes from the newest complete one there. Credentials from "
        "the environment (cluster.secrets), never the job file.",
    )
    resume: bool = Field(True, description="Resume from the latest complete checkpoint in output_dir.")
    max_restarts: int = Field(
        3, ge=0, description="Times the group is restarted after a rank or node dies (torchrun --max-restarts; "
        "a local run also restarts a dead node this often); each restart resumes from the latest checkpoint.",
    )
    hang_timeout_s: int = Field(
        1800, ge=0, description="Fail when no step, eval or checkpoint finishes for this long, naming the rank "
        "that holds the others up (0 = never). Keep it above the slowest of the three.",
    )

    @field_validator("checkpoint_mirror")
    @classmethod
    def _mirror_url(cls, value: str | None) -> str | None:
        if value is not None:
            from trainer.config.remote_urls import check_mirror_url

            check_mirror_url(value)
        return value

    @model_validator(mode="after")
    def _length(self) -> RunConfig:
        if self.max_steps is None and self.epochs is None:
            raise ValueError("set run.max_steps or run.epochs")
        return self


class DeepSpeedConfig(Section):
    preset: str = Field("zero2", description=f"One of {', '.join(PRESETS)} (see ds_configs/README.md).")
    overrides: dict[str, Any] = Field(
        default_factory=dict, description="Merged over the preset (nested keys merge, values replace)."
    )

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, preset: str) -> str:
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        return preset


class MetricsConfig(Section):
    enabled: bool = Field(True, description="Serve Prometheus metrics from local rank 0 of every node.")
    port: int = Field(9400, ge=1, le=65535, description="Port of /metrics (the container port named metrics).")
    peak_tflops: float | None = Field(
        None, gt=0, description="Peak dense TFLOP/s of one device for MFU; default from the device table."
    )


class TrainConfig(Section):
    """Everything a pod needs to train: the `train` section of a job file, shipped as train.yaml."""

    model: ModelConfig
    data: DataConfig
    method: MethodConfig = Field(default_factory=MethodConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    run: RunConfig
    deepspeed: DeepSpeedConfig = Field(default_factory=DeepSpeedConfig)
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto", description="auto: bf16 on GPUs with it, fp16 on older GPUs, fp32 on CPU."
    )
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    @model_validator(mode="after")
    def _cross_checks(self) -> TrainConfig:
        limit = self.model.max_positions()
        if limit is not None and self.data.seq_len > limit:
            raise ValueError(
                f"data.seq_len {self.data.seq_len} is above the model's limit "
                f"(max_position_embeddings {limit})"
            )
        packed = self.data.packing and self.method.kind != "prefix"  # prefix tuning turns packing off
        if packed and self.model.attn_implementation == "flash_attention_2" and self.run.micro_batch_size > 1:
            # transformers finds packed documents from position ids only in a batch of one row; with more
            # rows flash_attention_2 would let a row's documents attend to each other.
            raise ValueError(
                f"model.attn_implementation flash_attention_2 with data.packing needs run.micro_batch_size 1 "
                f"(got {self.run.micro_batch_size}); use flex_attention or sdpa, or grad_accum for a larger batch"
            )
        if self.method.kind == "prefix" and self.model.gradient_checkpointing:
            raise ValueError("model.gradient_checkpointing does not work with method.kind prefix (peft)")
        if self.method.kind == "lora" and self.method.lora.merge_on_export and self.model.pretrained is None:
            raise ValueError("method.lora.merge_on_export needs model.pretrained (a base built from model.config "
                             "is never saved, so there are no base weights to merge the adapter into)")
        return self

    def global_batch(self, world_size: int) -> int:
        return self.run.micro_batch_size * self.run.grad_accum * world_size

    def check_world_size(self, world_size: int) -> None:
        """The batch must split evenly over the processes that will train it."""
        want = self.run.global_batch_size
        if want is not None and want != self.global_batch(world_size):
            per_rank = self.run.micro_batch_size * self.run.grad_accum
            raise ValueError(
                f"run.global_batch_size {want} does not divide into {world_size} processes x "
                f"micro_batch_size {self.run.micro_batch_size} x grad_accum {self.run.grad_accum} "
                f"(= {per_rank * world_size})"
            )

    def to_yaml(self) -> str:
        return yaml_io.dump(self.model_dump(mode="json"), sort_keys=False)

    @classmethod
    def from_yaml_file(cls, path: str | Path) -> TrainConfig:
        return cls.model_validate(yaml_io.load(Path(path).read_text()))


def load_train_config(path: str | Path) -> TrainConfig:
    """Read and validate a train.yaml; raises ConfigError with one line per problem."""
    from pydantic import ValidationError

    try:
        data = yaml_io.load(Path(path).read_text())
    except OSError as e:
        raise ConfigError([f"{path}: cannot read ({e.strerror})"]) from e
    except UnicodeDecodeError as e:
        raise ConfigError([f"{path}: not UTF-8 text (byte {e.start})"]) from e
    except yaml.YAMLError as e:
        raise ConfigError([f"{path}: not valid YAML ({str(e).splitlines()[0]})"]) from e
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(describe_validation_error(e)) from e
