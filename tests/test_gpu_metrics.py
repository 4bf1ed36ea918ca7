"""The NVML collector, against a fake NVML module (tests/fake_nvml.py): this machine has no GPU.

The real NVML is exercised by bench/gpu_metrics_probe.py on a GPU machine. Here: units, labels by
UUID, only the GPUs of the node's ranks, readings a GPU does not support, and "absent, not zero".
"""

from __future__ import annotations

import pynvml
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.fake_nvml import FakeGpu, FakeNvml, two_gpus
from trainer.observability.gpu_metrics import GPU_METRICS, GpuCollector, load_nvml

LABELS = {"job": "j", "namespace": "ml", "node_rank": "3"}


def collect(collector: GpuCollector) -> dict[str, dict[tuple, float]]:
    """Family name -> {sorted labels: value}, through a registry and the text format, as a scrape sees it."""
    registry = CollectorRegistry()
    registry.register(collector)
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def gpu_labels(gpu: str, **extra: str) -> tuple:
    return tuple(sorted({**LABELS, "gpu": gpu, **extra}.items()))


def collector(nvml, gpus: dict[int, str], rank: int = 0) -> GpuCollector:
    c = GpuCollector(LABELS, nvml=nvml, rank=rank)
    c.set_node_gpus(gpus)
    return c


def test_fake_nvml_only_uses_names_the_real_pynvml_has():
    names = [n for n in dir(FakeNvml) if n.startswith(("nvml", "NVML"))]
    assert len(names) >= 12
    for name in names:
        assert hasattr(pynvml, name), f"fake NVML defines {name}, which pynvml does not have"
    assert pynvml.NVML_TEMPERATURE_GPU == FakeNvml.NVML_TEMPERATURE_GPU
    assert pynvml.NVML_CLOCK_SM == FakeNvml.NVML_CLOCK_SM


def test_the_ranks_gpus_in_base_units_labelled_by_uuid():
    got = collect(collector(two_gpus(), {6: "GPU-0", 7: "GPU-1"}, rank=6))
    assert set(got) == set(GPU_METRICS) - {"llmlaunch_cuda_max_memory_allocated_bytes"}
    assert got["llmlaunch_gpu_utilization_ratio"] == {gpu_labels("GPU-0"): 0.97, gpu_labels("GPU-1"): 0.88}
    assert got["llmlaunch_gpu_power_watts"] == {gpu_labels("GPU-0"): 612.5, gpu_labels("GPU-1"): 598.0}  # from mW
    assert got["llmlaunch_gpu_sm_clock_hertz"][gpu_labels("GPU-0")] == 1.98e9  # from MHz
    assert got["llmlaunch_gpu_temperature_celsius"] == {gpu_labels("GPU-0"): 67, gpu_labels("GPU-1"): 71}
    assert got["llmlaunch_gpu_memory_used_bytes"][gpu_labels("GPU-1")] == 61 * 2**30
    assert got["llmlaunch_gpu_memory_total_bytes"][gpu_labels("GPU-1")] == 80 * 2**30
    assert got["llmlaunch_gpu_info"] == {
        gpu_labels("GPU-0", name="NVIDIA H100 80GB HBM3", rank="6"): 1,
        gpu_labels("GPU-1", name="NVIDIA H100 80GB HBM3", rank="7"): 1,
    }


def test_only_the_pods_gpus_not_every_gpu_of_the_node():
    # A node with four GPUs, this pod's two ranks on the 4th and the 2nd: NVML's index order is not the ranks'.
    node = FakeNvml([FakeGpu(uuid=f"GPU-{c}", power_milliwatts=100_000 * (i + 1)) for i, c in enumerate("abcd")])
    got = collect(collector(node, {0: "GPU-d", 1: "GPU-b"}))
    assert got["llmlaunch_gpu_power_watts"] == {gpu_labels("GPU-d"): 400.0, gpu_labels("GPU-b"): 200.0}
    assert set(got["llmlaunch_gpu_info"]) == {gpu_labels("GPU-d", name="NVIDIA H100 80GB HBM3", rank="0"),
                                              gpu_labels("GPU-b", name="NVIDIA H100 80GB HBM3", rank="1")}
    # two ranks sharing a GPU: one reading per GPU, both ranks in the info series
    shared = collect(collector(node, {0: "GPU-a", 1: "GPU-a"}))
    assert list(shared["llmlaunch_gpu_power_watts"]) == [gpu_labels("GPU-a")]
    assert len(shared["llmlaunch_gpu_info"]) == 2


