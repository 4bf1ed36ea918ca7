"""A namespace crowded with jobs, for tests/test_many_jobs.py and bench/many_jobs.py: llmlaunch jobs created
as `llmlaunch submit` creates them, other teams' PyTorchJobs beside them, and the apiserver's request counter.

The llmlaunch jobs are submitted suspended (cluster.run_policy.suspend=true), so no pod would ever be made for
them; no operator runs on the test control plane, so the status it would write for a suspended job (Created,
then Suspended) is written here through the status subresource.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from launcher.cluster import jobs
from launcher.cluster.client import KINDS, Cluster
from launcher.render.manifests import render
from launcher.spec.load import load_job
from tests.fixtures.control_plane import ControlPlane

TINY = Path(__file__).resolve().parent.parent / "examples" / "tiny.yaml"
PYTORCHJOBS = "/apis/kubeflow.org/v1/namespaces/{ns}/pytorchjobs"
WORKERS = 8  # each submit waits on ~10 round trips; 8 at once keep 2 cores busy without starving the apiserver


def job_names(start: int, stop: int) -> list[str]:
    return [f"job-{i:04d}" for i in range(start, stop)]


def suspended_status(name: str) -> dict:
    """What the training operator (v1.9) writes for a PyTorchJob created with runPolicy.suspend."""
    return {"conditions": [
        {"type": "Created", "status": "True", "reason": "PyTorchJobCreated",
         "message": f"PyTorchJob {name} is created.", "lastUpdateTime": "2025-01-01T00:00:00Z",
         "lastTransitionTime": "2025-01-01T00:00:00Z"},
        {"type": "Suspended", "status": "True", "reason": "PyTorchJobSuspended",
         "message": f"PyTorchJob {name} is suspended.", "lastUpdateTime": "2025-01-01T00:00:01Z",
         "lastTransitionTime": "2025-01-01T00:00:01Z"},
    ]}


def submit_suspended(plane: ControlPlane, namespace: str, names: list[str]) -> None:
    """Render and submit each job in-process, exactly as `llmlaunch submit` does, several at a time."""
    cluster = Cluster(str(plane.kubeconfig))

    def one(name: str) -> None:
        spec = load_job(TINY, [f"name={name}", f"cluster.namespace={namespace}", "cluster.run_policy.suspend=true"],
                        resolve_paths=False, pods=True)
        jobs.submit(cluster, render(spec), dry_run=False, echo=lambda _line: None)
        cluster.patch_status(KINDS["PyTorchJob"], namespace, name, suspended_status(name))

    with ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(one, names))  # list(): re-raise the first failure here


def foreign_job(name: str) -> dict:
    """Another team's PyTorchJob: valid, but without llmlaunch's labels."""
    return {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob",
            "metadata": {"name": name, "labels": {"team": "vision", "app.kubernetes.io/name": "vision-trainer"}},
            "spec": {"runPolicy": {"suspend": True}, "pytorchReplicaSpecs": {"Master": {
                "replicas": 1, "restartPolicy": "OnFailure",
                "template": {"spec": {"containers": [{"name": "pytorch", "image": "vision/trainer:2"}]}}}}}}


def create_foreign(plane: ControlPlane, namespace: str, count: int) -> list[str]:
    names = [f"vision-{i:03d}" for i in range(count)]
    with ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(lambda n: plane.api("POST", PYTORCHJOBS.format(ns=namespace), foreign_job(n)), names))
    return names


def request_metric(plane: ControlPlane, metric: str, verb: str, resource: str) -> float:
    """The apiserver's own `metric` for `verb` requests of `resource`, summed over every code, scope and
    version (GET /metrics): what the server saw, whatever the client believes it sent."""
    total = 0.0
    for line in plane.metrics_text().splitlines():
        if not line.startswith(metric + "{"):
            continue
        labels, value = line.rsplit(" ", 1)
        found = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        if found.get("verb") == verb and found.get("resource") == resource:
            total += float(value)
    return total


def request_count(plane: ControlPlane, verb: str, resource: str) -> int:
    return int(request_metric(plane, "apiserver_request_total", verb, resource))


def request_seconds(plane: ControlPlane, verb: str, resource: str) -> float:
    """Time the apiserver spent serving those requests, from receiving each to its last byte written."""
    return request_metric(plane, "apiserver_request_duration_seconds_sum", verb, resource)
