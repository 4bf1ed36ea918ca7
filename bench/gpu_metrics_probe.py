"""Real NVML readings through trainer.observability.gpu_metrics, as JSON. Run on a machine with an NVIDIA GPU:

    python bench/gpu_metrics_probe.py [--load-seconds 5]
    python bench/gpu_metrics_probe.py --fake-nvml   # CPU smoke: the same path over tests/fake_nvml.py

With torch + CUDA present it first keeps every GPU busy with matmuls for --load-seconds, so
utilization, power and clocks show a working GPU, and the CUDA allocator peak is non-zero.
Never run in CI (no GPU there); exits 1 with a JSON error where NVML is missing.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from trainer.observability.gpu_metrics import GpuCollector, gpu_uuid, load_nvml  # noqa: E402


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else value


def busy(seconds: float) -> None:
    """bf16 matmuls on every visible GPU until `seconds` pass."""
    import torch

    tensors = [
        torch.randn(8192, 8192, device=f"cuda:{i}", dtype=torch.bfloat16) for i in range(torch.cuda.device_count())
    ]
    end = time.time() + seconds
    while time.time() < end:
        for t in tensors:
            t @ t
    for i in range(torch.cuda.device_count()):
        torch.cuda.synchronize(i)


def scrape(collector: GpuCollector) -> list[dict]:
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    return [{"name": s.name, "labels": s.labels, "value": s.value}
            for family in text_string_to_metric_families(text) for s in family.samples]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--load-seconds", type=float, default=5.0)
    ap.add_argument("--fake-nvml", action="store_true", help="tests/fake_nvml.py's two GPUs (no GPU here)")
    args = ap.parse_args()
    if args.fake_nvml:
        from tests.fake_nvml import two_gpus

        nvml = two_gpus()
        nvml.nvmlSystemGetDriverVersion = lambda: "fake"
    else:
        nvml = load_nvml()
    if nvml is None:
        print(json.dumps({"error": "NVML not available (no NVIDIA driver or GPU)"}))
        return 1
    try:
        import torch

        have_cuda = torch.cuda.is_available() and not args.fake_nvml
    except ImportError:
        have_cuda = False
    collector = GpuCollector({"job": "probe", "node_rank": "0"}, nvml=nvml, rank=0)
    # This process's CUDA devices as the trainer would map them (device i = "rank" i), else every NVML GPU.
    if have_cuda:
        collector.set_node_gpus({i: gpu_uuid(torch.device("cuda", i)) for i in range(torch.cuda.device_count())})
    else:
        count = nvml.nvmlDeviceGetCount()
        collector.set_node_gpus(
            {i: _text(nvml.nvmlDeviceGetUUID(nvml.nvmlDeviceGetHandleByIndex(i))) for i in range(count)}
        )
    idle = scrape(collector)
    loaded: list[dict] = []
    if have_cuda and args.load_seconds > 0:
        worker = threading.Thread(target=busy, args=(args.load_seconds,))
        worker.start()
        time.sleep(args.load_seconds / 2)
        loaded = scrape(collector)  # mid-load; allocator peak of this process included
        worker.join()
    print(json.dumps({
        "driver": nvml.nvmlSystemGetDriverVersion(),
        "gpus": nvml.nvmlDeviceGetCount(),
        "idle": idle,
        "under_load": loaded,
    }, indent=2, default=str))
    nvml.nvmlShutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
