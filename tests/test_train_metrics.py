"""TrainMetrics: what each process serves, the values it computes, and a real scrape through promtool."""

from __future__ import annotations

import shutil
import socket
import subprocess
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fake_nvml import two_gpus
from trainer.config.train_config import MetricsConfig
from trainer.observability.exporter import NODE_METRICS, TRAINING_METRICS, TrainMetrics
from trainer.observability.gpu_metrics import GPU_METRICS

H100 = 989.4e12


def make(cfg: MetricsConfig | None = None, *, node_rank=0, local_rank=0, rank=0, world_size=4, namespace="ml",
         peak_flops=H100, nvml=None) -> TrainMetrics:
    return TrainMetrics(
        cfg or MetricsConfig(), job="unit", namespace=namespace, node_rank=node_rank, local_rank=local_rank, rank=rank,
        world_size=world_size, local_world_size=2, flops_per_token=6e9, peak_flops=peak_flops,
        device="NVIDIA H100 80GB HBM3", nvml=nvml,
    )


def step(m: TrainMetrics, n: int, *, tokens=4096, seconds=0.5, overflow=False, **kw) -> None:
    """One optimizer step, logged (log_every 1), as RunLog drives the exporter."""
    args = dict(step=n, loss=2.5, lr=1e-4, grad_norm=0.7, tokens=tokens, samples=4, step_seconds=seconds,
                data_wait_seconds=0.05, skipped_steps=int(overflow))
    m.observe_step_duration(seconds)
    m.on_step(**{**args, **kw})


def scrape(m: TrainMetrics) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{m.port}/metrics", timeout=10) as resp:
        return resp.read()


def samples(m: TrainMetrics) -> dict[tuple[str, tuple], float]:
    """(sample name, sorted labels) -> value, parsed from a real HTTP scrape."""
    out = {}
    for family in text_string_to_metric_families(scrape(m).decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(m: TrainMetrics, name: str, **labels: str) -> float:
    want = {"job": "unit", "namespace": "ml", "node_rank": "0", **labels}
    return samples(m)[(name, tuple(sorted(want.items())))]


@pytest.fixture
def served():
    started = []

    def start(m: TrainMetrics) -> TrainMetrics:
        m.start(addr="127.0.0.1", port=0)
        started.append(m)
        return m

    yield start
    for m in started:
        m.close()


@pytest.mark.prometheus
def test_promtool_finds_nothing_to_lint_in_a_real_scrape(served):
    m = served(make(nvml=two_gpus()))
    m.set_node_gpus({0: "GPU-0", 1: "GPU-1"})
    for n in range(1, 6):
        step(m, n, loss_scale=1024.0, overflow=n == 2)
    m.on_rank_step_times([0.5, 0.6, 0.5, 0.5], [1e9, 2e9, 3e9, 4e9])
    m.on_eval(step=5, eval_loss=2.6)
    m.on_checkpoint(seconds=3.0, ok=True)
    body = scrape(m)
    promtool = shutil.which("promtool")
    assert promtool, "promtool is not installed: run scripts/install-test-deps.sh"
    result = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True)
    assert (result.returncode, result.stdout + result.stderr) == (0, b"")
    families = {f.name for f in text_string_to_metric_families(body.decode())}
    # every family the exporter serves is in the lists the e2e test and docs use, and vice versa
    listed = {n.removesuffix("_total") for n in (*TRAINING_METRICS, *NODE_METRICS, *GPU_METRICS)}
    assert families - {n for n in families if n.endswith("_created")} == listed


def test_values_and_units(served):
    m = served(make())
    for n in range(1, 13):
        step(m, n, tokens=4096, seconds=0.5 if n <= 2 else 0.25, loss_scale=512.0, overflow=n in (3, 4))
    assert value(m, "llmlaunch_train_step") == 12
    assert value(m, "llmlaunch_tokens_total") == 12 * 4096
    assert value(m, "llmlaunch_samples_total") == 48
    assert value(m, "llmlaunch_skipped_steps_total") == 2
    assert value(m, "llmlaunch_data_wait_seconds_total") == pytest.approx(12 * 0.05)
    assert value(m, "llmlaunch_step_duration_seconds_count") == 12
    assert value(m, "llmlaunch_step_duration_seconds_bucket", le="0.25") == 10
    # tokens/s over the last 10 steps (steps 3-12 at 0.25 s), and MFU = tokens/s x 6e9 / (peak x 4)
    assert value(m, "llmlaunch_tokens_per_second") == pytest.approx(4096 / 0.25)
    assert value(m, "llmlaunch_mfu_ratio") == pytest.approx(4096 / 0.25 * 6e9 / (H100 * 4))
    assert value(m, "llmlaunch_loss_scale") == 512


