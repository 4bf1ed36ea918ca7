"""bench/gpu_check.sh --cpu-smoke from a clean copy of the checkout, in a venv without llmlaunch's
editable install, from another working directory: every step of the GPU check runs, on the CPU."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from trainjobs import REPO


def venv_without_editable_finder(where: Path) -> Path:
    """A venv that sees this interpreter's packages through a plain path entry: .pth files there (the
    editable finder of llmlaunch among them) are not run, so `import trainer` works only from sys.path."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True)
    python = where / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    Path(purelib, "shared_packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def clean_checkout(where: Path) -> Path:
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if (REPO / name).is_file():
            (where / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, where / name)
    return where


@pytest.mark.distributed
def test_gpu_check_runs_end_to_end_in_cpu_smoke_mode(tmp_path):
    python = venv_without_editable_finder(tmp_path / "venv")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    probe = subprocess.run([str(python), "-c", "import trainer"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert "No module named 'trainer'" in probe.stderr  # the venv really has no editable install
    checkout = clean_checkout(tmp_path / "checkout")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = elsewhere / "check.json"
    result = subprocess.run(["bash", str(checkout / "bench" / "gpu_check.sh"), "--cpu-smoke", "--out", str(out)],
                            cwd=elsewhere, env={**env, "PYTHON": str(python), "LLMLAUNCH_FORCE_CPU": "1"},
                            capture_output=True, text=True, timeout=900)
    assert out.is_file(), result.stderr[-4000:]
    report = json.loads(out.read_text())
    assert result.returncode == 0 and report["ok"], json.dumps(report, indent=1)[-6000:]
    assert report["cpu_smoke"] and report["versions"]["deepspeed"][0].isdigit()
    mfu = report["mfu"]
    assert mfu["cpu_smoke"]
    assert mfu["llmlaunch"]["useful_tokens_per_s"] > 0 and mfu["hf_trainer"]["useful_tokens_per_s"] > 0
    assert mfu["lora"]["useful_tokens_per_s"] > 0
    assert 0 < mfu["model"]["attention_length"] < mfu["model"]["seq_len"]  # packed documents, not seq_len
    assert report["fp16"]["steps"] >= 2 and report["fp16"]["loss_last"] < report["fp16"]["loss_first"]
    gpus = {s["labels"]["gpu"] for s in report["nvml"]["idle"] if s["name"] == "llmlaunch_gpu_power_watts"}
    assert gpus == {"GPU-0", "GPU-1"}  # the fake NVML's two GPUs, labelled by UUID
    kernels = report["packed_attention"]["kernels"]
    assert set(kernels) == {"sdpa", "eager", "flex_attention"} and all(k["same_as_alone"] for k in kernels.values())
