"""helm install / upgrade / uninstall of the chart against the real kube-apiserver of
tests/fixtures/control_plane.py (CRDs installed: PyTorchJob, TrainJob, PodMonitor, PrometheusRule).

No controller-manager runs there, so nothing acts on the objects: a deleted PVC keeps the
kubernetes.io/pvc-protection finalizer that the controller-manager would remove; the test
removes it in its place after checking that helm asked for the deletion.
"""

from __future__ import annotations

import json
import time

import pytest

import chart_helm
from chart_helm import CHART, helm
from test_cluster_e2e import contains, llmlaunch

pytestmark = [pytest.mark.helm, pytest.mark.cluster]

COLLECTIONS = {  # kind -> list path of the kinds the chart creates
    "ConfigMap": "/api/v1/namespaces/{ns}/configmaps",
    "PersistentVolumeClaim": "/api/v1/namespaces/{ns}/persistentvolumeclaims",
    "NetworkPolicy": "/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies",
    "PodMonitor": "/apis/monitoring.coreos.com/v1/namespaces/{ns}/podmonitors",
    "PodDisruptionBudget": "/apis/policy/v1beta1/namespaces/{ns}/poddisruptionbudgets",  # (1.20: no policy/v1)
    "PrometheusRule": "/apis/monitoring.coreos.com/v1/namespaces/{ns}/prometheusrules",
    "PyTorchJob": "/apis/kubeflow.org/v1/namespaces/{ns}/pytorchjobs",
    "TrainJob": "/apis/trainer.kubeflow.org/v1alpha1/namespaces/{ns}/trainjobs",
    "Secret": "/api/v1/namespaces/{ns}/secrets",  # where helm keeps its release records
}


def ci_values(name: str) -> str:
    return str(CHART / "ci" / f"{name}-values.yaml")


def stored(plane, ns: str) -> dict[str, list[dict]]:
    out = {}
    for kind, path in COLLECTIONS.items():
        items = plane.api("GET", path.format(ns=ns))["items"]
        if items:
            out[kind] = items
    return out


def names(objects: dict[str, list[dict]]) -> set[tuple[str, str]]:
    return {(kind, o["metadata"]["name"]) for kind, items in objects.items() for o in items}


def test_install_upgrade_uninstall_leaves_nothing_behind(control_plane):
    ns = control_plane.create_namespace("helm")
    kube = control_plane.kubeconfig
    values = ci_values("multi-node")
    installed = helm("install", "pretrain", str(CHART), "-n", ns, "-f", values, kubeconfig=kube)
    assert f"llmlaunch status pretrain-1b -n {ns}" in installed.stdout  # NOTES.txt
    assert f"PodMonitor {ns}/pretrain-1b makes the Prometheus operator scrape it" in installed.stdout

    # Exactly what helm template renders with this cluster's APIs, stored as sent (nothing pruned).
    sent = chart_helm.template("pretrain", "-f", values, namespace=ns)
    objects = stored(control_plane, ns)
    assert names(objects) - {("Secret", "sh.helm.release.v1.pretrain.v1")} == {
        (o["kind"], o["metadata"]["name"]) for o in sent}
    by_name = {(k, o["metadata"]["name"]): o for k, items in objects.items() for o in items}
    for obj in sent:  # (items of a list carry no apiVersion and kind)
        body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}
        assert contains(body, by_name[(obj["kind"], obj["metadata"]["name"])]) == [], obj["kind"]

    # llmlaunch's own commands see the job the chart created.
    status = llmlaunch(control_plane, "status", "pretrain-1b", "-n", ns, "-o", "json")
    assert status.exit_code == 0, status.output
    assert json.loads(status.stdout)["name"] == "pretrain-1b"

    helm("upgrade", "pretrain", str(CHART), "-n", ns, "-f", values, "--set", "image=ghcr.io/llmlaunch/trainer:0.2.0",
         kubeconfig=kube)
    job = control_plane.api("GET", COLLECTIONS["PyTorchJob"].format(ns=ns) + "/pretrain-1b")
    images = {r["template"]["spec"]["containers"][0]["image"] for r in job["spec"]["pytorchReplicaSpecs"].values()}
    assert images == {"ghcr.io/llmlaunch/trainer:0.2.0"}
    history = json.loads(helm("history", "pretrain", "-n", ns, "-o", "json", kubeconfig=kube).stdout)
    assert [(h["revision"], h["status"]) for h in history] == [(1, "superseded"), (2, "deployed")]

    result = helm("uninstall", "pretrain", "-n", ns, kubeconfig=kube)
    assert 'release "pretrain" uninstalled' in result.stdout
    left = stored(control_plane, ns)
    assert names(left) == {("PersistentVolumeClaim", "pretrain-1b-data")}
    claim = left["PersistentVolumeClaim"][0]
    assert claim["metadata"]["deletionTimestamp"]
    assert claim["metadata"]["finalizers"] == ["kubernetes.io/pvc-protection"]
    path = COLLECTIONS["PersistentVolumeClaim"].format(ns=ns) + "/pretrain-1b-data"
    control_plane.api("PATCH", path, {"metadata": {"finalizers": None}}, content_type="application/merge-patch+json")
    assert stored(control_plane, ns) == {}
    assert helm("list", "-n", ns, "-q", kubeconfig=kube).stdout.strip() == ""


