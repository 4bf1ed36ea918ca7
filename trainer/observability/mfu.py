"""Model FLOPs utilization: FLOPs per token from a model's config, peak FLOP/s from a device table.

MFU = achieved tokens/s x model FLOPs per token / (peak FLOP/s of one device x devices), the
PaLM-paper convention (also nanoGPT's and torchtitan's): model FLOPs per token = 6 N + 12 L H Q T,
where N counts the weights of every matrix multiply (attention, MLP and the LM head; the input
embedding is a lookup, norms and biases are negligible), L layers, H heads of size Q, T the length a
token attends over. So that MFU does not flatter:
- T is sum L_i^2 / sum L_i over the documents (the data's attention_length), not seq_len: a token of a packed
  document attends only within it, so a row of short documents does far less attention work.
- With frozen base weights (LoRA, prefix) the 2 N weight-gradient FLOPs of those weights are not work
  the step needs: 4 N + 6 A, A the adapter's matmul weights.
Recomputation (gradient checkpointing) is not credited: MFU measures useful model work.

Torch-free: works on a transformers config object or its plain dict (config.json).
"""

from __future__ import annotations

import re
from typing import Any

# Families whose MLP is up -> act -> down (2 matrices). Every other decoder (llama, mistral,
# qwen2/3, gemma, phi3, olmo, mixtral, ...) uses a gated MLP: gate, up, down (3 matrices).
NON_GATED_MLP = {"gpt2", "gpt_neox", "gptj", "gpt_bigcode", "opt", "bloom", "falcon", "phi", "codegen", "starcoder2"}

_ALIASES = {
    "hidden_size": ("hidden_size", "n_embd", "d_model"),
    "layers": ("num_hidden_layers", "n_layer", "num_layers"),
    "heads": ("num_attention_heads", "n_head"),
}


def _get(cfg: Any, key: str, default: Any = None) -> Any:
    if isinstance(cfg, dict):
        return cfg.get(key, default)
    return getattr(cfg, key, default)


def _first(cfg: Any, what: str) -> int:
    for key in _ALIASES[what]:
        value = _get(cfg, key)
        if value is not None:
            return int(value)
    raise ValueError(f"model config has no {what} (looked for {', '.join(_ALIASES[what])})")


def matmul_params(cfg: Any) -> int:
    """Weights of every matrix multiply a token goes through (N in 6N), from a HF config."""
    h = _first(cfg, "hidden_size")
    layers = _first(cfg, "layers")
    heads = _first(cfg, "heads")
    head_dim = int(_get(cfg, "head_dim") or h // heads)
    kv_heads = int(_get(cfg, "num_key_value_heads") or heads)
    if _get(cfg, "multi_query"):  # falcon / gpt_bigcode multi-query attention: one k/v head
        kv_heads = 1
    vocab = int(_get(cfg, "vocab_size"))
    model_type = _get(cfg, "model_type", "")

    attention = h * heads * head_dim * 2 + h * kv_heads * head_dim * 2  # q, o + k, v
    experts = int(_get(cfg, "num_experts_per_tok") or 1)  # MoE: only the routed experts do work
    inner = _get(cfg, "moe_intermediate_size") if experts > 1 else None
    inner = int(inner or _get(cfg, "intermediate_size") or _get(cfg, "n_inner") or _get(cfg, "ffn_dim") or 4 * h)
    mlp_matrices = 2 if model_type in NON_GATED_MLP else 3
    mlp = mlp_matrices * h * inner * experts
    router = h * int(_get(cfg, "num_local_experts") or _get(cfg, "num_experts") or 0) if experts > 1 else 0
    lm_head = h * vocab  # tied or not, the output projection is a matmul per token
    return layers * (attention + mlp + router) + lm_head


def flops_per_token(cfg: Any, attention_len: float, *, frozen_base: bool = False, adapter_params: int = 0) -> float:
    """Training FLOPs per token (forward + backward): 6 N + 12 L H Q T, T = attention_len.

    frozen_base: the base weights get no gradient (LoRA / prefix): forward 2 N and input gradients 2 N
    only, plus 6 x adapter_params (the trainable matmul weights, e.g. LoRA's A and B)."""
    layers = _first(cfg, "layers")
    heads = _first(cfg, "heads")
    head_dim = int(_get(cfg, "head_dim") or _first(cfg, "hidden_size") // heads)
    n = matmul_params(cfg)
    weights = 4 * n + 6 * adapter_params if frozen_base else 6 * n
    return float(weights + 12 * layers * heads * head_dim * attention_len)


# Dense (no sparsity) peak FLOP/s of one device from NVIDIA's datasheets, per training dtype.
# fp32 is the plain FP32 rate: PyTorch keeps TF32 matmuls off unless asked. Order matters: the
# first pattern that matches the CUDA device name wins (H100 PCIe before H100, L40S before L4).
_TFLOPS: list[tuple[str, dict[str, float]]] = [
    (r"GH200", {"bf16": 989.4, "fp16": 989.4, "fp32": 66.9}),
    (r"H200 NVL", {"bf16": 835.5, "fp16": 835.5, "fp32": 60.0}),
    (r"H200", {"bf16": 989.4, "fp16": 989.4, "fp32": 66.9}),
    (r"H100 NVL", {"bf16": 835.5, "fp16": 835.5, "fp32": 60.0}),
    (r"H100 PCIe", {"bf16": 756.5, "fp16": 756.5, "fp32": 51.2}),
    (r"H100", {"bf16": 989.4, "fp16": 989.4, "fp32": 66.9}),  # SXM5: "NVIDIA H100 80GB HBM3"
    (r"A100", {"bf16": 312.0, "fp16": 312.0, "fp32": 19.5}),
    (r"L40S", {"bf16": 362.05, "fp16": 362.05, "fp32": 91.6}),
    (r"L40\b", {"bf16": 181.05, "fp16": 181.05, "fp32": 90.5}),
    (r"L4\b", {"bf16": 121.0, "fp16": 121.0, "fp32": 30.3}),
    (r"A10\b", {"bf16": 125.0, "fp16": 125.0, "fp32": 31.2}),
    (r"V100S", {"fp16": 130.0, "fp32": 16.4}),
    (r"V100.*PCIE", {"fp16": 112.0, "fp32": 14.0}),
    (r"V100", {"fp16": 125.0, "fp32": 15.7}),
    (r"T4\b", {"fp16": 65.0, "fp32": 8.1}),
]


def peak_flops(device_name: str, dtype: str) -> float | None:
    """Peak dense FLOP/s of one device for `dtype` (bf16 | fp16 | fp32); None when not in the table.

    `device_name` is what torch.cuda.get_device_name() returns, e.g. "NVIDIA H100 80GB HBM3".
    None also for a dtype the device cannot run on tensor cores (bf16 on V100/T4) and for CPUs:
    set train.metrics.peak_tflops to get MFU there.
    """
    if dtype not in ("bf16", "fp16", "fp32"):
        raise ValueError(f"dtype must be bf16, fp16 or fp32 (got {dtype!r})")
    for pattern, table in _TFLOPS:
        if re.search(pattern, device_name, flags=re.IGNORECASE):
            tflops = table.get(dtype)
            return None if tflops is None else tflops * 1e12
    return None


def mfu(tokens_per_second: float, flops_per_token: float, peak_flops_per_device: float, devices: int) -> float:
    """Fraction (0..1) of the devices' peak that the model's useful FLOPs reach."""
    return tokens_per_second * flops_per_token / (peak_flops_per_device * devices)
