"""The whole estimate against peak memory measured on this CPU: real DeepSpeed runs (2 ranks, fp32) of a
26 M-parameter Llama under each preset, and with gradient checkpointing (tests/memory_driver.py).

On a CPU there is no device allocator to ask, so the driver reads the kernel's resident high-water mark.
glibc's malloc would keep freed blocks mapped (resident, counted) after a tensor dies, which a GPU's
allocator statistics would not count; MALLOC_MMAP_THRESHOLD_=65536 gives every tensor above 64 KiB a
mapping of its own, returned when it is freed, so the mark follows live tensors. Offloaded states live
in the same memory here, so the comparison adds `offload_gib` to the estimate.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from launcher.estimate.memory import GIB, estimate
from launcher.spec.load import load_job
from trainjobs import REPO, tiny_job

pytestmark = pytest.mark.distributed

MODEL = {"model_type": "llama", "vocab_size": 8192, "hidden_size": 512, "intermediate_size": 1408,
         "num_hidden_layers": 6, "num_attention_heads": 8, "num_key_value_heads": 4,
         "max_position_embeddings": 512, "tie_word_embeddings": False}


@pytest.mark.parametrize("preset,checkpointing", [
    ("zero0", False), ("zero1", False), ("zero2", False), ("zero3", False), ("zero3-offload", False),
    ("zero2", True),
])
def test_estimate_within_25_percent_of_measured_peak(tmp_path, preset, checkpointing):
    job = tiny_job(tmp_path, model={"config": MODEL, "gradient_checkpointing": checkpointing},
                   deepspeed={"preset": preset}, data={"seq_len": 256}, run={"micro_batch_size": 4})
    spec = load_job(job)
    spec = spec.model_copy(update={"cluster": spec.cluster.model_copy(update={"nodes": 2, "gpus_per_node": 0})})
    plan = estimate(spec)  # 2 CPU ranks, fp32: exactly what the driver runs
    (tmp_path / "train.yaml").write_text(spec.train.to_yaml())
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", DS_ACCELERATOR="cpu",
               MALLOC_MMAP_THRESHOLD_="65536")
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                             str(REPO / "tests" / "memory_driver.py"), str(tmp_path / "train.yaml"), str(tmp_path)],
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    measured = max(json.loads((tmp_path / f"rank{r}.json").read_text())["delta_bytes"] for r in (0, 1)) / GIB
    expected = plan["total_gib"] + plan["offload_gib"]
    print(f"{preset}{' +checkpointing' if checkpointing else ''}: estimated {expected:.3f} GiB "
          f"(params {plan['params_gib']:.3f}, grads {plan['grads_gib']:.3f}, optimizer {plan['optimizer_gib']:.3f}, "
          f"activations {plan['activations_gib']:.3f}, buffers {plan['buffers_gib']:.3f}, offload "
          f"{plan['offload_gib']:.3f}), measured {measured:.3f} GiB, ratio {measured / expected:.2f}")
    assert expected == pytest.approx(measured, rel=0.25)