def test_a_reading_the_gpu_does_not_support_is_left_out_not_zero():
    nvml = FakeNvml([FakeGpu(uuid="GPU-0", unsupported={"nvmlDeviceGetPowerUsage"}), FakeGpu(uuid="GPU-1")])
    got = collect(collector(nvml, {0: "GPU-0", 1: "GPU-1"}))
    assert set(got["llmlaunch_gpu_power_watts"]) == {gpu_labels("GPU-1")}
    assert set(got["llmlaunch_gpu_utilization_ratio"]) == {gpu_labels("GPU-0"), gpu_labels("GPU-1")}
    every_gpu_unsupported = FakeNvml([FakeGpu(uuid="GPU-0", unsupported={"nvmlDeviceGetTemperature"})])
    assert "llmlaunch_gpu_temperature_celsius" not in collect(collector(every_gpu_unsupported, {0: "GPU-0"}))


def test_no_gpus_means_no_series():
    assert collect(GpuCollector(LABELS, nvml=None, rank=0)) == {}
    assert collect(collector(FakeNvml([]), {})) == {}
    assert collect(GpuCollector(LABELS, nvml=two_gpus(), rank=0)) == {}  # ranks on the CPU: no GPU of theirs


def test_allocator_peaks_per_rank_from_the_gather():
    collector = GpuCollector(LABELS, nvml=None, rank=4)
    collector.set_allocator_peaks({4: 3e9, 5: 3.5e9})
    peaks = collect(collector)["llmlaunch_cuda_max_memory_allocated_bytes"]
    rank = lambda r: tuple(sorted({**LABELS, "rank": r}.items()))  # noqa: E731
    assert peaks == {rank("4"): 3e9, rank("5"): 3.5e9}


def test_load_nvml_matches_what_the_real_library_says():
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        assert load_nvml() is None  # no driver here: the collector will export nothing
    else:
        assert load_nvml() is pynvml
        pynvml.nvmlShutdown()


NODE_DRIVER = """
import json, os, sys
import torch.distributed as dist
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from tests.fake_nvml import FakeGpu, FakeNvml
from trainer.config.train_config import MetricsConfig
from trainer.observability.gpu_metrics import gather_node_gpus
from trainer.observability.exporter import TrainMetrics

dist.init_process_group("gloo")
rank, node = dist.get_rank(), int(os.environ["GROUP_RANK"])
machine = FakeNvml([FakeGpu(uuid=f"GPU-{node}{c}") for c in "abcd"])
# What torch would report for cuda:0 of this rank: the one device CUDA_VISIBLE_DEVICES leaves it.
mine = machine.gpus[int(os.environ["CUDA_VISIBLE_DEVICES"])].uuid
gpus = gather_node_gpus(mine, node)
metrics = TrainMetrics(MetricsConfig(), job="j", namespace=None, node_rank=node,
                       local_rank=int(os.environ["LOCAL_RANK"]), rank=rank, world_size=3, flops_per_token=1.0,
                       peak_flops=None, device="gpu", nvml=machine)
metrics.start(addr="127.0.0.1", port=0)
metrics.set_node_gpus(gpus)
if metrics.serving:
    text = generate_latest(metrics.registry).decode()
    info = sorted((s.labels["rank"], s.labels["gpu"]) for f in text_string_to_metric_families(text)
                  for s in f.samples if s.name == "llmlaunch_gpu_info")
    power = sorted(s.labels["gpu"] for f in text_string_to_metric_families(text) for s in f.samples
                   if s.name == "llmlaunch_gpu_power_watts")
    print(json.dumps({"node": node, "gathered": gpus, "info": info, "power": power}))
metrics.close()
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_ranks_with_different_visible_devices_export_their_own_gpus_by_uuid():
    """Three real processes (gloo): node 0 has ranks 0 and 1, each seeing one other GPU of four
    (CUDA_VISIBLE_DEVICES 3 and 1, so both call it cuda:0); node 1 has rank 2. Each node exports
    exactly its ranks' GPUs, named by UUID."""
    import json
    import os
    import subprocess
    import sys

    from launcher.local.ports import free_port
    from trainjobs import REPO

    port = free_port()
    layout = [(0, 0, 0, "3"), (1, 0, 1, "1"), (2, 1, 0, "2")]  # rank, node, local rank, visible device
    procs = [subprocess.Popen(
        [sys.executable, "-c", NODE_DRIVER], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO), "RANK": str(rank), "WORLD_SIZE": "3", "GROUP_RANK": str(node),
             "LOCAL_RANK": str(local), "LOCAL_WORLD_SIZE": "2" if node == 0 else "1", "CUDA_VISIBLE_DEVICES": visible,
             "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
        for rank, node, local, visible in layout]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err[-2000:] for _, err in outputs]
    served = sorted((json.loads(out) for out, _ in outputs if out.strip()), key=lambda r: r["node"])
    assert served == [
        {"node": 0, "gathered": {"0": "GPU-0d", "1": "GPU-0b"}, "info": [["0", "GPU-0d"], ["1", "GPU-0b"]],
         "power": ["GPU-0b", "GPU-0d"]},
        {"node": 1, "gathered": {"2": "GPU-1c"}, "info": [["2", "GPU-1c"]], "power": ["GPU-1c"]},
    ]
