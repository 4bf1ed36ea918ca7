"""A stand-in for pynvml (nvidia-ml-py) on machines without an NVIDIA GPU or driver.

This is a mock, used only because NVML cannot run here (no GPU): it answers the few pynvml calls
trainer.observability.gpu_metrics makes, with pynvml's names, constants and units (milliwatts, MHz, percent,
bytes). test_gpu_metrics.py checks that every name it defines exists in the real pynvml, so the
fake cannot drift from the real API unnoticed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

NVML_TEMPERATURE_GPU = 0
NVML_CLOCK_SM = 1


class NVMLError(Exception):
    pass


class NVMLError_NotSupported(NVMLError):  # noqa: N801 (pynvml's name)
    pass


@dataclass
class FakeGpu:
    name: str = "NVIDIA H100 80GB HBM3"
    uuid: str = "GPU-00000000-0000-0000-0000-000000000000"
    utilization_percent: int = 97
    memory_used: int = 61 * 2**30
    memory_total: int = 80 * 2**30
    power_milliwatts: int = 612_500
    temperature_celsius: int = 67
    sm_clock_mhz: int = 1980
    unsupported: set[str] = field(default_factory=set)  # pynvml function names that raise NotSupported


class FakeNvml(SimpleNamespace):
    """pynvml-shaped object over a list of FakeGpu; pass it where trainer code takes `nvml`."""

    NVML_TEMPERATURE_GPU = NVML_TEMPERATURE_GPU
    NVML_CLOCK_SM = NVML_CLOCK_SM
    NVMLError = NVMLError
    NVMLError_NotSupported = NVMLError_NotSupported

    def __init__(self, gpus: list[FakeGpu]) -> None:
        super().__init__()
        self.gpus = gpus
        self.initialised = False

    def _gpu(self, handle: int, call: str) -> FakeGpu:
        gpu = self.gpus[handle]
        if call in gpu.unsupported:
            raise NVMLError_NotSupported(call)
        return gpu

    def nvmlInit(self) -> None:  # noqa: N802 (pynvml's names from here on)
        self.initialised = True

    def nvmlShutdown(self) -> None:  # noqa: N802
        self.initialised = False

    def nvmlDeviceGetCount(self) -> int:  # noqa: N802
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:  # noqa: N802
        if not 0 <= index < len(self.gpus):
            raise NVMLError(f"invalid index {index}")
        return index

    def nvmlDeviceGetHandleByUUID(self, uuid: str | bytes) -> int:  # noqa: N802
        uuid = uuid.decode() if isinstance(uuid, bytes) else uuid
        for index, gpu in enumerate(self.gpus):
            if gpu.uuid == uuid:
                return index
        raise NVMLError(f"no GPU with UUID {uuid}")

    def nvmlDeviceGetName(self, handle: int) -> str:  # noqa: N802
        return self._gpu(handle, "nvmlDeviceGetName").name

    def nvmlDeviceGetUUID(self, handle: int) -> str:  # noqa: N802
        return self._gpu(handle, "nvmlDeviceGetUUID").uuid

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> SimpleNamespace:  # noqa: N802
        gpu = self._gpu(handle, "nvmlDeviceGetUtilizationRates")
        return SimpleNamespace(gpu=gpu.utilization_percent, memory=40)

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> SimpleNamespace:  # noqa: N802
        gpu = self._gpu(handle, "nvmlDeviceGetMemoryInfo")
        return SimpleNamespace(total=gpu.memory_total, used=gpu.memory_used, free=gpu.memory_total - gpu.memory_used)

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:  # noqa: N802
        return self._gpu(handle, "nvmlDeviceGetPowerUsage").power_milliwatts

    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> int:  # noqa: N802
        assert sensor == NVML_TEMPERATURE_GPU
        return self._gpu(handle, "nvmlDeviceGetTemperature").temperature_celsius

    def nvmlDeviceGetClockInfo(self, handle: int, clock: int) -> int:  # noqa: N802
        assert clock == NVML_CLOCK_SM
        return self._gpu(handle, "nvmlDeviceGetClockInfo").sm_clock_mhz


def two_gpus() -> FakeNvml:
    """The fake node the e2e driver and unit tests use: two busy H100s."""
    return FakeNvml(
        [
            FakeGpu(uuid="GPU-0", utilization_percent=97, power_milliwatts=612_500),
            FakeGpu(uuid="GPU-1", utilization_percent=88, power_milliwatts=598_000, temperature_celsius=71),
        ]
    )
