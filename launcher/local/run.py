"""Local runs: the same trainer entrypoint the pods run, started by torchrun on this machine."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from launcher.errors import RuntimeFailure
from launcher.local.nodes import LocalNodes, Node
from launcher.local.ports import free_port
from launcher.spec.job_spec import JobSpec
from launcher.spec.torchrun import agent_env, local_torchrun, operator_env
from trainer.config.ds_config import build_ds_config, machine_has_gpu
from trainer.training.preflight import run_preflight

LOCAL_SHUTDOWN_TIMEOUT_S = 120  # no kubelet here: how long SIGTERM'd trainers get for their emergency checkpoint


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
    """Run the job with `nodes` torchrun agents here, rendezvousing as pods do; returns their exit code.

    Raises RuntimeFailure when the run was stopped by SIGTERM / Ctrl-C (after its emergency checkpoint).
    """
    gpus = gpu_count()
    nproc = nproc_per_node or max(gpus, 1)
    world = nodes * nproc
    precision = run_preflight(spec.train, world_size=world, has_gpu=gpus > 0)
    out = prepare_run_dir(spec, world, precision)
    run = spec.train.run
    env = dict(os.environ, LLMLAUNCH_JOB=spec.name, LLMLAUNCH_LOCAL_RUN="1", PYTHONUNBUFFERED="1")
    # Share the cores between the processes (torchrun would otherwise pin each to 1 thread and say so).
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // world)))
    env.update(agent_env(LOCAL_SHUTDOWN_TIMEOUT_S))
    port = free_port()
    local_nodes = []
    for rank in range(nodes):
        node_env = dict(env, **operator_env(nnodes=nodes, node_rank=rank, nproc_per_node=nproc,
                                            master_addr="127.0.0.1", master_port=port))
        # In a cluster only the master pod's address is MASTER_ADDR, so it alone hosts the rendezvous
        # store; here every node has that address, so say which one does.
        node_env["PET_RDZV_CONF"] = f"is_host={int(rank == 0)}"
        command = local_torchrun(sys.executable, str(out / "train.yaml"), node_env, nnodes=nodes,
                                 nproc_per_node=nproc, max_restarts=run.max_restarts)
        local_nodes.append(Node(rank, command, node_env))
    group = LocalNodes(local_nodes, restarts=run.max_restarts)
    code = group.run()
    if group.stopped_by is not None:
        raise RuntimeFailure(f"stopped by {group.stopped_by}; checkpoints are in {out / 'checkpoints'} and "
                             f"the same command resumes from the latest one")
    return code
