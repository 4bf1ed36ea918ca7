"""The torchrun command line, shared by local runs and the pods' container command.

Both start one torchrun agent per node with c10d rendezvous; only where the topology comes from
differs (flags here, the operator's PET_* variables in a pod).
"""

from __future__ import annotations

TRAIN_CONFIG_IN_POD = "/etc/llmlaunch/train.yaml"


def trainer_args(config_path: str) -> list[str]:
    return ["-m", "trainer", "--config", config_path]


def local_torchrun(
    python: str, config_path: str, *, nnodes: int, nproc_per_node: int, node_rank: int, rdzv_port: int, run_id: str
) -> list[str]:
    """One local 'node': a torchrun agent that rendezvouses on 127.0.0.1 like the pods do."""
    return [
        python, "-m", "torch.distributed.run",
        f"--nnodes={nnodes}",
        f"--nproc-per-node={nproc_per_node}",
        f"--node-rank={node_rank}",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint=127.0.0.1:{rdzv_port}",
        f"--rdzv-id={run_id}",
        "--max-restarts=0",
        *trainer_args(config_path),
    ]


# Expanded by the kubelet from the variables the operator injects into the container: every
# training-operator v1 release sets MASTER_ADDR/MASTER_PORT (<job>-master-0:23456) when the job has a
# Master; Kubeflow Trainer v2's torch plugin sets PET_MASTER_ADDR/PET_MASTER_PORT.
PYTORCHJOB_RDZV_ENDPOINT = "$(MASTER_ADDR):$(MASTER_PORT)"
TRAINJOB_RDZV_ENDPOINT = "$(PET_MASTER_ADDR):$(PET_MASTER_PORT)"


def pod_torchrun(nnodes: str, nproc_per_node: int, max_restarts: int = 0,
                 rdzv_endpoint: str | None = PYTORCHJOB_RDZV_ENDPOINT) -> list[str]:
    """The container command. `nnodes` is "N", or "MIN:MAX" for elastic jobs; written out rather than
    read from PET_NNODES, which older operators do not set.

    c10d needs an explicit endpoint (without one every pod would host its own store on localhost
    and wait forever); the master pod hosts it. Elastic jobs pass None: the operator sets
    PET_RDZV_ENDPOINT to its first worker.
    """
    rdzv = [f"--rdzv-endpoint={rdzv_endpoint}"] if rdzv_endpoint else []
    return [
        "torchrun",
        f"--nnodes={nnodes}",
        f"--nproc-per-node={nproc_per_node}",
        "--rdzv-backend=c10d",
        *rdzv,
        f"--max-restarts={max_restarts}",
        *trainer_args(TRAIN_CONFIG_IN_POD),
    ]
