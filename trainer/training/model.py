"""The causal LM: built from a config or loaded pretrained, then wrapped by peft for LoRA / prefix tuning."""

from __future__ import annotations

import logging
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel

from trainer.config.train_config import TrainConfig

log = logging.getLogger("llmlaunch.trainer")


def hf_config(cfg: TrainConfig):
    """The transformers config of the model, without building it (for FLOP counts)."""
    if cfg.model.config is not None:
        arch = dict(cfg.model.config)
        return AutoConfig.for_model(arch.pop("model_type"), **arch)
    return AutoConfig.from_pretrained(cfg.model.pretrained, trust_remote_code=cfg.model.trust_remote_code)


def build_model(cfg: TrainConfig, ds_config: dict[str, Any]) -> torch.nn.Module:
    """Create the model on every rank with the same weights.

    Under ZeRO-3 transformers builds it inside deepspeed.zero.Init (parameters are partitioned as they
    are created), which needs the HfDeepSpeedConfig object to be alive while the model is built.
    """
    keep_alive = None
    if ds_config.get("zero_optimization", {}).get("stage") == 3:
        from transformers.integrations import HfDeepSpeedConfig

        keep_alive = HfDeepSpeedConfig(ds_config)  # noqa: F841 (weakly referenced by transformers)
    kwargs = {"attn_implementation": cfg.model.attn_implementation}
    # Seeded before anything random is created: a config-built model's weights and peft's adapter
    # (LoRA A matrices, prefix embeddings) come out the same on every rank and in every run.
    torch.manual_seed(cfg.run.seed)
    if cfg.model.config is not None:
        model = AutoModelForCausalLM.from_config(hf_config(cfg), **kwargs)
    else:
        model = AutoModelForCausalLM.from_pretrained(
            cfg.model.pretrained, dtype=torch.float32, trust_remote_code=cfg.model.trust_remote_code, **kwargs
        )
    model.config.use_cache = False
    if cfg.model.gradient_checkpointing:
        # Non-reentrant checkpointing works with frozen base weights (LoRA) without input-grad hacks.
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model = apply_method(model, cfg)
    # from_pretrained returns a model in eval mode: without this, gradient checkpointing, LoRA and
    # attention dropout stay off until the first eval switches them on.
    model.train()
    model._llmlaunch_ds_config_ref = keep_alive
    return model


def apply_method(model: PreTrainedModel, cfg: TrainConfig) -> torch.nn.Module:
    method = cfg.method
    if method.kind == "full":
        return model
    from peft import LoraConfig, PrefixTuningConfig, TaskType, get_peft_model

    if method.kind == "lora":
        peft_cfg = LoraConfig(
            task_type=TaskType.CAUSAL_LM,
            r=method.lora.r,
            lora_alpha=method.lora.alpha,
            lora_dropout=method.lora.dropout,
            target_modules=method.lora.target_modules,
        )
    else:
        peft_cfg = PrefixTuningConfig(
            task_type=TaskType.CAUSAL_LM,
            num_virtual_tokens=method.prefix.num_virtual_tokens,
            prefix_projection=method.prefix.prefix_projection,
            encoder_hidden_size=method.prefix.encoder_hidden_size or model.config.hidden_size,
        )
    model = get_peft_model(model, peft_cfg)
    trainable, total = count_parameters(model)
    log.info("peft %s: %s trainable of %s parameters (%.2f%%)", method.kind, f"{trainable:,}", f"{total:,}",
             100 * trainable / max(total, 1))
    return model


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total); ZeRO-3 partitioned parameters report their full size in ds_numel."""
    trainable = total = 0
    for p in model.parameters():
        n = getattr(p, "ds_numel", p.numel())
        total += n
        trainable += n if p.requires_grad else 0
    return trainable, total


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: no weight decay on biases, norms and embeddings' 1-D parameters."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        ndim = len(getattr(p, "ds_shape", p.shape))  # ZeRO-3 partitions keep their real shape here
        (no_decay if ndim < 2 or "norm" in name.lower() else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
