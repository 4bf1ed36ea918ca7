"""Names and labels of everything a job creates, and the length rules they must meet.

The operators derive further names from the job name (pods, services, JobSets); each must stay a
DNS-1035 label of at most 63 characters, so the check runs on the longest derived name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from launcher.errors import ConfigError

if TYPE_CHECKING:  # annotations only: status, list and delete use these names without the job models
    from launcher.spec.job_spec import JobSpec

MAX_LABEL = 63
POD_HASH = 6  # "-" + 5 random characters that JobSet's Jobs append to pod names

# Labels the operators put on the pods they create (used by `llmlaunch logs` to pick a node).
PYTORCHJOB_JOB_LABEL = "training.kubeflow.org/job-name"
PYTORCHJOB_TYPE_LABEL = "training.kubeflow.org/replica-type"
PYTORCHJOB_INDEX_LABEL = "training.kubeflow.org/replica-index"
JOBSET_NAME_LABEL = "jobset.sigs.k8s.io/jobset-name"
JOB_INDEX_LABEL = "batch.kubernetes.io/job-completion-index"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"

INSTANCE_LABEL = "app.kubernetes.io/instance"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
TRAINJOB_REPLICATED_JOB = "node"  # the replicatedJob (and container) name of the torch-distributed runtime
# Owner of llmlaunch's entry in a TrainJob's spec.runtimePatches (a domain-prefixed path, as Trainer requires;
# Kueue writes its own entry beside it).
TRAINJOB_PATCH_MANAGER = "llmlaunch.dev/launcher"


def config_map(job: str) -> str:
    return f"{job}-config"


def data_claim(job: str) -> str:
    return f"{job}-data"


def pod_monitor(job: str) -> str:
    return job


def network_policy(job: str) -> str:
    return job


def disruption_budget(job: str) -> str:
    return job


NAME_LABEL = "app.kubernetes.io/name"
HELM_RELEASE_ANNOTATION = "meta.helm.sh/release-name"  # Helm 3 puts it on every object of a release


def selector(job: str) -> str:
    """Label selector matching every object of `job`, whether `llmlaunch submit` or the Helm chart
    created it (managed-by is llmlaunch for one and Helm for the other; name and instance are shared)."""
    return f"{NAME_LABEL}=llmlaunch,{INSTANCE_LABEL}={job}"


def jobs_selector() -> str:
    """Every llmlaunch job, submitted or installed with the chart."""
    return f"{NAME_LABEL}=llmlaunch"


def common_labels(spec: JobSpec, component: str) -> dict[str, str]:
    """app.kubernetes.io labels (ours win over cluster.labels, which cannot set them)."""
    return {
        **spec.cluster.labels,
        "app.kubernetes.io/name": "llmlaunch",
        INSTANCE_LABEL: spec.name,
        "app.kubernetes.io/component": component,
        MANAGED_BY_LABEL: "llmlaunch",
    }


def pod_selector(spec: JobSpec) -> dict[str, str]:
    """Labels that pick this job's training pods (what the PodMonitor, NetworkPolicy and PodDisruptionBudget select)."""
    if spec.cluster.api == "trainjob":
        # A TrainJob cannot label its pods; JobSet labels them with the job's name.
        return {JOBSET_NAME_LABEL: spec.name}
    return {"app.kubernetes.io/name": "llmlaunch", INSTANCE_LABEL: spec.name, "app.kubernetes.io/component": "trainer"}


def derived_names(spec: JobSpec) -> list[str]:
    """The longest names the operators derive from the job name (pods, services, hostnames)."""
    name, cluster = spec.name, spec.cluster
    last = cluster.max_nodes - 1
    if cluster.api == "trainjob":
        return [f"{name}-{TRAINJOB_REPLICATED_JOB}-0-{last}" + "x" * POD_HASH]
    if cluster.elastic is not None:
        return [f"{name}-worker-{last}"]
    return [f"{name}-master-0"] + ([f"{name}-worker-{last - 1}"] if last >= 1 else [])


def check_names(spec: JobSpec) -> None:
    """Every name the job leads to fits in a DNS-1035 label (63 characters), or a ConfigError naming it;
    the job name's characters are JobSpec's rule."""
    for derived in [config_map(spec.name), data_claim(spec.name), *derived_names(spec)]:
        if len(derived) > MAX_LABEL:
            raise ConfigError([
                f"name: {spec.name!r} is too long for {spec.cluster.max_nodes} nodes: the derived name "
                f"{derived!r} has {len(derived)} characters (at most {MAX_LABEL})"
            ])


def job_pods_selector(kind: str, job: str) -> str:
    """Label selector of every pod the operator made for a job (kind: PyTorchJob or TrainJob)."""
    return f"{JOBSET_NAME_LABEL if kind == 'TrainJob' else PYTORCHJOB_JOB_LABEL}={job}"


def node_pod_labels(spec_api: str, job: str, node: int, elastic: bool) -> dict[str, str]:
    """Operator labels of the pod running node `node` (0 = master) of a job."""
    if spec_api == "trainjob":
        return {JOBSET_NAME_LABEL: job, JOB_INDEX_LABEL: str(node)}
    if elastic:
        return {PYTORCHJOB_JOB_LABEL: job, PYTORCHJOB_TYPE_LABEL: "worker", PYTORCHJOB_INDEX_LABEL: str(node)}
    if node == 0:
        return {PYTORCHJOB_JOB_LABEL: job, PYTORCHJOB_TYPE_LABEL: "master", PYTORCHJOB_INDEX_LABEL: "0"}
    return {PYTORCHJOB_JOB_LABEL: job, PYTORCHJOB_TYPE_LABEL: "worker", PYTORCHJOB_INDEX_LABEL: str(node - 1)}
