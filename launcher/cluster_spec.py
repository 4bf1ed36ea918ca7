"""ClusterSpec: the `cluster` section of a job file — where and how the pods run on Kubernetes.

Every field is documented (it feeds `llmlaunch schema`), unknown keys are refused, and cross-field
rules name the key they are about. Local runs read only nodes / gpus_per_node from here.
"""

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from launcher.k8s_types import (
    Annotations, Capability, DnsLabel, DnsName, Duration, EnvName, Labels, Quantity, ResourceName, StrDict,
)

SECRET_LIKE = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|ACCESS_?KEY|CREDENTIAL", re.IGNORECASE)
# Set by llmlaunch or the training operator; a user value would silently break the topology.
RESERVED_ENV = re.compile(r"^(PET_.*|MASTER_ADDR|MASTER_PORT|WORLD_SIZE|RANK|LOCAL_RANK|HOME|LLMLAUNCH_.*)$")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


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


class Storage(Section):
    """A PersistentVolumeClaim for data and checkpoints: an existing claim, or one created with the job."""

    claim: DnsName | None = Field(None, description="Use this existing PVC (not created or deleted by llmlaunch).")
    size: Quantity | None = Field(None, description="Create a PVC `<name>-data` of this size (e.g. 500Gi).")
    storage_class: DnsName | None = Field(None, description="Storage class of the created PVC (default class if unset).")
    access_mode: Literal["ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod"] = Field(
        "ReadWriteMany", description="Several nodes write checkpoints at once, so multi-node jobs need ReadWriteMany."
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
        if not self.mount_path.startswith("/") or self.mount_path.rstrip("/") in ("", "/etc/llmlaunch", "/dev/shm", "/tmp"):
            raise ValueError(f"cluster.storage.mount_path must be an absolute path of its own (got {self.mount_path!r})")
        return self

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
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(None, description="Taint effect; None = all.")
    toleration_seconds: int | None = Field(None, ge=0, description="NoExecute only: how long the pod stays bound.")


class Scheduling(Section):
    """Where pods may land and who schedules them."""

    node_selector: Labels = Field(default_factory=dict, description="Node labels every pod requires.")
    tolerations: list[Toleration] = Field(default_factory=list, description="Taints the pods tolerate (e.g. GPU nodes).")
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
            raise ValueError(f"unknown affinity kind {sorted(unknown)[0]!r}; use nodeAffinity, podAffinity or podAntiAffinity")
        return value

    @field_validator("queue")
    @classmethod
    def _queue_label(cls, value: str | None) -> str | None:
        if value is not None and (len(value) > 63 or not re.match(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$", value)):
            raise ValueError(f"must be a valid label value (got {value!r})")
        return value


class Elastic(Section):
    """torchrun elastic training: the job keeps running while nodes come and go between the bounds."""

    min_nodes: int = Field(..., ge=1, description="Fewest nodes the job trains with.")
    max_nodes: int = Field(..., ge=1, description="Most nodes the job scales to.")
    max_restarts: int = Field(3, ge=0, description="Worker-group restarts torchrun allows before failing.")


class RunPolicy(Section):
    """What the operator does when pods fail or the job ends."""

    restart_policy: Literal["OnFailure", "Never", "ExitCode", "Always"] = Field(
        "OnFailure", description="Pod restart policy of every replica."
    )
    backoff_limit: int = Field(3, ge=0, description="Pod restarts before the job is marked Failed.")
    clean_pod_policy: Literal["None", "Running", "All"] = Field(
        "None", description="Pods deleted when the job ends (None keeps them, so `llmlaunch logs` still works)."
    )
    ttl_seconds_after_finished: int | None = Field(None, ge=0, description="Delete the finished job after this long.")
    active_deadline_seconds: int | None = Field(None, ge=1, description="Fail the job after running this long.")
    suspend: bool = Field(False, description="Create the job suspended (no pods until resumed).")


class Rdma(Section):
    resource: ResourceName = Field("rdma/ib", description="Device-plugin resource of an RDMA/InfiniBand NIC.")
    count: int = Field(1, ge=1, description="RDMA devices per pod.")


class Network(Section):
    """Fast interconnect between nodes."""

    rdma: Rdma | None = Field(None, description="Request RDMA devices (adds the IPC_LOCK capability NCCL needs).")
    nccl: StrDict = Field(default_factory=dict, description="NCCL_* environment, e.g. NCCL_IB_HCA: mlx5, NCCL_DEBUG: WARN.")
    policy: bool = Field(
        True, description="Create a NetworkPolicy: only the job's own pods reach its pods (plus scrapers on "
        "the metrics port); egress stays open."
    )

    @field_validator("nccl")
    @classmethod
    def _nccl_names(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not re.match(r"^NCCL_[A-Z0-9_]+$", key):
                raise ValueError(f"{key!r} is not an NCCL_* variable (put other variables in cluster.env)")
        return value


class Security(Section):
    """Pod and container security context (non-root, no privilege escalation, capabilities dropped)."""

    run_as_user: int = Field(10001, ge=1, description="UID of the container (non-root; high to avoid host UIDs).")
    run_as_group: int = Field(10001, ge=1, description="GID of the container.")
    fs_group: int | None = Field(10001, ge=1, description="Group owning mounted volumes, so the trainer can write them.")
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
    labels: Labels = Field(
        default_factory=dict, description="Extra PodMonitor labels your Prometheus selects on (e.g. release: prometheus)."
    )


TRAINJOB_UNSUPPORTED = {  # fields a TrainJob (v1alpha1) cannot carry: they belong to the ClusterTrainingRuntime
    "scheduling.affinity", "scheduling.priority_class", "scheduling.scheduler_name", "image_pull_secrets",
    "elastic", "network.rdma", "security", "run_policy.restart_policy", "run_policy.backoff_limit",
    "run_policy.clean_pod_policy", "run_policy.ttl_seconds_after_finished", "run_policy.active_deadline_seconds",
    "termination_grace_period_seconds",
}


class ClusterSpec(Section):
    """Where the job runs on Kubernetes. Ignored by local runs except nodes / gpus_per_node defaults."""

    nodes: int = Field(1, ge=1, description="Pods (one torchrun agent each): 1 master + nodes-1 workers.")
    gpus_per_node: int = Field(0, ge=0, description="GPUs per pod; also torchrun's nproc_per_node (0 = one CPU process).")
    image: str = Field(
        "ghcr.io/llmlaunch/trainer:0.1.0", min_length=1, description="Container image with llmlaunch's trainer."
    )
    image_pull_policy: Literal["IfNotPresent", "Always", "Never"] = Field(
        "IfNotPresent", description="When the kubelet pulls the image."
    )
    image_pull_secrets: list[DnsName] = Field(default_factory=list, description="Secrets for a private registry.")
    namespace: DnsLabel = Field("default", description="Namespace of every object.")
    api: Literal["pytorchjob", "trainjob"] = Field(
        "pytorchjob", description="pytorchjob: Kubeflow training operator v1; trainjob: Kubeflow Trainer v2."
    )
    runtime: DnsName = Field(
        "torch-distributed", description="api trainjob: the ClusterTrainingRuntime the TrainJob refers to."
    )
    service_account: DnsName | None = Field(
        None, description="Service account of the pods (its token is not mounted; the trainer needs no API access)."
    )
    resources: Resources = Field(default_factory=Resources)
    storage: Storage = Field(default_factory=Storage)
    env: StrDict = Field(default_factory=dict, description="Plain environment variables (never secrets: see secrets).")
    secrets: list[SecretEnv] = Field(
        default_factory=list, description="Environment variables from Secrets via secretKeyRef (HF_TOKEN...)."
    )
    scheduling: Scheduling = Field(default_factory=Scheduling)
    elastic: Elastic | None = Field(None, description="Elastic training bounds (PyTorchJob elasticPolicy).")
    run_policy: RunPolicy = Field(default_factory=RunPolicy)
    network: Network = Field(default_factory=Network)
    security: Security = Field(default_factory=Security)
    monitoring: Monitoring = Field(default_factory=Monitoring)
    termination_grace_period_seconds: int = Field(
        120, ge=0, description="Time between SIGTERM and SIGKILL: the trainer writes its last checkpoint in it."
    )
    labels: Labels = Field(default_factory=dict, description="Extra labels on every object and pod.")
    annotations: Annotations = Field(default_factory=dict, description="Extra annotations on every object and pod.")

    @field_validator("image")
    @classmethod
    def _image_is_one_token(cls, image: str) -> str:
        if any(c.isspace() for c in image):
            raise ValueError(f"an image reference has no whitespace (got {image!r})")
        return image

    @field_validator("labels")
    @classmethod
    def _own_labels(cls, labels: dict[str, str]) -> dict[str, str]:
        for key in labels:
            if key.startswith("app.kubernetes.io/"):
                raise ValueError(f"{key} is set by llmlaunch (it selects the job's objects)")
        return labels

    @field_validator("env")
    @classmethod
    def _plain_env(cls, env: dict[str, str]) -> dict[str, str]:
        for name in env:
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name):
                raise ValueError(f"{name!r} is not an environment variable name")
            if SECRET_LIKE.search(name):
                raise ValueError(f"{name} looks like a secret; pass it through cluster.secrets (a secretKeyRef)")
            if RESERVED_ENV.match(name):
                raise ValueError(f"{name} is set by llmlaunch or the training operator")
            if name.startswith("NCCL_"):
                raise ValueError(f"{name}: put NCCL_* variables in cluster.network.nccl")
        return env

    @model_validator(mode="after")
    def _cross_checks(self) -> "ClusterSpec":
        names = [s.env for s in self.secrets]
        for name in names:
            if names.count(name) > 1 or name in self.env or name in self.network.nccl:
                raise ValueError(f"cluster.secrets: variable {name} is defined twice")
            if RESERVED_ENV.match(name):
                raise ValueError(f"cluster.secrets: {name} is set by llmlaunch or the training operator")
        if self.storage.access_mode != "ReadWriteMany" and self.storage.enabled and self.max_nodes > 1:
            raise ValueError(
                f"cluster.storage.access_mode {self.storage.access_mode} cannot be shared by {self.max_nodes} "
                "pods on different nodes; use ReadWriteMany"
            )
        if self.elastic is not None:
            e = self.elastic
            if not e.min_nodes <= self.nodes <= e.max_nodes:
                raise ValueError(
                    f"cluster.nodes {self.nodes} must lie within cluster.elastic.min_nodes {e.min_nodes} "
                    f"and max_nodes {e.max_nodes}"
                )
        if self.api == "trainjob":
            for key in sorted(self._explicit_keys() & TRAINJOB_UNSUPPORTED):
                raise ValueError(
                    f"cluster.{key} cannot be set with cluster.api trainjob (a TrainJob takes it from its "
                    f"ClusterTrainingRuntime {self.runtime!r}); use cluster.api pytorchjob"
                )
        return self

    def _explicit_keys(self) -> set[str]:
        """Dotted keys the job file set, one level into sections (defaults do not count)."""
        keys = set()
        for name in self.model_fields_set:
            keys.add(name)
            value = getattr(self, name)
            if isinstance(value, BaseModel):
                keys |= {f"{name}.{sub}" for sub in value.model_fields_set}
        return keys

    @property
    def max_nodes(self) -> int:
        return self.elastic.max_nodes if self.elastic else self.nodes

    @property
    def procs_per_node(self) -> int:
        """torchrun processes per pod: one per GPU, or one CPU process."""
        return max(self.gpus_per_node, 1)
