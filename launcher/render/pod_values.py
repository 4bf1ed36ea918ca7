"""The values of a training pod, computed from a JobSpec; the templates only lay them out.

One function per part of the pod (env, volumes, resources, security), each a plain function of the
spec, so tests can check them against literal expectations.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from launcher.spec import names
from launcher.spec.torchrun import (
    PYTORCHJOB_PORT,
    PYTORCHJOB_RDZV_ENDPOINT,
    TRAIN_CONFIG_IN_POD,
    TRAINJOB_RDZV_ENDPOINT,
    agent_env,
    pod_torchrun,
)

if TYPE_CHECKING:  # annotations only: keeps the job models out of modules that only lay values out
    from launcher.spec.job_spec import JobSpec

CONFIG_DIR = TRAIN_CONFIG_IN_POD.rsplit("/", 1)[0]
SCRATCH = "/tmp"  # writable emptyDir; also HOME, since the image's filesystem is read-only
# Where the ServiceAccount admission plugin mounts the API token. A TrainJob's runtime patch cannot set
# automountServiceAccountToken; a container that already has a mount here gets no token (the plugin skips it,
# and adds no token volume when no container needs one), so an empty read-only volume takes its place.
SA_TOKEN_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def container_name(spec: JobSpec) -> str:
    """The operators inject PET_* only into the container with this name."""
    return names.TRAINJOB_REPLICATED_JOB if spec.cluster.api == "trainjob" else "pytorch"


def command(spec: JobSpec) -> list[str]:
    c = spec.cluster
    max_restarts = c.elastic.max_restarts if c.elastic else spec.train.run.max_restarts
    endpoint = TRAINJOB_RDZV_ENDPOINT if c.api == "trainjob" else PYTORCHJOB_RDZV_ENDPOINT
    nnodes = f"{c.elastic.min_nodes}:{c.elastic.max_nodes}" if c.elastic else str(c.nodes)
    cmd = pod_torchrun(
        nnodes, c.procs_per_node, max_restarts=max_restarts, rdzv_endpoint=None if c.elastic else endpoint
    )
    if c.api == "trainjob" and c.storage.enabled:
        # A TrainJob cannot set workingDir; coreutils' env changes directory without a shell.
        return ["env", f"--chdir={c.storage.mount_path}", *cmd]
    return cmd


def env(spec: JobSpec) -> list[dict[str, Any]]:
    """Plain variables first (NCCL_*, then env, each in name order, as the Helm chart can only iterate
    maps sorted), then the pod's namespace, then secretKeyRefs; secret values never appear in a manifest."""
    c = spec.cluster
    plain = {"LLMLAUNCH_JOB": spec.name, "HOME": SCRATCH, "PYTHONUNBUFFERED": "1",
             **agent_env(c.termination_grace_period_seconds),
             **dict(sorted(c.network.nccl.items())), **dict(sorted(c.env.items()))}
    out: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in plain.items()]
    # The metrics' namespace label, from the downward API.
    out.append({"name": "LLMLAUNCH_NAMESPACE", "field": "metadata.namespace"})
    for s in c.secrets:
        out.append({"name": s.env, "secret": s.secret, "key": s.key, "optional": s.optional})
    return out


def ports(spec: JobSpec) -> list[dict[str, Any]]:
    out = []
    if spec.cluster.api == "pytorchjob":
        out.append({"name": "pytorchjob-port", "port": PYTORCHJOB_PORT})
    if spec.train.metrics.enabled:
        out.append({"name": "metrics", "port": spec.train.metrics.port})
    return out


