"""`llmlaunch estimate`: parameter counts against transformers, model states against DeepSpeed's own
estimators, GPUs from node selectors, the JSON keys, and the warning submit / render print."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml
from click.testing import CliRunner

from launcher.cli import cli
from launcher.estimate.gpu_table import gpu_from_selector
from launcher.estimate.memory import GIB, estimate
from launcher.estimate.model_shape import arithmetic_params, safetensors_params
from launcher.spec.load import load_job
from trainjobs import REPO, TINY_MODEL, save_tiny_pretrained, tiny_job

LLAMA_7B = {"model_type": "llama", "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008,
            "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
            "max_position_embeddings": 4096, "tie_word_embeddings": False}
LLAMA_1B_GQA = {"model_type": "llama", "vocab_size": 32000, "hidden_size": 2048, "intermediate_size": 5632,
                "num_hidden_layers": 22, "num_attention_heads": 32, "num_key_value_heads": 4,
                "max_position_embeddings": 2048, "tie_word_embeddings": False}
H100_SELECTOR = {"scheduling": {"node_selector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}}}


def cluster_job(tmp_path, cluster, **train):
    """A tiny_job with a cluster section (tiny_job writes only train)."""
    job = tiny_job(tmp_path, **train)
    data = yaml.safe_load(job.read_text())
    job.write_text(yaml.safe_dump({**data, "cluster": cluster}, sort_keys=False))
    return job


def run(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def big_job(tmp_path, model=LLAMA_7B, preset="zero2", overrides=None, nodes=1, gpus=8, checkpointing=False, **train):
    sections = {"model": {"config": model, "gradient_checkpointing": checkpointing}, "data": {"seq_len": 2048},
                "run": {"micro_batch_size": 1}, **train}
    job = tiny_job(tmp_path, deepspeed={"preset": preset, "overrides": overrides or {}}, precision="bf16", **sections)
    return load_job(job, [f"cluster.nodes={nodes}", f"cluster.gpus_per_node={gpus}"]), job


@pytest.mark.parametrize("config", [
    TINY_MODEL, LLAMA_1B_GQA,
    {**TINY_MODEL, "model_type": "qwen2", "tie_word_embeddings": True},  # q/k/v biases, tied head
    {**TINY_MODEL, "model_type": "gemma", "head_dim": 32},  # ties by default, head_dim apart from hidden/heads
])
def test_parameter_count_matches_transformers(config):
    from transformers import AutoConfig

    arch = dict(config)
    hf = AutoConfig.for_model(arch.pop("model_type"), **arch)
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):  # shapes only: a 1B model without its memory
        model = AutoModelForCausalLM.from_config(hf)
    real = sum({id(p): p.numel() for p in model.parameters()}.values())
    assert arithmetic_params(config) == real


def test_pretrained_count_is_read_from_safetensors_headers(tmp_path):
    model_dir = save_tiny_pretrained(tmp_path / "m")
    from transformers import AutoModelForCausalLM

    real = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(model_dir).parameters())
    assert safetensors_params(model_dir) == real
    job = tiny_job(tmp_path, model={"config": None, "pretrained": str(model_dir), "tokenizer": None})
    assert estimate(load_job(job))["parameters"] == real


@pytest.mark.parametrize("preset,overrides,offload,offload_params", [
    ("zero2", {}, False, False),
    ("zero2", {"zero_optimization": {"offload_optimizer": {"device": "cpu"}}}, True, False),
    ("zero3", {}, False, False),
    ("zero3", {"zero_optimization": {"offload_optimizer": {"device": "cpu"}}}, True, False),
    ("zero3-offload", {}, True, True),
])
@pytest.mark.parametrize("model", [LLAMA_7B, LLAMA_1B_GQA])
@pytest.mark.parametrize("nodes,gpus", [(1, 8), (4, 8), (1, 1)])
def test_model_states_agree_with_deepspeeds_estimators(tmp_path, preset, overrides, offload, offload_params, model,
                                                       nodes, gpus):
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    spec, _ = big_job(tmp_path, model, preset, overrides, nodes, gpus)
    plan = estimate(spec)
    ours = (plan["params_gib"] + plan["grads_gib"] + plan["optimizer_gib"]) * GIB
    total = arithmetic_params(model)
    largest = model["vocab_size"] * model["hidden_size"]  # the embedding (and the LM head)
    if preset == "zero2":
        _, theirs = estimate_zero2_model_states_mem_needs(total, gpus, nodes, cpu_offload=offload)
    else:
        _, theirs, _ = estimate_zero3_model_states_mem_needs(total, largest, gpus, nodes, cpu_offload=offload,
                                                                 cpu_offload_params=offload_params, zero_init=True)
    assert ours == pytest.approx(theirs, rel=0.05)


def test_activations_follow_micro_batch_sequence_and_checkpointing(tmp_path):
    base = estimate(big_job(tmp_path)[0])["activations_gib"]
    assert estimate(big_job(tmp_path, run={"micro_batch_size": 2})[0])["activations_gib"] == pytest.approx(2 * base)
    longer = estimate(big_job(tmp_path, data={"seq_len": 4096})[0])["activations_gib"]
    assert longer > 2 * base  # linear per token, plus the packing mask's seq_len squared
    checkpointed = estimate(big_job(tmp_path, checkpointing=True)[0])
    assert checkpointed["activations_gib"] < base / 3
    states = ("params_gib", "grads_gib", "optimizer_gib")
    assert [checkpointed[k] for k in states] == [estimate(big_job(tmp_path)[0])[k] for k in states]


@pytest.mark.parametrize("labels,name,gib", [
    ({"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}, "H100 80GB", 80),
    ({"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}, "A100 80GB", 80),
    ({"cloud.google.com/gke-accelerator": "nvidia-tesla-a100"}, "A100 40GB", 40),
    ({"cloud.google.com/gke-accelerator": "nvidia-l4"}, "L4 24GB", 24),
    ({"node.kubernetes.io/instance-type": "p5e.48xlarge"}, "H200 141GB", 141),
    ({"node.kubernetes.io/instance-type": "g5.12xlarge"}, "A10G 24GB", 24),
])
def test_gpu_is_recognised_from_the_node_selector(labels, name, gib):
    assert gpu_from_selector(labels) == (name, gib)
    assert gpu_from_selector({"team": "ml"}) is None


def test_estimate_command_json_and_fit(tmp_path):
    job = cluster_job(tmp_path, H100_SELECTOR, model={"config": LLAMA_7B}, data={"seq_len": 2048}, precision="bf16")
    result = run("estimate", str(job), "--nodes", "1", "--gpus-per-node", "8", "-o", "json")
    assert result.exit_code == 0, result.stderr
    plan = json.loads(result.stdout)
    assert {"params_gib", "grads_gib", "optimizer_gib", "activations_gib", "total_gib", "gpu_gib", "fits"} <= set(plan)
    # 7B, ZeRO-2 on 8 GPUs: 13 GiB of bf16 weights + 2 + 24 GiB of states and 8 activations x 16 GiB too much.
    assert plan["gpu_gib"] == 80 and plan["fits"] is False and plan["total_gib"] > 80
    assert plan["params_gib"] == pytest.approx(2 * arithmetic_params(LLAMA_7B) / GIB)
    text = run("estimate", str(job), "--nodes", "8", "--gpus-per-node", "8", "--set", "train.deepspeed.preset=zero3",
               "--set", "train.run.micro_batch_size=1", "--gpu-memory", "40")
    assert text.exit_code == 0 and "fits: yes" in text.stdout and "of 40 GiB" in text.stdout
    unknown = run("estimate", str(job), "--gpus-per-node", "8", "--set", "cluster.scheduling.node_selector={}")
    assert "fits: unknown" in unknown.stdout and "--gpu-memory" in unknown.stdout


def test_estimate_names_an_unreadable_pretrained_model(tmp_path):
    job = tiny_job(tmp_path, model={"config": None, "pretrained": "org/not-here", "tokenizer": None})
    result = run("estimate", str(job))
    assert result.exit_code == 2
    assert result.stderr.startswith("error: train.model.pretrained: cannot read org/not-here/config.json")


def test_submit_and_render_warn_in_one_line_when_it_does_not_fit(tmp_path):
    job = cluster_job(tmp_path, {**H100_SELECTOR, "image": "localhost/llmlaunch-trainer:test", "gpus_per_node": 8},
                      model={"config": LLAMA_7B}, data={"seq_len": 2048}, precision="bf16")
    for args in (["render", str(job)], ["submit", str(job), "--dry-run", "client"]):
        result = run(*args)
        assert result.exit_code == 0, result.stderr
        warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
        assert len(warnings) == 1 and "GiB per GPU exceeds the 80 GiB of the H100 80GB" in warnings[0]
    fits = run("render", str(job), "--set", "train.deepspeed.preset=zero3", "--nodes", "8",
               "--set", "train.model.gradient_checkpointing=true")
    assert fits.exit_code == 0 and "warning:" not in fits.stderr


def test_estimate_imports_no_tensor_library(tmp_path):
    job = tiny_job(tmp_path)
    code = ("import sys, json; from launcher.cli import cli\n"
            f"cli.main(['estimate', {str(job)!r}], standalone_mode=False)\n"
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} "
            "& {'torch', 'transformers', 'deepspeed'})))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert "total" in result.stdout and json.loads(result.stdout.strip().splitlines()[-1]) == []
