"""A job's ConfigMap, NetworkPolicy, PodMonitor, PodDisruptionBudget and created PVC go when the job goes,
whoever deletes it.

Real: kube-apiserver + etcd, kube-controller-manager (its garbage collector acts on ownerReferences, its
pvc-protection controller releases an unused claim), kubectl (the job deleted as a user or a TTL
controller would, not through llmlaunch), and RBAC (a user who may create but not patch).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from launcher.cli import cli
from trainer_v23 import kubectl_binary

pytestmark = pytest.mark.cluster

TINY = str(Path(__file__).resolve().parent.parent / "examples" / "tiny.yaml")
PATHS = {
    "ConfigMap": "/api/v1/namespaces/{ns}/configmaps/{name}-config",
    "NetworkPolicy": "/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies/{name}",
    "PodMonitor": "/apis/monitoring.coreos.com/v1/namespaces/{ns}/podmonitors/{name}",
    # (policy/v1beta1: the tests' apiserver is 1.20, submit sends the policy/v1 object there in that version)
    "PodDisruptionBudget": "/apis/policy/v1beta1/namespaces/{ns}/poddisruptionbudgets/{name}",
    "PersistentVolumeClaim": "/api/v1/namespaces/{ns}/persistentvolumeclaims/{name}-data",
}
GC_TIMEOUT = 90  # seconds for the garbage collector (and the pvc-protection controller) on a busy machine


def llmlaunch(plane, *args: str, kubeconfig=None):
    return CliRunner().invoke(cli, [*args, "--kubeconfig", str(kubeconfig or plane.kubeconfig)])


def kubectl(plane, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([kubectl_binary(), f"--kubeconfig={plane.kubeconfig}", *args], capture_output=True,
                          text=True, timeout=60)


def get(plane, kind: str, ns: str, name: str):
    return plane.api("GET", PATHS[kind].format(ns=ns, name=name))


def wait_gone(plane, kinds, ns: str, name: str) -> float:
    """Seconds until none of the job's objects of `kinds` is left."""
    start = time.monotonic()
    while time.monotonic() - start < GC_TIMEOUT:
        if all(get(plane, kind, ns, name) is None for kind in kinds):
            return time.monotonic() - start
        time.sleep(0.5)
    left = [kind for kind in kinds if get(plane, kind, ns, name) is not None]
    raise AssertionError(f"still there {GC_TIMEOUT} s after the job was deleted: {left}")


def test_kubectl_delete_of_the_job_takes_its_objects_with_it(control_plane, controller_manager):
    ns = control_plane.create_namespace("gc")
    submitted = llmlaunch(control_plane, "submit", TINY, "-n", ns, "--set", "cluster.storage.size=1Gi",
                          "--set", "cluster.disruption_budget=true")
    assert submitted.exit_code == 0, submitted.output
    assert submitted.stdout.splitlines()[6] == ("owned by pytorchjob/tiny (deleted with it): configmap/tiny-config, "
                                                "persistentvolumeclaim/tiny-data, networkpolicy/tiny, podmonitor/tiny, "
                                                "poddisruptionbudget/tiny")
    job = control_plane.api("GET", f"/apis/kubeflow.org/v1/namespaces/{ns}/pytorchjobs/tiny")
    for kind in PATHS:
        assert get(control_plane, kind, ns, "tiny")["metadata"]["ownerReferences"] == [
            {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "name": "tiny",
             "uid": job["metadata"]["uid"]}], kind

    deleted = kubectl(control_plane, "delete", "pytorchjob", "tiny", "-n", ns)
    assert deleted.returncode == 0, deleted.stderr
    took = wait_gone(control_plane, PATHS, ns, "tiny")
    print(f"garbage collector removed the {len(PATHS)} dependents {took:.1f} s after kubectl delete")


