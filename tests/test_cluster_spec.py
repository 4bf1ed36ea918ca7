"""The cluster section of a job file: defaults, and every rule with the key it names."""

from __future__ import annotations

from pathlib import Path

import pytest

from launcher.spec.load import load_job
from trainer.config.train_config import ConfigError

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TINY = EXAMPLES / "tiny.yaml"


def problems(*overrides: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_job(TINY, list(overrides), resolve_paths=False)
    return info.value.problems


def test_defaults_are_secure_and_single_node():
    c = load_job(TINY, resolve_paths=False).cluster
    assert (c.nodes, c.gpus_per_node, c.api, c.namespace) == (1, 0, "pytorchjob", "default")
    assert c.security.run_as_user >= 10000 and c.security.read_only_root_filesystem
    assert c.run_policy.restart_policy == "OnFailure" and c.run_policy.backoff_limit == 3
    assert not c.storage.enabled and c.secrets == [] and c.elastic is None


def test_numbers_from_yaml_become_kubernetes_strings():
    c = load_job(TINY, ["cluster.resources.cpu=8", "cluster.network.nccl.NCCL_IB_TIMEOUT=22",
                        "cluster.scheduling.node_selector.gpu=true"], resolve_paths=False).cluster
    assert c.resources.cpu == "8"
    assert c.network.nccl == {"NCCL_IB_TIMEOUT": "22"}
    assert c.scheduling.node_selector == {"gpu": "true"}


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["cluster.nodes=0"], "cluster.nodes: Input should be greater than or equal to 1 (got 0)"),
        (["cluster.resources.memory=lots"], "cluster.resources.memory: not a Kubernetes quantity"),
        (["cluster.namespace=Team_A"], "cluster.namespace: must be a DNS-1123 label"),
        (["cluster.env.1BAD=x"], "cluster.env: '1BAD' is not an environment variable name"),
        (["cluster.env.HF_TOKEN=hf_abc"], "cluster.env: HF_TOKEN looks like a secret; pass it through cluster.secrets"),
        (["cluster.env.WANDB_API_KEY=x"], "WANDB_API_KEY looks like a secret"),
        (["cluster.env.PET_NNODES=3"], "PET_NNODES is set by llmlaunch or the training operator"),
        (["cluster.env.NCCL_DEBUG=INFO"], "put NCCL_* variables in cluster.network.nccl"),
        (["cluster.network.nccl.GLOO_X=1"], "'GLOO_X' is not an NCCL_* variable"),
        (["cluster.labels={app.kubernetes.io/name: x}"], "key 'app.kubernetes.io/name' is set by llmlaunch"),
        (["cluster.labels.team=a b"], "cluster.labels: value of 'team' must be at most 63"),
        (["cluster.image=ghcr.io/x:1 --privileged"], "cluster.image: an image reference has no whitespace"),
        (["cluster.storage.claim=data", "cluster.storage.size=1Ti"], "set cluster.storage.claim (existing PVC) or"),
        (["cluster.storage.storage_class=fast"], "cluster.storage.storage_class only applies to a created PVC"),
        (["cluster.storage.size=1Ti", "cluster.storage.mount_path=/etc/llmlaunch"],
         "cluster.storage.mount_path: lies under /etc"),
        (["cluster.nodes=2", "cluster.storage.size=1Ti", "cluster.storage.access_mode=ReadWriteOnce"],
         "cluster.storage.access_mode ReadWriteOnce cannot be shared by 2 pods on different nodes; use ReadWriteMany"),
        (["cluster.nodes=5", "cluster.elastic={min_nodes: 2, max_nodes: 4}"],
         "cluster.nodes 5 must lie within cluster.elastic.min_nodes 2 and max_nodes 4"),
        (["cluster.secrets=[{env: HF_TOKEN, secret: hf, key: t}, {env: HF_TOKEN, secret: b, key: t}]"],
         "cluster.secrets: variable HF_TOKEN is defined twice"),
        (["cluster.secrets=[{env: MASTER_ADDR, secret: hf, key: t}]"],
         "cluster.secrets: MASTER_ADDR is set by llmlaunch"),
        (["cluster.secrets=[{env: HF_TOKEN, secret: Bad_Name, key: t}]"],
         "cluster.secrets.0.secret: must be a DNS-1123 name"),
        (["cluster.scheduling.affinity={nodeAfinity: {}}"], "unknown affinity kind 'nodeAfinity'"),
        (["cluster.scheduling.tolerations=[{key: gpu, operator: Maybe}]"], "cluster.scheduling.tolerations.0.operator"),
        (["cluster.security.run_as_user=0"],
         "cluster.security.run_as_user: Input should be greater than or equal to 1"),
        (["cluster.security.add_capabilities=[sys_admin]"], "not a Linux capability name"),
        (["cluster.monitoring.interval=15 seconds"], "cluster.monitoring.interval: not a Prometheus duration"),
        (["cluster.api=trainjob", "cluster.scheduling.priority_class=high"],
         "cluster.scheduling.priority_class cannot be set with cluster.api trainjob"),
        (["cluster.api=trainjob", "cluster.elastic={min_nodes: 1, max_nodes: 2}"],
         "cluster.elastic cannot be set with cluster.api trainjob"),
        (["cluster.api=trainjob", "cluster.image_pull_policy=Never"],
         "cluster.image_pull_policy cannot be set with cluster.api trainjob"),
        (["cluster.api=trainjob", "cluster.run_policy.backoff_limit=9"],
         "cluster.run_policy.backoff_limit cannot be set with cluster.api trainjob"),
        (["cluster.storage.claim=shared", "cluster.storage.keep=true"],
         "cluster.storage.keep only applies to a created PVC"),
        (["cluster.gpu=8"], "cluster.gpu: unknown key"),
        (["cluster.run_policy.clean_pod_policy=Some"], "cluster.run_policy.clean_pod_policy: Input should be"),
    ],
)
def test_bad_cluster_values_name_the_key(overrides, expected):
    lines = problems(*overrides)
    assert any(expected in line for line in lines), lines
    assert all("\n" not in line for line in lines)


def test_trainjob_accepts_what_a_trainjob_can_carry():
    spec = load_job(TINY, ["cluster.api=trainjob", "cluster.nodes=2", "cluster.storage.size=1Ti",
                           "cluster.scheduling.node_selector.pool=gpu", "cluster.env.FOO=bar",
                           "cluster.secrets=[{env: HF_TOKEN, secret: hf, key: token}]",
                           # Trainer v2.3's runtimePatches carry these (v2.0's podSpecOverrides did not)
                           "cluster.security.run_as_user=20000", "cluster.image_pull_secrets=[regcred]",
                           "cluster.scheduling.affinity={nodeAffinity: {}}", "cluster.network.rdma={count: 1}",
                           "cluster.termination_grace_period_seconds=300",
                           "cluster.run_policy.active_deadline_seconds=3600"], resolve_paths=False)
    assert spec.cluster.api == "trainjob"


def test_every_example_is_a_valid_job_file():
    for path in EXAMPLES.glob("*.yaml"):
        assert load_job(path).name
