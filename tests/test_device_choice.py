"""Which device and precision a trainer process picks: decided per rank, on the rank's own GPU."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from trainer.__main__ import local_gpu_capability
from trainer.config.ds_config import hide_gpus_when_forced, native_bf16, resolve_precision
from trainjobs import REPO


@pytest.mark.parametrize("capability,precision", [
    ((7, 0), "fp16"),  # V100: torch.cuda.is_bf16_supported() says True (emulated), far slower than fp16
    ((7, 5), "fp16"),  # T4
    ((8, 0), "bf16"),  # A100
    ((8, 9), "bf16"),  # L4 / L40S
    ((9, 0), "bf16"),  # H100 / H200
    ((10, 0), "bf16"),
])
def test_auto_precision_follows_compute_capability(capability, precision):
    assert resolve_precision("auto", has_gpu=True, gpu_has_bf16=native_bf16(capability)) == precision


def test_no_gpu_has_no_native_bf16():
    assert native_bf16(None) is False
    assert resolve_precision("auto", has_gpu=False, gpu_has_bf16=native_bf16(None)) == "fp32"


class RecordingCuda:
    """The three torch.cuda calls local_gpu_capability makes, for a node whose GPUs differ by index."""

    def __init__(self, capabilities: list[tuple[int, int]]):
        self.capabilities, self.current, self.calls = capabilities, 0, []

    def is_available(self) -> bool:
        return bool(self.capabilities)

    def set_device(self, index: int) -> None:
        self.calls.append(("set_device", index))
        self.current = index

    def get_device_capability(self, index: int | None = None) -> tuple[int, int]:
        self.calls.append(("get_device_capability", index))
        return self.capabilities[self.current if index is None else index]


def test_capability_is_read_for_the_ranks_own_gpu_after_set_device():
    cuda = RecordingCuda([(7, 0), (9, 0)])  # device 0 is a V100, local rank 1's an H100
    assert local_gpu_capability(cuda, 1) == (9, 0)
    assert cuda.calls == [("set_device", 1), ("get_device_capability", 1)]
    assert local_gpu_capability(RecordingCuda([]), 0) is None


def test_force_cpu_hides_gpus_from_the_trainer_process(tmp_path):
    env = {"LLMLAUNCH_FORCE_CPU": "1", "CUDA_VISIBLE_DEVICES": "0,1"}
    assert hide_gpus_when_forced(env) and env["CUDA_VISIBLE_DEVICES"] == "" and env["DS_ACCELERATOR"] == "cpu"
    untouched = {"CUDA_VISIBLE_DEVICES": "0"}
    assert not hide_gpus_when_forced(untouched) and untouched == {"CUDA_VISIBLE_DEVICES": "0"}
    # The trainer's entrypoint applies it before anything imports torch (a config error stops it early).
    snippet = ("import json, os, sys; from trainer.__main__ import main; code = main(['--config', sys.argv[1]]); "
               "print(json.dumps([code, os.environ.get('CUDA_VISIBLE_DEVICES'), os.environ.get('DS_ACCELERATOR')]))")
    result = subprocess.run([sys.executable, "-c", snippet, str(tmp_path / "missing.yaml")], cwd=REPO,
                            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "LLMLAUNCH_FORCE_CPU": "1",
                                 "CUDA_VISIBLE_DEVICES": "0"}, capture_output=True, text=True, timeout=120)
    assert json.loads(result.stdout.splitlines()[-1]) == [2, "", "cpu"], result.stderr