def test_a_trainjob_release_installs_and_uninstalls(control_plane):
    ns = control_plane.create_namespace("helm-tj")
    kube = control_plane.kubeconfig
    # Without the created PVC (its finalizer is covered above): uninstall must then leave nothing at all.
    helm("install", "tj", str(CHART), "-n", ns, "-f", ci_values("trainjob"), "--set", "storage.size=null",
         kubeconfig=kube)
    objects = stored(control_plane, ns)
    assert {kind for kind in objects} == {"ConfigMap", "NetworkPolicy", "PodMonitor", "PrometheusRule",
                                          "TrainJob", "Secret"}
    assert objects["TrainJob"][0]["spec"]["trainer"]["numNodes"] == 2
    helm("uninstall", "tj", "-n", ns, kubeconfig=kube)
    assert stored(control_plane, ns) == {}


def test_helm_upgrade_of_the_image_leaves_running_pods_alone(control_plane):
    """What docs/helm.md says `helm upgrade --set image=` does: the PyTorchJob's pod template changes, the
    operator (tests/operator_standin.py, as training-operator v1.9.4 reconciles) leaves the pods it made
    alone, and only a pod created again (here: deleted) gets the new image."""
    from operator_standin import PyTorchJobOperator, wait_for

    ns = control_plane.create_namespace("helm-up")
    kube = control_plane.kubeconfig
    pods_path = f"/api/v1/namespaces/{ns}/pods"

    def images() -> dict[str, str]:
        return {p["metadata"]["name"]: next(c["image"] for c in p["spec"]["containers"] if c["name"] == "pytorch")
                for p in control_plane.api("GET", pods_path)["items"] if not p["metadata"].get("deletionTimestamp")}

    old, new = "registry.example.com/ml/llmlaunch-trainer:0.1.0", "registry.example.com/ml/llmlaunch-trainer:0.2.0"
    helm("install", "up", str(CHART), "-n", ns, "-f", ci_values("single-node"), "--set", "name=up",
         "--set", f"image={old}", "--set", "storage.size=null", kubeconfig=kube)
    with PyTorchJobOperator(control_plane, ns, interval=0.2) as op:
        first = wait_for(lambda: images() == {"up-master-0": old} and control_plane.api("GET", pods_path)["items"][0],
                         what="the master pod")
        helm("upgrade", "up", str(CHART), "-n", ns, "-f", ci_values("single-node"), "--set", "name=up",
             "--set", f"image={new}", "--set", "storage.size=null", kubeconfig=kube)
        job = control_plane.api("GET", COLLECTIONS["PyTorchJob"].format(ns=ns) + "/up")
        assert job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["image"] == new
        time.sleep(1.5)  # about seven reconcile passes of the stand-in (every 0.2 s) see the new template
        pod = control_plane.api("GET", f"{pods_path}/up-master-0")
        assert pod["metadata"]["uid"] == first["metadata"]["uid"] and images() == {"up-master-0": old}

        control_plane.api("DELETE", f"{pods_path}/up-master-0")  # e.g. kubectl delete pod (SIGTERM: a checkpoint)
        wait_for(lambda: images() == {"up-master-0": new}, what="the master pod recreated with the new image")
    assert not op.errors
    helm("uninstall", "up", "-n", ns, kubeconfig=kube)