def test_peak_tflops_in_the_job_file_wins_and_no_peak_means_no_mfu(served):
    m = served(make(MetricsConfig(peak_tflops=100.0)))
    step(m, 1, tokens=1000, seconds=1.0)
    assert value(m, "llmlaunch_mfu_ratio") == pytest.approx(1000 * 6e9 / (100e12 * 4))
    cpu = served(make(peak_flops=None))
    step(cpu, 1)
    names = {name for name, _ in samples(cpu)}
    assert "llmlaunch_mfu_ratio" not in names and "llmlaunch_tokens_per_second" in names


def test_optional_values_stay_absent_until_given(served):
    m = served(make())
    before = {name for name, _ in samples(m)}
    assert not before & {"llmlaunch_train_loss", "llmlaunch_eval_loss", "llmlaunch_grad_norm", "llmlaunch_loss_scale",
                         "llmlaunch_last_checkpoint_timestamp_seconds", "llmlaunch_last_step_timestamp_seconds"}
    assert value(m, "llmlaunch_checkpoints_total", result="failed") == 0  # counters start at a true zero
    step(m, 1, grad_norm=None, loss_scale=None)
    after = {name for name, _ in samples(m)}
    assert "llmlaunch_train_loss" in after and not after & {"llmlaunch_grad_norm", "llmlaunch_loss_scale"}
    m.on_checkpoint(seconds=2.0, ok=False)
    assert "llmlaunch_last_checkpoint_timestamp_seconds" not in {name for name, _ in samples(m)}
    assert value(m, "llmlaunch_checkpoints_total", result="failed") == 1
    m.on_checkpoint(seconds=2.0, ok=True)
    assert value(m, "llmlaunch_last_checkpoint_timestamp_seconds") > 1.7e9


def test_nodes_other_than_rank_0s_export_node_values_only(served):
    m = served(make(node_rank=1, rank=2))
    step(m, 7)
    m.on_rank_step_times([0.1, 0.2, 0.3, 0.4], [1.0, 2.0, 3.0, 4.0])
    m.on_eval(step=7, eval_loss=1.0)
    m.on_checkpoint(seconds=1.0, ok=True)
    got = samples(m)
    assert {name for name, _ in got} == {
        "llmlaunch_run_info", "llmlaunch_train_step", "llmlaunch_last_step_timestamp_seconds",
        "llmlaunch_trainer_start_timestamp_seconds", "llmlaunch_rank_step_seconds",
        "llmlaunch_cuda_max_memory_allocated_bytes",
    }
    node1 = {"job": "unit", "namespace": "ml", "node_rank": "1"}
    steps = {dict(labels)["rank"]: v for (name, labels), v in got.items() if name == "llmlaunch_rank_step_seconds"}
    assert steps == {"2": 0.3, "3": 0.4}  # this node's ranks, from the all_gather over all four
    assert got[("llmlaunch_train_step", tuple(sorted(node1.items())))] == 7


def test_only_local_rank_0_serves_and_disabled_serves_nothing():
    for m in (make(local_rank=1, rank=1), make(MetricsConfig(enabled=False))):
        m.start(addr="127.0.0.1", port=0)
        step(m, 1)
        m.on_rank_step_times([0.1] * 4)
        m.on_eval(step=1, eval_loss=1.0)
        m.on_checkpoint(seconds=1.0, ok=True)
        assert m.port is None and not m.serving
        m.close()


def test_a_taken_port_is_logged_not_raised(caplog):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        m = make()
        m.start(addr="127.0.0.1", port=s.getsockname()[1])
        assert m.port is None
        assert "cannot serve" in caplog.text
        step(m, 1)  # the loop goes on


def test_no_namespace_label_when_unknown_and_close_stops_serving(served):
    m = served(make(namespace=None))
    step(m, 1)
    labels = {k for _, ls in samples(m) for k, _ in ls}
    assert "namespace" not in labels and {"job", "node_rank"} <= labels
    port = m.port
    m.close()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)
