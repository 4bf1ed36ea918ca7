"""The trainer's own metrics path (trainer.training.run_log.RunLog, as loop.Trainer drives it) for an fp16 run:
skipped steps counted once each, step durations observed every step, not once per log step.

A real single-process gloo group and a real tiny model; the engine is a stand-in exposing the four
things RunLog reads from DeepSpeed's (skipped_steps, loss scale, lr, grad norm), since DeepSpeed
refuses fp16 on a CPU.
"""

from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist
import yaml
from transformers import AutoConfig, AutoModelForCausalLM

from trainer.checkpoints.loop_state import LoopState
from trainer.config.train_config import TrainConfig
from trainer.training.engine import Topology
from trainer.training.run_log import RunLog
from trainjobs import TINY_MODEL, tiny_job


class Fp16Engine:
    """What DeepSpeed's engine shows RunLog in fp16: a running total of skipped steps and the scale."""

    def __init__(self) -> None:
        self.skipped_steps = 0
        self.optimizer = type("Opt", (), {"cur_scale": 65536.0})()

    def overflow(self) -> None:
        self.skipped_steps += 1
        self.optimizer.cur_scale /= 2

    def get_global_grad_norm(self):
        return 1.0

    def get_lr(self):
        return [1e-3]


class Bar:
    disable = True

    def update(self, n): ...

    def set_postfix(self, **kw): ...


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def gloo():
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def sample(runlog: RunLog, name: str) -> float:
    m = runlog.metrics
    return m.registry.get_sample_value(name, m.labels) or 0.0


def make_runlog(tmp_path, steps: int, log_every: int) -> RunLog:
    job = yaml.safe_load(tiny_job(tmp_path).read_text())
    cfg = TrainConfig.model_validate({**job["train"], "metrics": {"enabled": True, "port": free_port()},
                                      "run": {**job["train"]["run"], "log_every": log_every, "eval_every": 0}})
    arch = dict(TINY_MODEL)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(arch.pop("model_type"), **arch))
    topo = Topology(rank=0, local_rank=0, world_size=1, node_rank=0, device=torch.device("cpu"))
    return RunLog(tmp_path / "run", topo, cfg, {"fp16": {"enabled": True}}, model, total_steps=steps)


def run_steps(tmp_path, overflow_steps: set[int], steps: int = 10, log_every: int = 2) -> RunLog:
    runlog, engine, state = make_runlog(tmp_path, steps, log_every), Fp16Engine(), LoopState()
    try:
        for step in range(1, steps + 1):
            state.step = step
            if step in overflow_steps:
                engine.overflow()
            runlog.step(state, torch.tensor(2.0), torch.tensor(256), 0.01 * step, 0.001, engine, Bar())
        return runlog
    finally:
        runlog.metrics.close()


def test_one_overflow_counts_once_however_many_log_steps_follow(tmp_path, gloo):
    runlog = run_steps(tmp_path, overflow_steps={3})
    assert sample(runlog, "llmlaunch_skipped_steps_total") == 1  # was 4: the running total re-added each log step
    assert sample(runlog, "llmlaunch_loss_scale") == 32768.0


def test_every_step_lands_in_the_step_duration_histogram(tmp_path, gloo):
    runlog = run_steps(tmp_path, overflow_steps={4, 5, 9}, steps=10, log_every=5)
    assert sample(runlog, "llmlaunch_skipped_steps_total") == 3
    assert sample(runlog, "llmlaunch_step_duration_seconds_count") == 10  # was 3 (log steps 1, 5, 10)
    assert sample(runlog, "llmlaunch_step_duration_seconds_sum") == pytest.approx(0.01 * sum(range(1, 11)))


def test_a_resumed_run_counts_only_new_overflows(tmp_path, gloo):
    runlog = make_runlog(tmp_path, steps=20, log_every=1)
    engine = Fp16Engine()
    engine.skipped_steps = 7  # restored from the checkpoint
    runlog.resumed(tmp_path / "ckpt", 10, engine.skipped_steps)
    try:
        state = LoopState(step=11)
        engine.overflow()
        runlog.step(state, torch.tensor(2.0), torch.tensor(256), 0.01, 0.0, engine, Bar())
        assert sample(runlog, "llmlaunch_skipped_steps_total") == 1
    finally:
        runlog.metrics.close()


def test_a_failed_save_is_exported_as_result_failed(tmp_path, gloo):
    runlog = make_runlog(tmp_path, steps=10, log_every=1)
    try:
        runlog.checkpoint_failed(LoopState(step=4), 2.5, "checkpoint step 4 not saved (rank 1: disk full)", 1, 3)
        m = runlog.metrics
        assert m.registry.get_sample_value("llmlaunch_checkpoints_total", {**m.labels, "result": "failed"}) == 1
        assert m.registry.get_sample_value("llmlaunch_checkpoints_total", {**m.labels, "result": "ok"}) == 0
        assert sample(runlog, "llmlaunch_last_checkpoint_timestamp_seconds") == 0  # no success to report
    finally:
        runlog.metrics.close()