def resources(spec: JobSpec) -> dict[str, dict[str, Any]]:
    """Requests and limits; GPUs and RDMA devices are requested = limited, as extended resources must be."""
    r, c = spec.cluster.resources, spec.cluster
    requests: dict[str, Any] = {}
    limits: dict[str, Any] = {}
    if r.cpu is not None:
        requests["cpu"] = r.cpu
    if r.memory is not None:
        requests["memory"] = r.memory
    if r.ephemeral_storage is not None:
        requests["ephemeral-storage"] = r.ephemeral_storage
    if r.cpu_limit is not None:
        limits["cpu"] = r.cpu_limit
    if (r.memory_limit or r.memory) is not None:
        limits["memory"] = r.memory_limit or r.memory
    devices = {}
    if c.gpus_per_node:
        devices[r.gpu_resource] = c.gpus_per_node
    if c.network.rdma is not None:
        devices[c.network.rdma.resource] = c.network.rdma.count
    return {"requests": {**requests, **devices}, "limits": {**limits, **devices}}


def volumes(spec: JobSpec) -> list[dict[str, Any]]:
    """Each volume with its mount: the ConfigMap (read-only), /dev/shm, scratch and the data claim."""
    c = spec.cluster
    out: list[dict[str, Any]] = [
        {"name": "config", "config_map": names.config_map(spec.name), "path": CONFIG_DIR, "read_only": True},
        {"name": "scratch", "empty_dir": {}, "path": SCRATCH, "read_only": False},
    ]
    if c.resources.shm_size is not None:
        out.append({"name": "shm", "empty_dir": {"medium": "Memory", "sizeLimit": c.resources.shm_size},
                    "path": "/dev/shm", "read_only": False})
    if c.storage.enabled:
        claim = c.storage.claim or names.data_claim(spec.name)
        out.append({"name": "data", "claim": claim, "path": c.storage.mount_path, "read_only": False})
    if c.api == "trainjob":
        out.append({"name": "no-sa-token", "empty_dir": {}, "path": SA_TOKEN_DIR, "read_only": True})
    return out


def capabilities(spec: JobSpec) -> list[str]:
    """Added back to the dropped-ALL set: what the user asked for, plus IPC_LOCK for RDMA memory pinning."""
    add = list(spec.cluster.security.add_capabilities)
    if spec.cluster.network.rdma is not None and "IPC_LOCK" not in add:
        add.append("IPC_LOCK")
    return add


def pod_annotations(spec: JobSpec) -> dict[str, str]:
    out = dict(spec.cluster.annotations)
    if spec.train.metrics.enabled:
        out.update({"prometheus.io/scrape": "true", "prometheus.io/port": str(spec.train.metrics.port),
                    "prometheus.io/path": "/metrics"})
    return out


def pod(spec: JobSpec) -> dict[str, Any]:
    """Everything the pod template needs, in the order the template writes it."""
    c = spec.cluster
    sec = c.security
    return {
        "labels": names.common_labels(spec, "trainer"),
        "annotations": pod_annotations(spec),
        "service_account": c.service_account,
        "grace": c.termination_grace_period_seconds,
        "priority_class": c.scheduling.priority_class,
        "scheduler_name": c.scheduling.scheduler_name,
        "node_selector": c.scheduling.node_selector,
        "tolerations": [
            {k: v for k, v in {"key": t.key, "operator": t.operator, "value": t.value, "effect": t.effect,
                               "tolerationSeconds": t.toleration_seconds}.items() if v is not None}
            for t in c.scheduling.tolerations
        ],
        "affinity": c.scheduling.affinity,
        "image_pull_secrets": c.image_pull_secrets,
        "security": {"run_as_user": sec.run_as_user, "run_as_group": sec.run_as_group, "fs_group": sec.fs_group,
                     "read_only_root": sec.read_only_root_filesystem, "add": capabilities(spec)},
        "container": {
            "name": container_name(spec),
            "image": c.image,
            "pull_policy": c.image_pull_policy,
            "command": command(spec),
            "working_dir": c.storage.mount_path if c.storage.enabled and c.api == "pytorchjob" else None,
            "env": env(spec),
            "ports": ports(spec),
            "resources": resources(spec),
        },
        "volumes": volumes(spec),
    }
