"""A LoRA run's adapter merged into its base model: one transformers directory to serve (vLLM, TGI).

`final/` of a LoRA run holds only the adapter (peft). Serving stacks want plain weights, so this loads the
base model on the CPU, applies the adapter, folds it into the base weights (peft merge_and_unload) and
writes `final-merged/` with safetensors and the tokenizer; loading it needs transformers, not peft.
The adapter in `final/` is already gathered from every rank (ZeRO-3 included), so the merge runs in one
process: at the end of training on rank 0 (method.lora.merge_on_export) or later via `llmlaunch export`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from trainer.config.train_config import ConfigError, TrainConfig

log = logging.getLogger("llmlaunch.trainer")

MERGED_DIR = "final-merged"


def base_model_path(cfg: TrainConfig, adapter: Path, override: str | None = None) -> str:
    """The base weights the adapter was trained on: --base, else the job's model.pretrained."""
    if cfg.method.kind != "lora":
        raise ConfigError([f"{adapter}: method.kind is {cfg.method.kind}, not lora: there is no adapter to merge"])
    if override:
        return override
    if cfg.model.pretrained is None:
        # A base built from model.config was never saved; its random init cannot be re-created faithfully
        # under ZeRO-3 (weights are initialised partitioned), so refuse instead of merging into other weights.
        raise ConfigError([f"{adapter}: the run built its base from model.config, which is never saved: "
                           "pass the base weights with --base"])
    return cfg.model.pretrained


def merge_adapter(adapter: Path, base: str, out: Path, trust_remote_code: bool = False) -> Path:
    """Write base + adapter merged to `out` (atomically: a crash leaves no half-written directory)."""
    import torch
    from peft import PeftModel
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if not (adapter / "adapter_config.json").is_file():
        raise ConfigError([f"{adapter}: no adapter_config.json (not a LoRA adapter directory)"])
    if json.loads((adapter / "adapter_config.json").read_text()).get("peft_type") != "LORA":
        raise ConfigError([f"{adapter}: only LoRA adapters can be merged into the base weights"])
    # A ZeRO-3 trainer process registered its DeepSpeed config with transformers, which would then load
    # the base partitioned (a collective the other ranks never join): this merge is one process's work.
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()
    # fp32 for the arithmetic (W + B·A·scale), then back to the base's own dtype for serving.
    saved_dtype = getattr(AutoConfig.from_pretrained(base, trust_remote_code=trust_remote_code), "dtype", None)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32, trust_remote_code=trust_remote_code)
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    if isinstance(saved_dtype, torch.dtype) and saved_dtype != torch.float32:
        merged = merged.to(saved_dtype)
    merged.config.use_cache = True  # training turned the KV cache off; a served model wants it
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(str(tmp), safe_serialization=True)
    AutoTokenizer.from_pretrained(str(adapter)).save_pretrained(str(tmp))
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    log.info("merged %s into %s: %s", adapter, base, out)
    return out


def merge_run(run_dir: Path, base: str | None = None, out: Path | None = None,
              cfg: TrainConfig | None = None) -> Path:
    """Merge RUN_DIR/final into its base: --base, else the job's model.pretrained (the trainer passes its
    config; `llmlaunch export` reads RUN_DIR/train.yaml, which local runs write), else the base the
    adapter itself names (adapter_config.json: what a pod's run directory has to go on)."""
    from trainer.config.train_config import load_train_config

    run_dir = Path(run_dir)
    adapter = run_dir / "final"
    if not adapter.is_dir():
        raise ConfigError([f"{adapter}: missing (no finished run in {run_dir})"])
    if cfg is None and (run_dir / "train.yaml").is_file():
        cfg = load_train_config(run_dir / "train.yaml")
    if cfg is not None:
        base = base_model_path(cfg, adapter, base)
    elif base is None and (adapter / "adapter_config.json").is_file():
        base = json.loads((adapter / "adapter_config.json").read_text()).get("base_model_name_or_path")
    if not base:
        raise ConfigError([f"{run_dir}: no train.yaml and no base named in the adapter: pass --base"])
    trust = cfg.model.trust_remote_code if cfg is not None else False
    return merge_adapter(adapter, base, out or run_dir / MERGED_DIR, trust)
