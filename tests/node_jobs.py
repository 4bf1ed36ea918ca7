"""What the `pods` tests set up around the real node: volumes, job files, the CLI, the Prometheus scrape.

Kept apart from tests/test_pods.py so the test reads as the steps a user goes through.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import yaml

from tests.fixtures.control_plane import USER, ControlPlane
from trainer_v23 import kubectl_binary
from trainjobs import DATA, REPO, llmlaunch

POD_UID = POD_GID = 10001  # cluster.security's defaults, and the Dockerfile's user
STORAGE_CLASS = "llmlaunch-test"  # static binding: PVs and claims meet by class name, no provisioner
MOUNT = "/workspace"


def wait_for(check, what: str, timeout: float, interval: float = 0.5):
    """Poll until check() returns something truthy; that value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def host_volume(root: Path) -> Path:
    """A folder that backs a hostPath PersistentVolume, with the job's data and tokenizer put on it first
    (as a user copies them onto a claim), owned by the pods' user: hostPath volumes ignore fsGroup."""
    root.mkdir(parents=True)
    shutil.copytree(DATA / "tiny", root / "data" / "tiny")
    shutil.copytree(DATA / "tokenizer", root / "data" / "tokenizer")
    for path in [root, *root.rglob("*")]:
        os.chown(path, POD_UID, POD_GID)
    return root


def create_volume(plane: ControlPlane, name: str, path: Path) -> None:
    plane.api("POST", "/api/v1/persistentvolumes", {
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name},
        "spec": {"capacity": {"storage": "5Gi"}, "accessModes": ["ReadWriteMany"], "storageClassName": STORAGE_CLASS,
                 "persistentVolumeReclaimPolicy": "Retain", "hostPath": {"path": str(path), "type": "Directory"}}})


def create_claim(plane: ControlPlane, namespace: str, name: str) -> None:
    plane.api("POST", f"/api/v1/namespaces/{namespace}/persistentvolumeclaims", {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name},
        "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": STORAGE_CLASS,
                 "resources": {"requests": {"storage": "1Gi"}}}})


def job_file(tmp: Path, name: str, namespace: str, image: str, storage: dict, nodes: int = 2, **run) -> Path:
    """examples/tiny.yaml's model and data on `nodes` pods x 1 CPU process, sized for a 2-core node."""
    tiny = yaml.safe_load((DATA.parent / "tiny.yaml").read_text())
    train = tiny["train"]
    train["model"]["tokenizer"] = "data/tokenizer"  # relative to the pods' working directory: the volume
    train["data"].update(train="data/tiny/train.jsonl", eval="data/tiny/eval.jsonl")
    train["run"].update(output_dir=f"runs/{name}", log_every=1, **run)
    job = {
        "name": name,
        "cluster": {
            "nodes": nodes, "gpus_per_node": 0, "image": image, "image_pull_policy": "Never", "namespace": namespace,
            "resources": {"cpu": "250m", "memory": "3Gi", "shm_size": "256Mi"},
            "storage": {**storage, "mount_path": MOUNT}, "monitoring": {"interval": "2s"},
            "termination_grace_period_seconds": 60,
        },
        "train": train,
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))
    return path


def bind_user_to_the_role(plane: ControlPlane, namespace: str) -> None:
    """alice (control_plane.user_kubeconfig) bound only to helm/llmlaunch/rbac/role.yaml, applied with kubectl."""
    kubectl = [kubectl_binary(), f"--kubeconfig={plane.kubeconfig}"]
    for args in (["apply", "-n", namespace, "-f", str(REPO / "helm" / "llmlaunch" / "rbac" / "role.yaml")],
                 ["create", "rolebinding", f"{USER}-llmlaunch", "-n", namespace, "--role=llmlaunch-user",
                  f"--user={USER}"]):
        out = subprocess.run([*kubectl, *args], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr


def cli(plane: ControlPlane, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """The real llmlaunch CLI in a subprocess, with the test cluster's kubeconfig."""
    return llmlaunch(*args, timeout=timeout, env={"KUBECONFIG": str(plane.kubeconfig)})


def job_pods(plane: ControlPlane, namespace: str, job: str) -> dict[str, dict]:
    selector = f"training.kubeflow.org/job-name={job}"
    items = plane.api("GET", f"/api/v1/namespaces/{namespace}/pods?labelSelector={selector}")["items"]
    return {p["metadata"]["name"]: p for p in items if not p["metadata"].get("deletionTimestamp")}


def running_container(pod: dict) -> str | None:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status["name"] == "pytorch" and "running" in status.get("state", {}):
            return status["containerID"]
    return None


def podmonitor_scrape_config(podmonitor: dict, plane: ControlPlane) -> list[dict]:
    """The scrape job a PodMonitor stands for: the pods its selector picks in its namespaces, at their IP and
    the container port its endpoint names, with its path, interval, honorLabels and relabelings.
    prometheus-operator writes this as Kubernetes pod discovery plus keep-relabelings; Debian's Prometheus is
    built without Kubernetes discovery, so the selection is made here, from the same apiserver, at start."""
    spec = podmonitor["spec"]
    selector = ",".join(f"{k}={v}" for k, v in spec["selector"]["matchLabels"].items())
    pods = [pod for ns in spec["namespaceSelector"]["matchNames"]
            for pod in plane.api("GET", f"/api/v1/namespaces/{ns}/pods?labelSelector={selector}")["items"]]
    configs = []
    for index, endpoint in enumerate(spec["podMetricsEndpoints"]):
        extra = {r["targetLabel"]: r["replacement"] for r in endpoint.get("relabelings", [])
                 if r.get("action", "replace") == "replace"}
        targets = [{"targets": [f"{pod['status']['podIP']}:{port['containerPort']}"],
                    "labels": {"pod": pod["metadata"]["name"], "namespace": pod["metadata"]["namespace"], **extra}}
                   for pod in pods for container in pod["spec"]["containers"]
                   for port in container.get("ports", []) if port.get("name") == endpoint["port"]]
        configs.append({
            "job_name": f"podMonitor/{podmonitor['metadata']['namespace']}/{podmonitor['metadata']['name']}/{index}",
            "honor_labels": endpoint.get("honorLabels", False), "scrape_interval": endpoint.get("interval", "30s"),
            "metrics_path": endpoint.get("path", "/metrics"), "static_configs": targets,
        })
    return configs
