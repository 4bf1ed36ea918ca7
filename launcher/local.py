"""Local runs: the same trainer entrypoint the pods run, started by torchrun on this machine."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from launcher.spec import JobSpec
from launcher.torchrun import local_torchrun
from trainer.ds_config import build_ds_config, machine_has_gpu
from trainer.preflight import run_preflight


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gpu_count() -> int:
    if not machine_has_gpu():
        return 0
    return sum(1 for p in Path("/dev").glob("nvidia[0-9]*"))


def prepare_run_dir(spec: JobSpec, world_size: int, precision: str) -> Path:
    """Write the resolved train.yaml and ds_config.json that the trainer will read."""
    out = Path(spec.train.run.output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    train = spec.train.model_copy(deep=True)
    train.run.output_dir = str(out)
    (out / "train.yaml").write_text(train.to_yaml())
    ds = build_ds_config(train, world_size, precision)
    (out / "ds_config.json").write_text(json.dumps(ds, indent=2, sort_keys=True) + "\n")
    return out


def run_local(spec: JobSpec, nodes: int = 1, nproc_per_node: int | None = None) -> int:
    """Run the job with `nodes` torchrun agents here; returns the trainers' exit code."""
    gpus = gpu_count()
    nproc = nproc_per_node or max(gpus, 1)
    world = nodes * nproc
    precision = run_preflight(spec.train, world_size=world, has_gpu=gpus > 0)
    out = prepare_run_dir(spec, world, precision)
    env = dict(os.environ, LLMLAUNCH_JOB=spec.name, LLMLAUNCH_LOCAL_RUN="1", PYTHONUNBUFFERED="1")
    # Share the cores between the processes (torchrun would otherwise pin each to 1 thread and say so).
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // world)))
    port = free_port()
    agents = [
        subprocess.Popen(
            local_torchrun(sys.executable, str(out / "train.yaml"), nnodes=nodes, nproc_per_node=nproc,
                           node_rank=rank, rdzv_port=port, run_id=spec.name),
            env=dict(env, LLMLAUNCH_NODE_RANK=str(rank)),
        )
        for rank in range(nodes)
    ]
    try:
        codes = [agent.wait() for agent in agents]
    except KeyboardInterrupt:
        # Ctrl-C: pass SIGTERM on so the trainers can write their emergency checkpoint.
        for agent in agents:
            agent.send_signal(signal.SIGTERM)
        codes = [agent.wait() for agent in agents]
    return next((c for c in codes if c != 0), 0)
