"""The sections of the job file's `cluster` part: resources, storage, secrets, scheduling, elastic,
run policy, network, security, monitoring. ClusterSpec (cluster_spec.py) puts them together and
checks the rules that span sections.
"""

import posixpath
import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from launcher.spec.k8s_types import (
    INT32_MAX,
    INT64_MAX,
    Capability,
    DnsName,
    Duration,
    EnvName,
    ExtraLabels,
    Labels,
    Quantity,
    ResourceName,
    StrDict,
    has_control_character,
)
from trainer.config.section import Section


class Resources(Section):
    """What one pod (one node) asks the scheduler for."""

    cpu: Quantity | None = Field("4", description="CPU request per pod (e.g. 8, 500m); None leaves it unset.")
    memory: Quantity | None = Field("16Gi", description="Memory request per pod.")
    cpu_limit: Quantity | None = Field(
        None, description="CPU limit; unset by default because a CFS quota throttles data loading."
    )
    memory_limit: Quantity | None = Field(
        None, description="Memory limit; defaults to `memory`, so a leak kills this pod, not its neighbours."
    )
    gpu_resource: ResourceName = Field(
        "nvidia.com/gpu", description="Extended resource name of a GPU (e.g. amd.com/gpu); requests = limits."
    )
    shm_size: Quantity | None = Field(
        "8Gi", description="Size of /dev/shm (a memory emptyDir) for DataLoader workers and NCCL; None = none."
    )
    ephemeral_storage: Quantity | None = Field(None, description="Ephemeral storage request (local scratch).")


# Mounting the volume on (or above) these would hide what the container needs: the image's system
# directories, the config mount (/etc/llmlaunch), the scratch emptyDir (/tmp, also HOME), /dev/shm.
SYSTEM_DIRS = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc",
               "/root", "/run", "/sbin", "/sys", "/tmp", "/usr", "/var")
KERNEL_DIRS = ("/dev", "/etc", "/proc", "/sys")  # nothing may be mounted below these either


def mount_path_problem(path: str) -> str | None:
    """Why `path` cannot be the volume's mount point, or None: it must be absolute, normalised, and
    neither be nor contain a system directory, nor lie under /dev, /etc, /proc or /sys."""
    if not path.startswith("/") or has_control_character(path) or ":" in path:
        return "must be an absolute path without control characters or ':'"
    if posixpath.normpath(path) != path or path.startswith("//"):
        return f"must be normalised (write {posixpath.normpath('/' + path.lstrip('/'))!r})"
    for system in SYSTEM_DIRS:
        if path == "/" or system == path or system.startswith(path + "/"):
            return f"would hide the container's {system}; choose a directory of its own such as /workspace"
    for kernel in KERNEL_DIRS:
        if path.startswith(kernel + "/"):
            return f"lies under {kernel}; choose a directory of its own such as /workspace"
    return None


