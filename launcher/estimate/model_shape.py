"""A decoder's size from its config alone: parameter counts, the largest layer, what LoRA / prefix train.

Torch-free (the CLI must not import torch): the counts are arithmetic on a Llama-style config (llama,
mistral, qwen2/3, gemma, phi3, ...: gated MLP, grouped-query attention). For `model.pretrained` the
config.json is read from the directory, and when its safetensors headers are there too the total
parameter count is summed from them instead (exact for any architecture).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from launcher.errors import ConfigError
from trainer.config.train_config import TrainConfig
from trainer.storage.hub_cache import model_dir as local_model_dir  # standard library only: a hub id's cached snapshot

LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class ModelShape:
    vocab: int
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    tied: bool
    qkv_bias: bool
    total_params: int

    def linear_dims(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each projection of one layer."""
        h, q, kv, inter = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim, self.intermediate
        return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                "gate_proj": (h, inter), "up_proj": (h, inter), "down_proj": (inter, h)}

    @property
    def largest_layer(self) -> int:
        """Parameters of the largest single module (what ZeRO-3 gathers at once): embedding or a projection."""
        return max(self.vocab * self.hidden, *(i * o for i, o in self.linear_dims().values()))


def tied(c: dict[str, Any]) -> bool:
    """Input embedding shared with the LM head: transformers' default is per family (Gemma ties, Llama does not)."""
    return bool(c.get("tie_word_embeddings", str(c.get("model_type", "")).startswith("gemma")))


def arithmetic_params(c: dict[str, Any]) -> int:
    """Total parameters of a Llama-style decoder."""
    h, layers, vocab = c["hidden_size"], c["num_hidden_layers"], c["vocab_size"]
    heads = c["num_attention_heads"]
    head_dim = c.get("head_dim") or h // heads
    kv = c.get("num_key_value_heads") or heads
    q_out, kv_out = heads * head_dim, kv * head_dim
    attention = h * q_out * 2 + h * kv_out * 2
    if c.get("attention_bias") or c.get("model_type") == "qwen2":
        attention += q_out + 2 * kv_out + (h if c.get("attention_bias") else 0)
    mlp = 3 * h * c["intermediate_size"] + (2 * c["intermediate_size"] + h if c.get("mlp_bias") else 0)
    norms = 2 * h + (2 * head_dim if c.get("model_type") == "qwen3" else 0)
    head = 0 if tied(c) else vocab * h
    return vocab * h + layers * (attention + mlp + norms) + h + head


def safetensors_params(model_dir: Path) -> int | None:
    """Sum of every tensor's element count from the safetensors headers (8-byte length + JSON), if present."""
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for file in files:
        with file.open("rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(length))
        for name, entry in header.items():
            if name != "__metadata__":
                count = 1
                for dim in entry["shape"]:
                    count *= dim
                total += count
    return total


def model_config(cfg: TrainConfig) -> tuple[dict[str, Any], Path | None]:
    if cfg.model.config is not None:
        return dict(cfg.model.config), None

    model_dir = local_model_dir(cfg.model.pretrained)
    try:
        return json.loads((model_dir / "config.json").read_text()), model_dir
    except (OSError, ValueError) as e:
        raise ConfigError(
            [
                f"train.model.pretrained: cannot read {model_dir / 'config.json'} to size the model "
                f"({getattr(e, 'strerror', None) or e}); the estimate needs the model directory here (or a hub id "
                f"in the Hugging Face cache)"
            ]
        ) from e


def shape_of(cfg: TrainConfig) -> ModelShape:
    c, model_dir = model_config(cfg)
    c = c.get("text_config", c) if "hidden_size" not in c else c  # multimodal wrappers keep the LM inside
    missing = [k for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                           "num_attention_heads") if not isinstance(c.get(k), int)]
    if missing:
        raise ConfigError([f"train.model: the config has no {missing[0]}; the estimate counts Llama-style "
                           f"decoders (model_type {c.get('model_type')!r})"])
    heads = c["num_attention_heads"]
    total = (safetensors_params(model_dir) if model_dir else None) or arithmetic_params(c)
    return ModelShape(
        vocab=c["vocab_size"], hidden=c["hidden_size"], intermediate=c["intermediate_size"],
        layers=c["num_hidden_layers"], heads=heads, kv_heads=c.get("num_key_value_heads") or heads,
        head_dim=c.get("head_dim") or c["hidden_size"] // heads, tied=tied(c),
        qkv_bias=bool(c.get("attention_bias")), total_params=total,
    )


def trainable_params(cfg: TrainConfig, shape: ModelShape) -> int:
    """What the optimizer updates: everything, LoRA's A and B matrices, or prefix tuning's virtual tokens."""
    method = cfg.method
    if method.kind == "full":
        return shape.total_params
    if method.kind == "lora":
        targets = LINEAR if method.lora.target_modules == "all-linear" else method.lora.target_modules
        dims = shape.linear_dims()
        per_layer = sum(method.lora.r * (dims[t][0] + dims[t][1]) for t in targets if t in dims)
        return shape.layers * per_layer
    prefix = method.prefix
    kv = shape.layers * 2 * shape.kv_heads * shape.head_dim
    if not prefix.prefix_projection:
        return prefix.num_virtual_tokens * kv
    inner = prefix.encoder_hidden_size or shape.hidden
    return prefix.num_virtual_tokens * shape.hidden + shape.hidden * inner + inner + inner * kv + kv
