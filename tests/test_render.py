"""Rendering: what each manifest contains, checked against literal expectations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from golden_cases import TEST_IMAGE
from launcher.render import manifests
from launcher.spec.load import load_job
from trainer.config.ds_config import build_ds_config
from trainer.config.train_config import ConfigError, TrainConfig

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TINY = EXAMPLES / "tiny.yaml"


def spec_of(*overrides: str, example: Path = TINY):
    return load_job(example, list(overrides), resolve_paths=False)


def objects(*overrides: str, example: Path = TINY) -> dict[str, dict]:
    return {o["kind"]: o for o in manifests.render(spec_of(*overrides, example=example))}


def pod_spec(job: dict, replica: str = "Master") -> dict:
    return job["spec"]["pytorchReplicaSpecs"][replica]["template"]["spec"]


def env_of(container: dict) -> dict:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_tiny_is_a_configmap_a_policy_a_podmonitor_and_a_one_node_pytorchjob_created_last():
    objs = manifests.render(spec_of())
    assert [o["kind"] for o in objs] == ["ConfigMap", "NetworkPolicy", "PodMonitor", "PyTorchJob"]
    job = objs[-1]
    assert (job["apiVersion"], job["metadata"]["name"]) == ("kubeflow.org/v1", "tiny")
    assert list(job["spec"]["pytorchReplicaSpecs"]) == ["Master"]
    assert job["spec"]["pytorchReplicaSpecs"]["Master"]["replicas"] == 1
    assert job["spec"]["nprocPerNode"] == "1"


def job_grace(job: dict) -> int:
    return pod_spec(job, "Worker")["terminationGracePeriodSeconds"]


def test_multi_node_gpu_job_topology():
    objs = objects("cluster.gpus_per_node=8", "cluster.nodes=4")
    job, cm = objs["PyTorchJob"], objs["ConfigMap"]
    replicas = job["spec"]["pytorchReplicaSpecs"]
    assert {k: (v["replicas"], v["restartPolicy"]) for k, v in replicas.items()} == {
        "Master": (1, "OnFailure"), "Worker": (3, "OnFailure")}
    assert job["spec"]["nprocPerNode"] == "8"
    assert job["spec"]["runPolicy"] == {"cleanPodPolicy": "None", "backoffLimit": 3, "suspend": False}
    container = pod_spec(job, "Worker")["containers"][0]
    assert container["name"] == "pytorch"  # the operator injects PET_* only into this container
    assert container["command"] == [
        "torchrun", "--nnodes=4", "--nproc-per-node=8", "--rdzv-backend=c10d",
        "--rdzv-endpoint=$(MASTER_ADDR):$(MASTER_PORT)", "--max-restarts=3",  # train.run.max_restarts
        "-m", "trainer", "--config", "/etc/llmlaunch/train.yaml"]
    # a restartable rendezvous, and torchrun waits the grace period for the emergency checkpoint
    assert {"name": "TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "value": "1"} in container["env"]
    assert {"name": "TORCH_ELASTIC_SHUTDOWN_TIMEOUT", "value": str(job_grace(job))} in container["env"]
    assert container["resources"] == {"requests": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": 8},
                                      "limits": {"memory": "16Gi", "nvidia.com/gpu": 8}}
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"pytorchjob-port": 23456, "metrics": 9400}
    ds = json.loads(cm["data"]["ds_config.json"])
    assert ds["train_batch_size"] == 8 * 1 * 32  # micro x accum x 4 nodes x 8 GPUs
    assert "bf16" not in ds and "fp16" not in ds  # precision auto on GPUs: the pod decides


def test_configmap_carries_exactly_the_resolved_train_yaml_and_ds_config():
    spec = spec_of("cluster.nodes=2", "train.precision=fp32")
    cm = objects("cluster.nodes=2", "train.precision=fp32")["ConfigMap"]
    assert set(cm["data"]) == {"train.yaml", "ds_config.json"}
    assert TrainConfig.model_validate(yaml.safe_load(cm["data"]["train.yaml"])) == spec.train
    assert json.loads(cm["data"]["ds_config.json"]) == build_ds_config(spec.train, world_size=2, precision="fp32")
    mounts = {m["name"]: m for m in pod_spec(objects()["PyTorchJob"])["containers"][0]["volumeMounts"]}
    assert mounts["config"] == {"name": "config", "mountPath": "/etc/llmlaunch", "readOnly": True}


@pytest.mark.parametrize(("gpus", "precision", "bf16"), [(0, "auto", False), (8, "bf16", True), (0, "fp32", False)])
def test_precision_is_resolved_at_render_time_unless_auto_on_gpus(gpus, precision, bf16):
    ds = json.loads(objects(f"cluster.gpus_per_node={gpus}",
                            f"train.precision={precision}")["ConfigMap"]["data"]["ds_config.json"])
    assert ds["bf16"]["enabled"] is bf16 and ds["fp16"]["enabled"] is False


def test_fp16_on_cpu_pods_and_a_batch_that_does_not_divide_are_refused():
    with pytest.raises(ConfigError, match="train.precision: fp16 needs GPU pods"):
        manifests.render(spec_of("train.precision=fp16"))
    with pytest.raises(ConfigError, match=r"train.run.global_batch_size: .*3 processes"):
        manifests.render(spec_of("cluster.nodes=3", "train.run.global_batch_size=16"))


def test_pod_security_defaults():
    spec = pod_spec(objects()["PyTorchJob"])
    assert spec["securityContext"] == {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                                       "fsGroup": 10001, "seccompProfile": {"type": "RuntimeDefault"}}
    assert spec["automountServiceAccountToken"] is False
    assert spec["containers"][0]["securityContext"] == {
        "allowPrivilegeEscalation": False, "privileged": False, "runAsNonRoot": True,
        "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}
    assert env_of(spec["containers"][0])["HOME"] == "/tmp"  # the writable scratch volume


def test_rdma_adds_devices_ipc_lock_and_nccl_env():
    spec = pod_spec(objects("cluster.network.rdma={resource: rdma/hca, count: 2}",
                            "cluster.network.nccl.NCCL_IB_HCA=mlx5", "cluster.gpus_per_node=8")["PyTorchJob"])
    container = spec["containers"][0]
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["IPC_LOCK"]}
    assert container["resources"]["limits"]["rdma/hca"] == 2 == container["resources"]["requests"]["rdma/hca"]
    assert env_of(container)["NCCL_IB_HCA"] == "mlx5"


def test_secrets_only_through_secret_key_refs():
    objs = manifests.render(spec_of("cluster.secrets=[{env: HF_TOKEN, secret: hf-token, key: token, optional: true}]"))
    container = pod_spec(objs[-1])["containers"][0]
    assert env_of(container)["HF_TOKEN"] == {"secretKeyRef": {"name": "hf-token", "key": "token", "optional": True}}
    assert "HF_TOKEN" not in objs[0]["data"]["train.yaml"]


def test_created_claim_existing_claim_and_shared_memory():
    objs = objects("cluster.nodes=2", "cluster.storage.size=500Gi", "cluster.storage.storage_class=rwx")
    assert objs["PersistentVolumeClaim"]["spec"] == {
        "accessModes": ["ReadWriteMany"], "storageClassName": "rwx", "resources": {"requests": {"storage": "500Gi"}}}
    spec = pod_spec(objs["PyTorchJob"], "Worker")
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"] == {"claimName": "tiny-data"}
    assert volumes["shm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "8Gi"}
    assert spec["containers"][0]["workingDir"] == "/workspace"  # relative train paths live on the volume

    objs = objects("cluster.storage.claim=shared-data", "cluster.resources.shm_size=null")
    assert "PersistentVolumeClaim" not in objs  # an existing claim is not ours to create or delete
    volumes = {v["name"]: v for v in pod_spec(objs["PyTorchJob"])["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"] == {"claimName": "shared-data"} and "shm" not in volumes


def test_scheduling_fields_reach_the_pods_and_the_job():
    objs = objects("cluster.nodes=3", "cluster.scheduling.scheduler_name=volcano", "cluster.scheduling.queue=team-a",
                   "cluster.scheduling.priority_class=high", "cluster.scheduling.node_selector.pool=a100",
                   "cluster.scheduling.tolerations=[{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]",
                   "cluster.image_pull_secrets=[regcred]", "cluster.service_account=trainer")
    job = objs["PyTorchJob"]
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert job["spec"]["runPolicy"]["schedulingPolicy"] == {"minAvailable": 3}
    spec = pod_spec(job)
    assert (spec["schedulerName"], spec["priorityClassName"],
            spec["serviceAccountName"]) == ("volcano", "high", "trainer")
    assert spec["nodeSelector"] == {"pool": "a100"}
    assert spec["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]


def test_elastic_job_has_only_workers_and_lets_the_operator_set_the_rendezvous():
    objs = objects("cluster.nodes=2", "cluster.elastic={min_nodes: 1, max_nodes: 4, max_restarts: 5}")
    job = objs["PyTorchJob"]
    assert job["spec"]["elasticPolicy"] == {"minReplicas": 1, "maxReplicas": 4, "maxRestarts": 5, "rdzvBackend": "c10d"}
    assert {k: v["replicas"] for k, v in job["spec"]["pytorchReplicaSpecs"].items()} == {"Worker": 2}
    command = pod_spec(job, "Worker")["containers"][0]["command"]
    assert "--max-restarts=5" in command and "--nnodes=1:4" in command
    assert not any(a.startswith("--rdzv-endpoint") for a in command)
    assert "train_batch_size" not in json.loads(objs["ConfigMap"]["data"]["ds_config.json"])
    with pytest.raises(ConfigError, match="global_batch_size: cannot be fixed with cluster.elastic"):
        manifests.render(spec_of("cluster.elastic={min_nodes: 1, max_nodes: 4}", "train.run.global_batch_size=8"))


def test_run_policy_fields():
    rp = objects("cluster.run_policy={clean_pod_policy: Running, backoff_limit: 0, ttl_seconds_after_finished: 60, "
                 "active_deadline_seconds: 3600, suspend: true, restart_policy: Never}")["PyTorchJob"]["spec"]
    assert rp["runPolicy"] == {"cleanPodPolicy": "Running", "backoffLimit": 0, "ttlSecondsAfterFinished": 60,
                               "activeDeadlineSeconds": 3600, "suspend": True}
    assert rp["pytorchReplicaSpecs"]["Master"]["restartPolicy"] == "Never"


def test_metrics_port_podmonitor_and_scrape_annotations():
    objs = objects("cluster.monitoring.labels.release=prom")
    pm = objs["PodMonitor"]
    assert pm["metadata"]["labels"]["release"] == "prom"
    assert pm["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "llmlaunch",
                                                     "app.kubernetes.io/instance": "tiny",
                                                     "app.kubernetes.io/component": "trainer"}
    assert pm["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    # The exporter's job / namespace labels must survive the scrape (else exported_job, and empty panels).
    assert pm["spec"]["podMetricsEndpoints"][0]["honorLabels"] is True
    template = objs["PyTorchJob"]["spec"]["pytorchReplicaSpecs"]["Master"]["template"]
    assert all(template["metadata"]["labels"][k] == v for k, v in pm["spec"]["selector"]["matchLabels"].items())
    assert template["metadata"]["annotations"]["prometheus.io/port"] == "9400"
    container = template["spec"]["containers"][0]
    assert {"name": "LLMLAUNCH_NAMESPACE",
            "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}} in container["env"]

    objs = objects("train.metrics.enabled=false")
    assert "PodMonitor" not in objs
    container = pod_spec(objs["PyTorchJob"])["containers"][0]
    assert [p["name"] for p in container["ports"]] == ["pytorchjob-port"]
    assert "PodMonitor" not in objects("cluster.monitoring.pod_monitor=false")
    with pytest.raises(ConfigError, match="train.metrics.port: 23456 is the PyTorchJob rendezvous port"):
        manifests.render(spec_of("train.metrics.port=23456"))


def test_trainjob_uses_the_torch_distributed_runtime_and_the_same_configmap():
    objs = objects("cluster.api=trainjob", "cluster.nodes=2", "cluster.gpus_per_node=4", "cluster.storage.size=1Ti",
                   "cluster.secrets=[{env: HF_TOKEN, secret: hf, key: token}]")
    tj = objs["TrainJob"]
    assert tj["apiVersion"] == "trainer.kubeflow.org/v1alpha1"
    assert tj["spec"]["runtimeRef"] == {"apiGroup": "trainer.kubeflow.org", "kind": "ClusterTrainingRuntime",
                                        "name": "torch-distributed"}
    trainer = tj["spec"]["trainer"]
    assert (trainer["numNodes"], trainer["numProcPerNode"]) == (2, 4)
    assert trainer["command"][:3] == ["env", "--chdir=/workspace", "torchrun"]  # no workingDir in a TrainJob
    assert "--rdzv-endpoint=$(PET_MASTER_ADDR):$(PET_MASTER_PORT)" in trainer["command"]
    assert trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == 4
    assert {"name": "HF_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token", "optional": False}}} in trainer["env"]
    assert "podSpecOverrides" not in tj["spec"]  # Trainer v2.0's field; v2.2+ prune it
    [patch] = tj["spec"]["runtimePatches"]
    assert patch["manager"] == "llmlaunch.dev/launcher"
    [job] = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    pod = job["template"]["spec"]["template"]
    assert job["name"] == "node" and pod["spec"]["containers"][0]["name"] == "node"
    assert {v["name"] for v in pod["spec"]["volumes"]} == {"config", "scratch", "shm", "data", "no-sa-token"}
    assert pod["metadata"]["labels"]["app.kubernetes.io/component"] == "trainer"
    pm = objs["PodMonitor"]["spec"]
    assert pm["selector"]["matchLabels"] == {"jobset.sigs.k8s.io/jobset-name": "tiny"}
    assert pm["podMetricsEndpoints"][0]["portNumber"] == 9400


def test_names_stay_dns_labels_within_63_characters():
    longest = "a" * 40  # the longest job name the job file accepts
    for overrides in ([], ["cluster.api=trainjob"], ["cluster.elastic={min_nodes: 1, max_nodes: 99999}"]):
        spec = spec_of(f"name={longest}", "cluster.nodes=99999", *overrides)
        from launcher.spec import names
        for name in [*names.derived_names(spec), names.config_map(spec.name), names.data_claim(spec.name)]:
            assert len(name) <= 63
        manifests.render(spec)
    with pytest.raises(ConfigError, match="name: .*starting with a letter"):
        manifests.render(spec_of("name=1tiny"))


def test_rendering_is_deterministic_across_processes():
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    outputs = {
        subprocess.run([sys.executable, "-m", "launcher.cli", "render", str(EXAMPLES / "pretrain-multinode.yaml"),
                        "--image", TEST_IMAGE],
                       capture_output=True, check=True, cwd=root,
                       env={**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(root)}).stdout
        for seed in ("1", "2")
    }
    assert len(outputs) == 1
    spec = spec_of(f"cluster.image={TEST_IMAGE}", example=EXAMPLES / "pretrain-multinode.yaml")
    assert manifests.to_yaml_stream(manifests.render(spec)).encode() in outputs


def test_network_policy_admits_only_the_jobs_pods_and_metrics_scrapers():
    objs = objects()
    policy = objs["NetworkPolicy"]["spec"]
    selector = {"app.kubernetes.io/name": "llmlaunch", "app.kubernetes.io/instance": "tiny",
                "app.kubernetes.io/component": "trainer"}
    assert policy == {"podSelector": {"matchLabels": selector}, "policyTypes": ["Ingress"],
                      "ingress": [{"from": [{"podSelector": {"matchLabels": selector}}]},
                                  {"from": [{"namespaceSelector":
                                             {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
                                             "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}],
                                   "ports": [{"port": 9400, "protocol": "TCP"}]}]}
    assert objects("train.metrics.enabled=false")["NetworkPolicy"]["spec"]["ingress"] == policy["ingress"][:1]
    assert "NetworkPolicy" not in objects("cluster.network.policy=false")
    tj = objects("cluster.api=trainjob")["NetworkPolicy"]["spec"]
    assert tj["podSelector"] == {"matchLabels": {"jobset.sigs.k8s.io/jobset-name": "tiny"}}
