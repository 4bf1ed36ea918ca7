"""GPU metrics for Prometheus, read from NVML (nvidia-ml-py) at scrape time.

A custom collector rather than gauges updated by the training loop: values are fresh at every
scrape, even while the loop is stuck, and nothing runs between scrapes. On a machine without
GPUs (or without the NVIDIA driver) the collector yields nothing, so the series are absent rather
than a misleading zero; a reading a GPU does not support is left out the same way.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from types import ModuleType

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

GPU_METRICS = (
    "llmlaunch_gpu_info",
    "llmlaunch_gpu_utilization_ratio",
    "llmlaunch_gpu_memory_used_bytes",
    "llmlaunch_gpu_memory_total_bytes",
    "llmlaunch_gpu_power_watts",
    "llmlaunch_gpu_temperature_celsius",
    "llmlaunch_gpu_sm_clock_hertz",
    "llmlaunch_cuda_max_memory_allocated_bytes",
)


def load_nvml() -> ModuleType | None:
    """pynvml initialised, or None where there is no NVIDIA driver / library."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml
    except Exception as e:  # ImportError, NVMLError_LibraryNotFound, NVMLError_DriverNotLoaded, ...
        log.info("no NVML (%s): GPU metrics are not exported", e)
        return None


class GpuCollector(Collector):
    """Every GPU NVML sees on this node (labels + gpu index), plus CUDA allocator peaks per rank.

    `labels` are the node's constant labels (job, namespace, node_rank). `nvml` is an initialised
    pynvml-compatible module, or None for no GPUs; tests pass a fake one.
    """

    def __init__(self, labels: dict[str, str], *, nvml: ModuleType | None, rank: int) -> None:
        self.labels = dict(labels)
        self.nvml = nvml
        self.rank = rank
        self.gathered_peaks: dict[int, float] = {}  # rank -> bytes, from the loop's all_gather

    def set_allocator_peaks(self, peaks_by_rank: dict[int, float]) -> None:
        self.gathered_peaks = dict(peaks_by_rank)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        if self.nvml is not None:
            yield from self._nvml_families()
        yield from self._allocator_family()

    def _family(self, name: str, doc: str, extra: tuple[str, ...] = ()) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, doc, labels=[*self.labels, *extra])

    def _nvml_families(self) -> Iterator[GaugeMetricFamily]:
        nv = self.nvml
        try:
            count = nv.nvmlDeviceGetCount()
        except nv.NVMLError as e:
            log.warning("NVML device count failed: %s", e)
            return
        gpu = ("gpu",)
        info = self._family("llmlaunch_gpu_info", "GPU model and UUID (value 1).", ("gpu", "name", "uuid"))
        util = self._family("llmlaunch_gpu_utilization_ratio", "Fraction of time a kernel ran (NVML sample period).", gpu)
        used = self._family("llmlaunch_gpu_memory_used_bytes", "GPU memory in use, all processes.", gpu)
        total = self._family("llmlaunch_gpu_memory_total_bytes", "GPU memory installed.", gpu)
        power = self._family("llmlaunch_gpu_power_watts", "Power draw of the GPU.", gpu)
        temp = self._family("llmlaunch_gpu_temperature_celsius", "GPU core temperature.", gpu)
        clock = self._family("llmlaunch_gpu_sm_clock_hertz", "Current SM clock.", gpu)
        base = list(self.labels.values())
        for index in range(count):
            labels = [*base, str(index)]
            try:
                handle = nv.nvmlDeviceGetHandleByIndex(index)
            except nv.NVMLError as e:
                log.warning("NVML handle of GPU %d failed: %s", index, e)
                continue
            readings = (
                (info, lambda: 1.0, lambda: [_text(nv.nvmlDeviceGetName(handle)), _text(nv.nvmlDeviceGetUUID(handle))]),
                (util, lambda: nv.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0, list),
                (used, lambda: float(nv.nvmlDeviceGetMemoryInfo(handle).used), list),
                (total, lambda: float(nv.nvmlDeviceGetMemoryInfo(handle).total), list),
                (power, lambda: nv.nvmlDeviceGetPowerUsage(handle) / 1000.0, list),  # milliwatts
                (temp, lambda: float(nv.nvmlDeviceGetTemperature(handle, nv.NVML_TEMPERATURE_GPU)), list),
                (clock, lambda: nv.nvmlDeviceGetClockInfo(handle, nv.NVML_CLOCK_SM) * 1e6, list),  # MHz
            )
            for family, value, extra in readings:
                try:
                    family.add_metric([*labels, *extra()], value())
                except nv.NVMLError:
                    pass  # not supported on this GPU: leave the series out rather than report 0
        yield from (f for f in (info, util, used, total, power, temp, clock) if f.samples)

    def _allocator_family(self) -> Iterator[GaugeMetricFamily]:
        peaks = dict(self.gathered_peaks)
        # Only when the trainer already loaded torch and CUDA is up: never import torch from a scrape.
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
            peaks[self.rank] = float(torch.cuda.max_memory_allocated())
        if not peaks:
            return
        # Labelled by rank, not gpu: CUDA's device order need not match NVML's index.
        family = self._family(
            "llmlaunch_cuda_max_memory_allocated_bytes",
            "Peak memory the CUDA caching allocator handed to tensors, per rank since start.",
            ("rank",),
        )
        for rank, value in sorted(peaks.items()):
            family.add_metric([*self.labels.values(), str(rank)], value)
        yield family


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
