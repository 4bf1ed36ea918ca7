"""The NVML collector, against a fake NVML module (tests/fake_nvml.py): this machine has no GPU.

The real NVML is exercised by bench/gpu_metrics_probe.py on a GPU machine. Here: units, labels,
readings a GPU does not support, and "absent, not zero" without GPUs.
"""

from __future__ import annotations

import pynvml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.fake_nvml import FakeGpu, FakeNvml, two_gpus
from trainer.gpu_metrics import GPU_METRICS, GpuCollector, load_nvml

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


def gpu_labels(gpu: int, **extra: str) -> tuple:
    return tuple(sorted({**LABELS, "gpu": str(gpu), **extra}.items()))


def test_fake_nvml_only_uses_names_the_real_pynvml_has():
    names = [n for n in dir(FakeNvml) if n.startswith(("nvml", "NVML"))]
    assert len(names) >= 12
    for name in names:
        assert hasattr(pynvml, name), f"fake NVML defines {name}, which pynvml does not have"
    assert (pynvml.NVML_TEMPERATURE_GPU, pynvml.NVML_CLOCK_SM) == (FakeNvml.NVML_TEMPERATURE_GPU, FakeNvml.NVML_CLOCK_SM)


def test_every_gpu_in_base_units():
    got = collect(GpuCollector(LABELS, nvml=two_gpus(), rank=6))
    assert set(got) == set(GPU_METRICS) - {"llmlaunch_cuda_max_memory_allocated_bytes"}
    assert got["llmlaunch_gpu_utilization_ratio"] == {gpu_labels(0): 0.97, gpu_labels(1): 0.88}
    assert got["llmlaunch_gpu_power_watts"] == {gpu_labels(0): 612.5, gpu_labels(1): 598.0}  # from milliwatts
    assert got["llmlaunch_gpu_sm_clock_hertz"][gpu_labels(0)] == 1.98e9  # from MHz
    assert got["llmlaunch_gpu_temperature_celsius"] == {gpu_labels(0): 67, gpu_labels(1): 71}
    assert got["llmlaunch_gpu_memory_used_bytes"][gpu_labels(1)] == 61 * 2**30
    assert got["llmlaunch_gpu_memory_total_bytes"][gpu_labels(1)] == 80 * 2**30
    assert got["llmlaunch_gpu_info"] == {
        gpu_labels(0, name="NVIDIA H100 80GB HBM3", uuid="GPU-0"): 1,
        gpu_labels(1, name="NVIDIA H100 80GB HBM3", uuid="GPU-1"): 1,
    }


def test_a_reading_the_gpu_does_not_support_is_left_out_not_zero():
    nvml = FakeNvml([FakeGpu(uuid="GPU-0", unsupported={"nvmlDeviceGetPowerUsage"}), FakeGpu(uuid="GPU-1")])
    got = collect(GpuCollector(LABELS, nvml=nvml, rank=0))
    assert set(got["llmlaunch_gpu_power_watts"]) == {gpu_labels(1)}
    assert set(got["llmlaunch_gpu_utilization_ratio"]) == {gpu_labels(0), gpu_labels(1)}
    every_gpu_unsupported = FakeNvml([FakeGpu(unsupported={"nvmlDeviceGetTemperature"})])
    assert "llmlaunch_gpu_temperature_celsius" not in collect(GpuCollector(LABELS, nvml=every_gpu_unsupported, rank=0))


def test_no_gpus_means_no_series():
    assert collect(GpuCollector(LABELS, nvml=None, rank=0)) == {}
    assert collect(GpuCollector(LABELS, nvml=FakeNvml([]), rank=0)) == {}


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