class Storage(Section):
    """A PersistentVolumeClaim for data and checkpoints: an existing claim, or one created with the job."""

    claim: DnsName | None = Field(None, description="Use this existing PVC (not created or deleted by llmlaunch).")
    size: Quantity | None = Field(None, description="Create a PVC `<name>-data` of this size (e.g. 500Gi).")
    storage_class: DnsName | None = Field(
        None, description="Storage class of the created PVC (default class if unset)."
    )
    access_mode: Literal["ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod"] = Field(
        "ReadWriteMany", description="Several nodes write checkpoints at once, so multi-node jobs need ReadWriteMany."
    )
    keep: bool = Field(
        False, description="Keep the created PVC when the job goes (not owned by the job; helm.sh/resource-policy: "
        "keep). By default it is deleted with the job, by llmlaunch delete, kubectl delete or the job's TTL."
    )
    mount_path: str = Field(
        "/workspace",
        description="Where the volume is mounted; also the container's working directory, so relative "
        "paths in `train` (data, output_dir) live on the volume.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> "Storage":
        if self.claim and self.size:
            raise ValueError("set cluster.storage.claim (existing PVC) or cluster.storage.size (new PVC), not both")
        if self.storage_class and not self.size:
            raise ValueError("cluster.storage.storage_class only applies to a created PVC (set cluster.storage.size)")
        if self.keep and not self.size:
            raise ValueError("cluster.storage.keep only applies to a created PVC (set cluster.storage.size); "
                             "an existing claim is never deleted")
        return self

    @field_validator("mount_path")
    @classmethod
    def _own_directory(cls, path: str) -> str:
        problem = mount_path_problem(path)
        if problem:
            raise ValueError(problem)
        return path

    @property
    def enabled(self) -> bool:
        return bool(self.claim or self.size)


class SecretEnv(Section):
    """One environment variable read from a Kubernetes Secret (never written into a manifest)."""

    env: EnvName = Field(..., description="Variable name in the container, e.g. HF_TOKEN.")
    secret: DnsName = Field(..., description="Name of the Secret in the job's namespace.")
    key: str = Field(..., min_length=1, description="Key inside the Secret.")
    optional: bool = Field(False, description="Start the pod even when the Secret or key is missing.")


class Toleration(Section):
    key: ResourceName | None = Field(None, description="Taint key (None with operator Exists tolerates all).")
    operator: Literal["Equal", "Exists"] = Field("Equal", description="Equal matches `value`; Exists any value.")
    value: str | None = Field(None, description="Taint value (operator Equal).")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        None, description="Taint effect; None = all."
    )
    toleration_seconds: int | None = Field(
        None, ge=0, le=INT64_MAX, description="NoExecute only: how long the pod stays bound."
    )