def test_a_kept_claim_and_an_existing_claim_outlive_their_jobs(control_plane, controller_manager):
    ns = control_plane.create_namespace("gc")
    kept = llmlaunch(control_plane, "submit", TINY, "-n", ns, "--set", "cluster.api=trainjob", "--set",
                     "cluster.storage.size=1Gi", "--set", "cluster.storage.keep=true")
    assert kept.exit_code == 0, kept.output
    claim = get(control_plane, "PersistentVolumeClaim", ns, "tiny")
    assert "ownerReferences" not in claim["metadata"]
    assert claim["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    assert get(control_plane, "ConfigMap", ns, "tiny")["metadata"]["ownerReferences"][0]["kind"] == "TrainJob"

    control_plane.api("POST", f"/api/v1/namespaces/{ns}/persistentvolumeclaims", {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "shared"},
        "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}}})
    other = llmlaunch(control_plane, "submit", TINY, "-n", ns, "--set", "name=other",
                      "--set", "cluster.storage.claim=shared")
    assert other.exit_code == 0, other.output

    assert kubectl(control_plane, "delete", "trainjob", "tiny", "-n", ns).returncode == 0
    assert kubectl(control_plane, "delete", "pytorchjob", "other", "-n", ns).returncode == 0
    wait_gone(control_plane, ["ConfigMap", "NetworkPolicy", "PodMonitor"], ns, "tiny")
    wait_gone(control_plane, ["ConfigMap", "NetworkPolicy", "PodMonitor"], ns, "other")
    time.sleep(2)  # the collector works per object: give it the chance to (wrongly) take the claims too
    left = kubectl(control_plane, "get", "pvc", "-n", ns, "-o", "json")
    assert sorted(i["metadata"]["name"] for i in json.loads(left.stdout)["items"]
                  if not i["metadata"].get("deletionTimestamp")) == ["shared", "tiny-data"]

    # llmlaunch delete honours the keep policy as helm uninstall does.
    again = llmlaunch(control_plane, "submit", TINY, "-n", ns, "--set", "name=third",
                      "--set", "cluster.storage.size=1Gi", "--set", "cluster.storage.keep=true")
    assert again.exit_code == 0, again.output
    removed = llmlaunch(control_plane, "delete", "third", "-n", ns)
    assert "persistentvolumeclaim/third-data kept (cluster.storage.keep)" in removed.stdout
    assert get(control_plane, "PersistentVolumeClaim", ns, "third") is not None


def test_a_submit_that_cannot_set_the_owner_is_undone(control_plane):
    """A user who may create and delete but not patch: every object is created, the owner patch is
    forbidden, and the submit removes all it created (nothing half-done)."""
    ns = control_plane.create_namespace("gc")
    rules = [{"apiGroups": [group], "resources": [resource], "verbs": ["create", "get", "list", "delete"]}
             for group, resource in [("", "configmaps"), ("networking.k8s.io", "networkpolicies"),
                                     ("monitoring.coreos.com", "podmonitors"), ("kubeflow.org", "pytorchjobs")]]
    control_plane.api("POST", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles",
                      {"metadata": {"name": "no-patch"}, "rules": rules})
    control_plane.api("POST", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings", {
        "metadata": {"name": "nobody-no-patch"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "no-patch"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "nobody"}]})
    result = llmlaunch(control_plane, "submit", TINY, "-n", ns, kubeconfig=control_plane.nobody_kubeconfig)
    assert result.exit_code == 1
    line = result.stderr.strip()
    assert "\n" not in line
    assert line.startswith(f"error: cannot make pytorchjob/tiny the owner of configmap {ns}/tiny-config: ")
    assert 'cannot patch resource "configmaps"' in line
    assert line.endswith("(removed what this submit created: pytorchjob/tiny, podmonitor/tiny, networkpolicy/tiny, "
                         "configmap/tiny-config)")
    for kind in ("ConfigMap", "NetworkPolicy", "PodMonitor"):
        assert get(control_plane, kind, ns, "tiny") is None
    assert control_plane.api("GET", f"/apis/kubeflow.org/v1/namespaces/{ns}/pytorchjobs/tiny") is None
