"""GPU metrics for Prometheus, read from NVML (nvidia-ml-py) at scrape time.

A custom collector rather than gauges updated by the training loop: values are fresh at every
scrape, even while the loop is stuck, and nothing runs between scrapes. Only the GPUs of this node's
ranks are read, found by UUID (gpu_uuid + gather_node_gpus). On a machine without GPUs (or without
the NVIDIA driver) the collector yields nothing, so the series are absent rather than a misleading
zero; a reading a GPU does not support is left out the same way.
"""

from __future__ import annotations

import contextlib
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
    """The GPUs this node's ranks train on (NVML, labelled by UUID), plus CUDA allocator peaks per rank.

    `labels` are the node's constant labels (job, namespace, node_rank). `nvml` is an initialised
    pynvml-compatible module, or None for no GPUs; tests pass a fake one. Which GPUs: set_node_gpus()
    with each local rank's GPU UUID (gathered from the ranks: CUDA_VISIBLE_DEVICES may differ per rank,
    and NVML's index order need not be CUDA's). Until then, and on CPU runs, no GPU series: a node
    shared with other jobs must not export their GPUs as this job's.
    """

    def __init__(self, labels: dict[str, str], *, nvml: ModuleType | None, rank: int) -> None:
        self.labels = dict(labels)
        self.nvml = nvml
        self.rank = rank
        self.gathered_peaks: dict[int, float] = {}  # rank -> bytes, from the loop's all_gather
        self.node_gpus: dict[int, str] = {}  # rank -> GPU UUID, this node's ranks only

    def set_allocator_peaks(self, peaks_by_rank: dict[int, float]) -> None:
        self.gathered_peaks = dict(peaks_by_rank)

    def set_node_gpus(self, uuid_by_rank: dict[int, str]) -> None:
        self.node_gpus = dict(uuid_by_rank)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        if self.nvml is not None and self.node_gpus:
            yield from self._nvml_families()
        yield from self._allocator_family()

    def _family(self, name: str, doc: str, extra: tuple[str, ...] = ()) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, doc, labels=[*self.labels, *extra])

    def _nvml_families(self) -> Iterator[GaugeMetricFamily]:
        nv = self.nvml
        gpu = ("gpu",)
        info = self._family("llmlaunch_gpu_info", "GPU model per rank; gpu is the NVML UUID (value 1).",
                            ("gpu", "name", "rank"))
        util = self._family("llmlaunch_gpu_utilization_ratio",
                            "Fraction of time a kernel ran (NVML sample period).", gpu)
        used = self._family("llmlaunch_gpu_memory_used_bytes", "GPU memory in use, all processes.", gpu)
        total = self._family("llmlaunch_gpu_memory_total_bytes", "GPU memory installed.", gpu)
        power = self._family("llmlaunch_gpu_power_watts", "Power draw of the GPU.", gpu)
        temp = self._family("llmlaunch_gpu_temperature_celsius", "GPU core temperature.", gpu)
        clock = self._family("llmlaunch_gpu_sm_clock_hertz", "Current SM clock.", gpu)
        base = list(self.labels.values())
        done: set[str] = set()
        for rank, uuid in sorted(self.node_gpus.items()):
            try:
                handle = nv.nvmlDeviceGetHandleByUUID(uuid)
            except nv.NVMLError as e:
                log.warning("NVML handle of GPU %s (rank %d) failed: %s", uuid, rank, e)
                continue
            with contextlib.suppress(nv.NVMLError):
                info.add_metric([*base, uuid, _text(nv.nvmlDeviceGetName(handle)), str(rank)], 1.0)
            if uuid in done:  # two ranks on one GPU: its readings once
                continue
            done.add(uuid)
            labels = [*base, uuid]
            readings = (
                (util, lambda h: nv.nvmlDeviceGetUtilizationRates(h).gpu / 100.0),
                (used, lambda h: float(nv.nvmlDeviceGetMemoryInfo(h).used)),
                (total, lambda h: float(nv.nvmlDeviceGetMemoryInfo(h).total)),
                (power, lambda h: nv.nvmlDeviceGetPowerUsage(h) / 1000.0),  # milliwatts
                (temp, lambda h: float(nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU))),
                (clock, lambda h: nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM) * 1e6),  # MHz
            )
            for family, value in readings:
                # not supported on this GPU: leave the series out rather than report 0
                with contextlib.suppress(nv.NVMLError):
                    family.add_metric(labels, value(handle))
        yield from (f for f in (info, util, used, total, power, temp, clock) if f.samples)

    def _allocator_family(self) -> Iterator[GaugeMetricFamily]:
        peaks = dict(self.gathered_peaks)
        # Only when the trainer already loaded torch and CUDA is up: never import torch from a scrape.
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
            peaks[self.rank] = float(torch.cuda.max_memory_allocated())
        if not peaks:
            return
        # Labelled by rank; llmlaunch_gpu_info maps a rank to its GPU's UUID.
        family = self._family(
            "llmlaunch_cuda_max_memory_allocated_bytes",
            "Peak memory the CUDA caching allocator handed to tensors, per rank since start.",
            ("rank",),
        )
        for rank, value in sorted(peaks.items()):
            family.add_metric([*self.labels.values(), str(rank)], value)
        yield family


def gpu_uuid(device) -> str | None:
    """NVML's UUID ("GPU-<uuid>") of a torch device; None on a CPU. Torch is imported by the caller."""
    if getattr(device, "type", None) != "cuda":
        return None
    import torch

    return f"GPU-{torch.cuda.get_device_properties(device).uuid}"


def gather_node_gpus(uuid: str | None, node_rank: int) -> dict[int, str]:
    """Every rank's GPU UUID, gathered (a collective: every rank calls it); returns {rank: uuid} of the
    ranks on `node_rank`. The UUID, not a device index: each rank may see other devices."""
    import torch.distributed as dist

    everyone: list = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, (node_rank, uuid))
    return {rank: u for rank, (node, u) in enumerate(everyone) if node == node_rank and u is not None}


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
