"""The job file contract: validation messages, --set overrides, DeepSpeed assembly, precision, schedules."""

from __future__ import annotations

import json

import pytest
import yaml

from launcher.spec.load import load_job
from trainer.config.ds_config import build_ds_config, resolve_precision
from trainer.config.train_config import ConfigError, TrainConfig
from trainer.training.preflight import run_preflight
from trainjobs import REPO, tiny_job


def errors_of(path, *overrides) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_job(path, list(overrides))
    return info.value.problems


def test_valid_job_loads_with_paths_resolved(tmp_path):
    spec = load_job(tiny_job(tmp_path))
    assert spec.name == "t" and spec.train.run.max_steps == 8
    assert spec.train.model.tokenizer.endswith("examples/data/tokenizer")


def test_unknown_keys_are_refused_with_their_path(tmp_path):
    job = tiny_job(tmp_path, run={"bogus_key": 1})
    assert errors_of(job) == ["train.run.bogus_key: unknown key"]


def test_every_problem_is_one_line_naming_the_key_and_value(tmp_path):
    job = tiny_job(tmp_path, run={"micro_batch_size": 0}, precision="fp8")
    problems = errors_of(job)
    assert "train.run.micro_batch_size: Input should be greater than or equal to 1 (got 0)" in problems
    assert any(p.startswith("train.precision:") and "'fp8'" in p for p in problems)
    assert all("\n" not in p for p in problems)


def test_set_overrides_any_key_and_parses_yaml_values(tmp_path):
    spec = load_job(tiny_job(tmp_path), ["train.optim.lr=2e-5", "train.method.kind=lora",
                                         "train.method.lora.target_modules=[q_proj]", "cluster.nodes=3"])
    assert spec.train.optim.lr == 2e-5
    assert spec.train.method.lora.target_modules == ["q_proj"]
    assert spec.cluster.nodes == 3


@pytest.mark.parametrize("assignment", ["novalue", "=3", "train..lr=1"])
def test_malformed_set_is_a_clear_error(tmp_path, assignment):
    assert errors_of(tiny_job(tmp_path), assignment) == [f"--set {assignment!r}: expected key.path=value"]


def test_unknown_preset_names_the_choices(tmp_path):
    (problem,) = errors_of(tiny_job(tmp_path, deepspeed={"preset": "zero9"}))
    assert problem.startswith("train.deepspeed.preset: unknown preset 'zero9'; choose one of zero0")


def test_seq_len_above_model_limit(tmp_path):
    (problem,) = errors_of(tiny_job(tmp_path, data={"seq_len": 4096}))
    assert "data.seq_len 4096 is above the model's limit (max_position_embeddings 128)" in problem


def test_flash_attention_2_with_packing_needs_micro_batch_one(tmp_path):
    # With more rows transformers does not split packed documents for flash_attention_2: they would see each other.
    fa2 = {"attn_implementation": "flash_attention_2"}
    (problem,) = errors_of(tiny_job(tmp_path, model=fa2, run={"micro_batch_size": 4}))
    assert problem == ("train: model.attn_implementation flash_attention_2 with data.packing needs "
                       "run.micro_batch_size 1 (got 4); use flex_attention or sdpa, or grad_accum for a larger batch")
    load_job(tiny_job(tmp_path, name="one", model=fa2, run={"micro_batch_size": 1}))
    load_job(tiny_job(tmp_path, name="unpacked", model=fa2, data={"packing": False}))
    flex = load_job(tiny_job(tmp_path, name="flex", model={"attn_implementation": "flex_attention"})).train
    with pytest.raises(ConfigError) as info:
        run_preflight(flex, world_size=1, has_gpu=False)
    assert info.value.problems == ["train.model.attn_implementation: flex_attention trains only on a GPU (torch has "
                                   "no flex_attention backward on the CPU); use sdpa"]


def test_model_needs_exactly_one_source(tmp_path):
    job = tiny_job(tmp_path, model={"pretrained": "/models/x"})
    assert any("exactly one of model.pretrained or model.config" in p for p in errors_of(job))


def test_global_batch_must_match_world_size(tmp_path):
    cfg = load_job(tiny_job(tmp_path, run={"global_batch_size": 12}), local=True).train
    cfg.check_world_size(3)  # 4 x 1 x 3
    with pytest.raises(ValueError, match="global_batch_size 12 does not divide into 2 processes"):
        cfg.check_world_size(2)


