"""The torchrun command line, shared by local runs and the pods' container command.

Both start one torchrun agent per node with c10d rendezvous at $(MASTER_ADDR):$(MASTER_PORT). In a pod
the training operator injects those variables and the kubelet expands them; a local run injects the
same variables itself (operator_env) and expands the same command (local_torchrun), so a multi-node
job rendezvouses on a laptop exactly as it will in the cluster.
"""

from __future__ import annotations

import re

TRAIN_CONFIG_IN_POD = "/etc/llmlaunch/train.yaml"
# Expanded by the kubelet ($(VAR): the container's variable VAR) from the variables the operator
# injects: every training-operator v1 release sets MASTER_ADDR/MASTER_PORT (<job>-master-0:23456)
# when the job has a Master; Kubeflow Trainer v2's torch plugin sets PET_MASTER_ADDR/PET_MASTER_PORT.
PYTORCHJOB_RDZV_ENDPOINT = "$(MASTER_ADDR):$(MASTER_PORT)"
TRAINJOB_RDZV_ENDPOINT = "$(PET_MASTER_ADDR):$(PET_MASTER_PORT)"
PYTORCHJOB_PORT = 23456  # the operator's default rendezvous port (container port "pytorchjob-port")
TRAINJOB_PORT = 29400  # PET_MASTER_PORT of the torch-distributed runtime


def trainer_args(config_path: str) -> list[str]:
    return ["-m", "trainer", "--config", config_path]


def torchrun_args(*, nnodes: str | int, nproc_per_node: int, rdzv_endpoint: str | None, max_restarts: int,
                  config_path: str) -> list[str]:
    """Everything after `torchrun`: one agent per node, c10d rendezvous, worker-group restarts.

    --max-restarts lets the agent bring the whole group back (every node re-rendezvouses and the
    trainer resumes from the latest complete checkpoint) when a rank or a node dies.
    """
    endpoint = [f"--rdzv-endpoint={rdzv_endpoint}"] if rdzv_endpoint else []
    return [
        f"--nnodes={nnodes}",
        f"--nproc-per-node={nproc_per_node}",
        "--rdzv-backend=c10d",
        *endpoint,
        f"--max-restarts={max_restarts}",
        *trainer_args(config_path),
    ]


def pod_torchrun(nnodes: str | int, nproc_per_node: int, max_restarts: int = 0,
                 rdzv_endpoint: str | None = PYTORCHJOB_RDZV_ENDPOINT) -> list[str]:
    """The container command. `nnodes` is "N", or "MIN:MAX" for elastic jobs; written out rather than
    read from PET_NNODES, which older operators do not set.

    c10d needs an explicit endpoint (without one every pod would host its own store on localhost
    and wait forever); the master pod hosts it. Elastic jobs pass None: the operator sets
    PET_RDZV_ENDPOINT to its first worker.
    """
    return ["torchrun", *torchrun_args(nnodes=nnodes, nproc_per_node=nproc_per_node, rdzv_endpoint=rdzv_endpoint,
                                       max_restarts=max_restarts, config_path=TRAIN_CONFIG_IN_POD)]


def operator_env(
    *, nnodes: int, node_rank: int, nproc_per_node: int, master_addr: str, master_port: int
) -> dict[str, str]:
    """The variables the Kubeflow training operator injects into pod `node_rank` of a PyTorchJob.

    MASTER_* / WORLD_SIZE / RANK describe pods (torchrun rewrites RANK and WORLD_SIZE for its workers);
    torchrun reads PET_* as defaults of its own flags.
    """
    return {
        "MASTER_ADDR": master_addr, "MASTER_PORT": str(master_port),
        "WORLD_SIZE": str(nnodes), "RANK": str(node_rank),
        "PET_MASTER_ADDR": master_addr, "PET_MASTER_PORT": str(master_port),
        "PET_NNODES": str(nnodes), "PET_NODE_RANK": str(node_rank), "PET_NPROC_PER_NODE": str(nproc_per_node),
    }


def agent_env(shutdown_timeout_s: int) -> dict[str, str]:
    """Variables every torchrun agent of a job needs, in a pod or here.

    TORCH_DISABLE_SHARE_RDZV_TCP_STORE: with the rendezvous store shared with the workers (torch's
    default since 2.4) a node that is replaced never gets the new round's MASTER_ADDR and the group
    cannot restart (pytorch/pytorch#135712); measured here: the new round timed out after 60 s.
    TORCH_ELASTIC_SHUTDOWN_TIMEOUT: after SIGTERM torchrun waits this long for its workers (writing
    their emergency checkpoint) before SIGKILL; its default, 30 s, is short for a large checkpoint.
    A pod sets it to its termination grace period. Older torchrun ignores both.
    """
    return {"TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1", "TORCH_ELASTIC_SHUTDOWN_TIMEOUT": str(shutdown_timeout_s)}


def expand(arg: str, env: dict[str, str]) -> str:
    """$(VAR) -> env[VAR], as the kubelet expands a container command (unknown names stay as written)."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), arg)


def local_torchrun(python: str, config_path: str, env: dict[str, str], *, nnodes: int, nproc_per_node: int,
                   max_restarts: int) -> list[str]:
    """One local 'node': the pod's command, run by this Python, expanded with the node's operator_env."""
    pod = pod_torchrun(nnodes, nproc_per_node, max_restarts=max_restarts)
    args = [expand(a, env) for a in pod[1:]]
    args[-1] = config_path  # the run directory's train.yaml instead of the ConfigMap's mount
    return [python, "-m", "torch.distributed.run", *args]
