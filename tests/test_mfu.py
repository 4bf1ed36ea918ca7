"""FLOPs per token against real transformers models (built on the meta device), and the peak table."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM
from transformers.pytorch_utils import Conv1D

from trainer.data.length_groups import attention_length
from trainer.observability.mfu import flops_per_token, matmul_params, mfu, peak_flops

CONFIGS = {
    "llama": dict(vocab_size=512, hidden_size=128, intermediate_size=352, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2, tie_word_embeddings=True),
    "gpt2": dict(vocab_size=500, n_embd=64, n_layer=3, n_head=4, bos_token_id=0, eos_token_id=0),
    "gpt_neox": dict(vocab_size=500, hidden_size=64, num_hidden_layers=3, num_attention_heads=4, intermediate_size=200),
    "qwen2": dict(vocab_size=500, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=160),
    "gemma": dict(vocab_size=500, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1,
                  head_dim=32, intermediate_size=96),
}


def counted_matmul_weights(model: torch.nn.Module) -> int:
    """Weights of every Linear / Conv1D, i.e. what a token multiplies through, lm_head included."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, (torch.nn.Linear, Conv1D)))


@pytest.mark.parametrize("model_type", sorted(CONFIGS))
def test_matmul_params_equal_the_real_models(model_type):
    cfg = AutoConfig.for_model(model_type, **CONFIGS[model_type])
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    assert matmul_params(cfg) == counted_matmul_weights(model)
    assert matmul_params(cfg.to_dict()) == matmul_params(cfg)  # config.json works as well as the object


def test_moe_counts_only_the_routed_experts():
    cfg = AutoConfig.for_model("mixtral", vocab_size=500, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                               num_key_value_heads=2, intermediate_size=96, num_local_experts=4, num_experts_per_tok=2)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    assert not cfg.tie_word_embeddings  # so lm_head is its own 2-D parameter below
    params = dict(model.named_parameters())
    experts = sum(p.numel() for n, p in params.items() if ".experts." in n)
    dense = sum(p.numel() for n, p in params.items()
                if p.dim() == 2 and ".experts." not in n and "embed_tokens" not in n)
    assert matmul_params(cfg) == dense + experts * 2 // 4  # 2 of 4 experts per token


def test_flops_per_token_adds_attention_to_6n():
    cfg = CONFIGS["llama"] | {"model_type": "llama"}
    n = matmul_params(cfg)
    assert flops_per_token(cfg, 128) == 6 * n + 12 * 4 * 4 * 32 * 128
    assert flops_per_token(cfg, 256) - flops_per_token(cfg, 128) == 12 * 4 * 128 * 128


def test_llama_7b_is_about_6_x_7b():
    cfg = {"model_type": "llama", "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008,
           "num_hidden_layers": 32, "num_attention_heads": 32}
    assert matmul_params(cfg) == 6_607_077_376  # 6.74e9 parameters less the input embedding
    assert flops_per_token(cfg, 4096) == pytest.approx(4.61e10, rel=0.01)


@pytest.mark.parametrize(
    "name,dtype,tflops",
    [
        ("NVIDIA H100 80GB HBM3", "bf16", 989.4),
        ("NVIDIA H100 PCIe", "bf16", 756.5),
        ("NVIDIA H100 NVL", "fp16", 835.5),
        ("NVIDIA H200", "bf16", 989.4),
        ("NVIDIA GH200 480GB", "bf16", 989.4),
        ("NVIDIA A100-SXM4-80GB", "bf16", 312.0),
        ("NVIDIA A100 80GB PCIe", "fp32", 19.5),
        ("NVIDIA L4", "bf16", 121.0),
        ("NVIDIA L40S", "bf16", 362.05),
        ("NVIDIA L40", "bf16", 181.05),
        ("NVIDIA A10", "fp16", 125.0),
        ("Tesla V100-SXM2-16GB", "fp16", 125.0),
        ("Tesla V100-PCIE-32GB", "fp16", 112.0),
        ("Tesla T4", "fp16", 65.0),
    ],
)
def test_peak_table(name, dtype, tflops):
    assert peak_flops(name, dtype) == pytest.approx(tflops * 1e12)