def test_precision_auto_and_fp16_on_cpu():
    assert resolve_precision("auto", has_gpu=False) == "fp32"  # bf16 is ~30x slower on AVX2 CPUs
    assert resolve_precision("auto", has_gpu=True, gpu_has_bf16=True) == "bf16"
    assert resolve_precision("auto", has_gpu=True, gpu_has_bf16=False) == "fp16"
    with pytest.raises(ConfigError, match="fp16 needs a GPU"):
        resolve_precision("fp16", has_gpu=False)


def test_preflight_collects_every_problem(tmp_path):
    cfg = load_job(tiny_job(tmp_path, data={"train": str(tmp_path / "missing.jsonl")}, precision="fp16",
                            run={"global_batch_size": 5}), local=True).train
    with pytest.raises(ConfigError) as info:
        run_preflight(cfg, world_size=2, has_gpu=False)
    problems = info.value.problems
    assert any(p.startswith("train.data.train: no such file or folder") for p in problems)
    assert any("train.run.global_batch_size 5" in p for p in problems)
    assert any("train.precision: fp16 needs a GPU" in p for p in problems)


def test_empty_dataset_is_refused(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    cfg = load_job(tiny_job(tmp_path, data={"train": str(empty)})).train
    with pytest.raises(ConfigError, match="train.data.train: dataset .* is empty"):
        run_preflight(cfg, world_size=1, has_gpu=False)


@pytest.mark.parametrize("preset,stage", [("zero0", 0), ("zero1", 1), ("zero2", 2), ("zero3", 3), ("zero3-offload", 3)])
def test_ds_config_assembly(tmp_path, preset, stage):
    job = tiny_job(tmp_path,
                   deepspeed={"preset": preset, "overrides": {"zero_optimization": {"reduce_bucket_size": 1000}}},
                   run={"grad_accum": 3}, optim={"grad_clip": 0.5})
    ds = build_ds_config(load_job(job).train, world_size=2, precision="bf16")
    assert ds["zero_optimization"]["stage"] == stage
    assert ds["zero_optimization"]["reduce_bucket_size"] == 1000  # override merged, siblings kept
    assert (ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"],
            ds["train_batch_size"]) == (4, 3, 24)
    assert ds["gradient_clipping"] == 0.5
    assert ds["bf16"] == {"enabled": True} and ds["fp16"] == {"enabled": False}


def test_ds_config_fp16_uses_dynamic_loss_scaling(tmp_path):
    ds = build_ds_config(load_job(tiny_job(tmp_path)).train, world_size=1, precision="fp16")
    assert ds["fp16"]["enabled"] and ds["fp16"]["loss_scale"] == 0 and not ds["bf16"]["enabled"]


def test_deepspeed_accepts_every_assembled_preset(tmp_path):
    from deepspeed.runtime.config import DeepSpeedConfig

    for preset in ("zero0", "zero1", "zero2", "zero3", "zero3-offload"):
        cfg = load_job(tiny_job(tmp_path, deepspeed={"preset": preset})).train
        ds = DeepSpeedConfig(build_ds_config(cfg, world_size=1, precision="fp32"))
        assert ds.zero_optimization_stage == json.loads((REPO / "ds_configs" / f"{preset}.json").read_text())[
            "zero_optimization"]["stage"]


@pytest.mark.parametrize("kind", ["cosine", "linear", "constant"])
def test_lr_schedules_warm_up_then_decay(kind):
    from trainer.config.train_config import ScheduleConfig
    from trainer.training.engine import lr_lambda

    f = lr_lambda(ScheduleConfig(kind=kind, warmup_steps=10, min_lr_ratio=0.1), total_steps=110)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0)
    end = {"cosine": 0.1, "linear": 0.1, "constant": 1.0}[kind]
    assert f(110) == pytest.approx(end)
    if kind == "cosine":
        assert f(60) == pytest.approx(0.55)
    if kind == "linear":
        assert f(60) == pytest.approx(0.55)


def test_train_yaml_round_trips(tmp_path):
    cfg = load_job(tiny_job(tmp_path)).train
    assert TrainConfig.model_validate(yaml.safe_load(cfg.to_yaml())) == cfg


def test_train_yaml_not_utf8_is_one_line(tmp_path):
    from trainer.config.train_config import load_train_config

    path = tmp_path / "train.yaml"
    path.write_bytes(load_job(tiny_job(tmp_path)).train.to_yaml().encode() + b"# \xe9\n")
    with pytest.raises(ConfigError) as e:
        load_train_config(path)
    assert e.value.problems == [f"{path}: not UTF-8 text (byte {path.stat().st_size - 2})"]
