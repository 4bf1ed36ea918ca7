"""ClusterSpec: the `cluster` section of a job file — where and how the pods run on Kubernetes.

Every field is documented (it feeds `llmlaunch schema`), unknown keys are refused, and cross-field
rules name the key they are about. Local runs read only nodes / gpus_per_node from here.
"""

import re
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from launcher.spec.cluster_sections import (
    Elastic,
    Monitoring,
    Network,
    Resources,
    RunPolicy,
    Scheduling,
    SecretEnv,
    Section,
    Security,
    Storage,
)
from launcher.spec.k8s_types import ENV_NAME, INT32_MAX, INT64_MAX, Annotations, DnsLabel, DnsName, ExtraLabels, StrDict

SECRET_LIKE = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|ACCESS_?KEY|CREDENTIAL", re.IGNORECASE)
# Set by llmlaunch or the training operator; a user value would silently break the topology.
RESERVED_ENV = re.compile(r"^(PET_.*|MASTER_ADDR|MASTER_PORT|WORLD_SIZE|RANK|LOCAL_RANK|HOME|LLMLAUNCH_.*)$")

# Fields a Trainer v2.3 TrainJob cannot carry: its runtimePatches reach no priorityClassName, schedulerName or
# imagePullPolicy, and restarts, cleanup and TTL belong to the ClusterTrainingRuntime's JobSet.
TRAINJOB_UNSUPPORTED = {
    "scheduling.priority_class", "scheduling.scheduler_name", "image_pull_policy", "elastic",
    "run_policy.restart_policy", "run_policy.backoff_limit", "run_policy.clean_pod_policy",
    "run_policy.ttl_seconds_after_finished",
}


class ClusterSpec(Section):
    """Where the job runs on Kubernetes. Ignored by local runs except nodes / gpus_per_node defaults."""

    nodes: int = Field(1, ge=1, le=INT32_MAX, description="Pods (one torchrun agent each): 1 master + nodes-1 workers.")
    gpus_per_node: int = Field(
        0, ge=0, le=INT32_MAX, description="GPUs per pod; also torchrun's nproc_per_node (0 = one CPU process)."
    )
    image: str | None = Field(
        None, min_length=1, description="The trainer image, built from the repository's Dockerfile and pushed to "
        "a registry the cluster pulls from (docs/cluster.md); no default. --image sets it."
    )
    image_pull_policy: Literal["IfNotPresent", "Always", "Never"] = Field(
        "IfNotPresent", description="When the kubelet pulls the image."
    )
    image_pull_secrets: list[DnsName] = Field(default_factory=list, description="Secrets for a private registry.")
    namespace: DnsLabel = Field("default", description="Namespace of every object.")
    api: Literal["pytorchjob", "trainjob"] = Field(
        "pytorchjob", description="pytorchjob: Kubeflow training operator v1; trainjob: Kubeflow Trainer v2.3."
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
        120,
        ge=0,
        le=INT64_MAX,
        description="Time between SIGTERM and SIGKILL: the trainer writes its last checkpoint in it.",
    )
    disruption_budget: bool = Field(
        False,
        description="Create a PodDisruptionBudget (policy/v1; policy/v1beta1 on Kubernetes before 1.21) so that "
        "voluntary evictions (kubectl drain, the cluster autoscaler's scale-down) keep at least `nodes` of the "
        "job's pods running, an elastic job at least elastic.min_nodes. Node failures and preemption still stop pods.",
    )
    labels: ExtraLabels = Field(default_factory=dict, description="Extra labels on every object and pod.")
    annotations: Annotations = Field(default_factory=dict, description="Extra annotations on every object and pod.")

    @field_validator("env")
    @classmethod
    def _plain_env(cls, env: dict[str, str]) -> dict[str, str]:
        for name in env:
            if not ENV_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not an environment variable name")
            if SECRET_LIKE.search(name):
                raise ValueError(f"{name} looks like a secret; pass it through cluster.secrets (a secretKeyRef)")
            if RESERVED_ENV.fullmatch(name):
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
            if RESERVED_ENV.fullmatch(name):
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
    def min_nodes(self) -> int:
        """The fewest pods the job runs with: all of them, or an elastic job's minimum."""
        return self.elastic.min_nodes if self.elastic else self.nodes

    @property
    def procs_per_node(self) -> int:
        """torchrun processes per pod: one per GPU, or one CPU process."""
        return max(self.gpus_per_node, 1)