def test_peak_unknown_is_none_and_bad_dtype_raises():
    assert peak_flops("cpu", "fp32") is None
    assert peak_flops("Tesla V100-SXM2-16GB", "bf16") is None  # no bf16 tensor cores
    assert peak_flops("NVIDIA GeForce RTX 9999", "bf16") is None
    with pytest.raises(ValueError, match="dtype"):
        peak_flops("NVIDIA H100 80GB HBM3", "int8")


def test_mfu_formula():
    # 8 H100s, 7B-ish model (4.6e10 FLOPs/token), 3000 tokens/s per GPU -> about 14% MFU
    assert mfu(8 * 3000, 4.6e10, 989.4e12, 8) == pytest.approx(3000 * 4.6e10 / 989.4e12)


def test_attention_term_follows_the_documents_not_seq_len():
    # Two documents of 2 and 6 tokens: (2*2 + 6*6) / 8 = 5 positions attended on average, not seq_len.
    assert attention_length([2, 6]) == 5.0
    assert attention_length([]) == 0.0
    cfg = CONFIGS["llama"] | {"model_type": "llama"}  # 4 layers, 4 heads of 32
    assert flops_per_token(cfg, attention_length([2, 6])) == 6 * matmul_params(cfg) + 12 * 4 * 4 * 32 * 5


def test_packed_data_reports_its_attention_length():
    from test_packing import documents
    from trainer.data.row_layout import ArrayRows
    from trainer.data.token_data import TokenData, pack_documents, pad_documents

    # pieces 5+3 | 8 (of 12) | 4 + padding | 2+6: (25 + 9 + 64 + 16 + 4 + 36) / 28 = 5.5
    packed = TokenData(ArrayRows(pack_documents(documents([5, 3, 12, 2, 6]), 8, pad_id=0)), packed=True, pad_id=0,
                       shuffle=False)
    assert packed.attention_length == pytest.approx(154 / 28)
    padded = TokenData(ArrayRows(pad_documents(documents([5, 3, 12]), 8, pad_id=0)), packed=False, pad_id=0,
                       shuffle=False)
    assert padded.attention_length == pytest.approx((25 + 9 + 64) / 16)  # 12 truncated to 8


def test_frozen_base_weights_are_credited_without_weight_gradients():
    cfg = CONFIGS["llama"] | {"model_type": "llama"}
    n, attention = matmul_params(cfg), 12 * 4 * 4 * 32 * 100
    assert flops_per_token(cfg, 100, frozen_base=True, adapter_params=1000) == 4 * n + 6 * 1000 + attention
    assert flops_per_token(cfg, 100) == 6 * n + attention


def test_lora_model_counts_its_adapter_as_the_only_trained_matmuls(tmp_path):
    from launcher.spec.load import load_job
    from trainer.training.model import build_model
    from trainer.training.run_log import model_flops_per_token
    from trainjobs import TINY_MODEL, tiny_job

    lora = {"kind": "lora", "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}}
    cfg = load_job(tiny_job(tmp_path, method=lora)).train
    model = build_model(cfg, ds_config={})
    # per layer: q 64 -> 64: A 4x64 + B 64x4 = 512; v 64 -> 2 kv heads x 16 = 32: A 4x64 + B 32x4 = 384
    adapter = 2 * (512 + 384)
    n = matmul_params(TINY_MODEL)
    attention = 12 * 2 * 4 * 16 * 20.0
    assert model_flops_per_token(model, cfg, 20.0) == 4 * n + 6 * adapter + attention
    full = load_job(tiny_job(tmp_path, name="full")).train
    assert model_flops_per_token(build_model(full, ds_config={}), full, 20.0) == 6 * n + attention


class DeviceCount:
    """A device scalar whose .item() returns once the device has finished: here, 2 s after the host queued."""

    def __init__(self, value: int, clock: list[float]):
        self.value, self.clock = value, clock

    def item(self) -> int:
        self.clock[0] += 2.0  # the device still had 2 s of the window's steps to run
        return self.value


def test_tokens_per_second_is_timed_after_the_sync_that_ends_the_window():
    from trainer.training.run_log import tokens_per_second

    clock = [11.0]  # the window began at 10 s; the host queued its last step at 11 s
    tokens, rate = tokens_per_second(DeviceCount(6000, clock), since=10.0, clock=lambda: clock[0])
    assert (tokens, rate) == (6000, 2000.0)  # 6000 tokens over 3 s, not over the host's 1 s