class Scheduling(Section):
    """Where pods may land and who schedules them."""

    node_selector: Labels = Field(default_factory=dict, description="Node labels every pod requires.")
    tolerations: list[Toleration] = Field(
        default_factory=list, description="Taints the pods tolerate (e.g. GPU nodes)."
    )
    affinity: dict[str, Any] | None = Field(
        None, description="A Kubernetes Affinity object as written in a pod spec (nodeAffinity, podAntiAffinity...)."
    )
    priority_class: DnsName | None = Field(None, description="priorityClassName of the pods.")
    queue: str | None = Field(None, description="Kueue LocalQueue (label kueue.x-k8s.io/queue-name on the job).")
    scheduler_name: DnsName | None = Field(
        None, description="Gang scheduler (e.g. volcano, scheduler-plugins-scheduler); sets minAvailable = nodes."
    )

    @field_validator("affinity")
    @classmethod
    def _affinity_kinds(cls, value: dict | None) -> dict | None:
        unknown = set(value or {}) - {"nodeAffinity", "podAffinity", "podAntiAffinity"}
        if unknown:
            raise ValueError(
                f"unknown affinity kind {sorted(unknown)[0]!r}; use nodeAffinity, podAffinity or podAntiAffinity"
            )
        return value

    @field_validator("queue")
    @classmethod
    def _queue_label(cls, value: str | None) -> str | None:
        if value is not None and (
            len(value) > 63 or not re.fullmatch(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$", value)
        ):
            raise ValueError(f"must be a valid label value (got {value!r})")
        return value


class Elastic(Section):
    """torchrun elastic training: the job keeps running while nodes come and go between the bounds."""

    min_nodes: int = Field(..., ge=1, le=INT32_MAX, description="Fewest nodes the job trains with.")
    max_nodes: int = Field(..., ge=1, le=INT32_MAX, description="Most nodes the job scales to.")
    max_restarts: int = Field(
        3, ge=0, le=INT32_MAX, description="Worker-group restarts torchrun allows before failing."
    )


class RunPolicy(Section):
    """What the operator does when pods fail or the job ends."""

    restart_policy: Literal["OnFailure", "Never", "ExitCode", "Always"] = Field(
        "OnFailure", description="Pod restart policy of every replica."
    )
    backoff_limit: int = Field(3, ge=0, le=INT32_MAX, description="Pod restarts before the job is marked Failed.")
    clean_pod_policy: Literal["None", "Running", "All"] = Field(
        "None", description="Pods deleted when the job ends (None keeps them, so `llmlaunch logs` still works)."
    )
    ttl_seconds_after_finished: int | None = Field(
        None, ge=0, le=INT32_MAX, description="Delete the finished job after this long."
    )
    active_deadline_seconds: int | None = Field(
        None, ge=1, le=INT64_MAX, description="Fail the job after running this long."
    )
    suspend: bool = Field(False, description="Create the job suspended (no pods until resumed).")


class Rdma(Section):
    resource: ResourceName = Field("rdma/ib", description="Device-plugin resource of an RDMA/InfiniBand NIC.")
    count: int = Field(1, ge=1, le=INT32_MAX, description="RDMA devices per pod.")


class MetricsFrom(Section):
    """Pods allowed to scrape the metrics port (one NetworkPolicy peer: both selectors must match).
    A selector left out is the default for kube-prometheus-stack installed in the namespace
    monitoring (its Prometheus pods carry app.kubernetes.io/name: prometheus); a selector {} matches all."""

    namespace_selector: Labels = Field(
        default_factory=lambda: {"kubernetes.io/metadata.name": "monitoring"},
        description="Labels of the scraper's namespace ({} = every namespace); Kubernetes sets "
        "kubernetes.io/metadata.name to each namespace's name.",
    )
    pod_selector: Labels = Field(
        default_factory=lambda: {"app.kubernetes.io/name": "prometheus"},
        description="Labels of the scraper's pods ({} = every pod of those namespaces); the Prometheus "
        "operator labels its pods app.kubernetes.io/name: prometheus.",
    )


class Network(Section):
    """Fast interconnect between nodes, and the NetworkPolicy around the job's pods."""

    rdma: Rdma | None = Field(None, description="Request RDMA devices (adds the IPC_LOCK capability NCCL needs).")
    nccl: StrDict = Field(
        default_factory=dict, description="NCCL_* environment, e.g. NCCL_IB_HCA: mlx5, NCCL_DEBUG: WARN."
    )
    policy: bool = Field(
        True, description="Create a NetworkPolicy: only the job's own pods reach its pods on any port, and "
        "only metrics_from reaches the metrics port."
    )
    metrics_from: MetricsFrom = Field(default_factory=MetricsFrom)
    block_metadata_egress: bool = Field(
        False, description="Add egress rules to the NetworkPolicy that block link-local addresses "
        "(169.254.0.0/16: cloud metadata servers and their node credentials) and leave all other egress "
        "open, DNS on port 53 included (NodeLocal DNSCache listens on 169.254.20.10)."
    )

    @field_validator("nccl")
    @classmethod
    def _nccl_names(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not re.fullmatch(r"^NCCL_[A-Z0-9_]+$", key):
                raise ValueError(f"{key!r} is not an NCCL_* variable (put other variables in cluster.env)")
        return value


class Security(Section):
    """Pod and container security context (non-root, no privilege escalation, capabilities dropped)."""

    run_as_user: int = Field(
        10001, ge=1, le=INT64_MAX, description="UID of the container (non-root; high to avoid host UIDs)."
    )
    run_as_group: int = Field(10001, ge=1, le=INT64_MAX, description="GID of the container.")
    fs_group: int | None = Field(
        10001, ge=1, le=INT64_MAX, description="Group owning mounted volumes, so the trainer can write them."
    )
    read_only_root_filesystem: bool = Field(
        True, description="Image filesystem read-only; /tmp (also HOME) is a writable emptyDir."
    )
    add_capabilities: list[Capability] = Field(
        default_factory=list, description="Capabilities added to the dropped-ALL set (IPC_LOCK is added for RDMA)."
    )


class Monitoring(Section):
    """Prometheus scraping of the metrics port (train.metrics.port)."""

    pod_monitor: bool = Field(True, description="Create a PodMonitor (Prometheus operator) when train.metrics.enabled.")
    interval: Duration = Field("15s", description="Scrape interval of the PodMonitor.")
    labels: ExtraLabels = Field(
        default_factory=dict,
        description="Extra PodMonitor labels your Prometheus selects on (e.g. release: prometheus).",
    )
