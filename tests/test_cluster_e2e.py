"""The cluster commands against a real kube-apiserver + etcd (tests/fixtures/control_plane.py).

No operator or kubelet runs there: where the training operator would write a job's status, the
test writes it through the status subresource, and pods exist only as objects the test creates
(they never run, so reading their logs ends in the server's own error).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from launcher.cli import cli
from launcher.render.manifests import render
from launcher.spec.load import load_job

pytestmark = pytest.mark.cluster

TINY = str(Path(__file__).resolve().parent.parent / "examples" / "tiny.yaml")
PYTORCHJOBS = "/apis/kubeflow.org/v1/namespaces/{ns}/pytorchjobs"
TRAINJOBS = "/apis/trainer.kubeflow.org/v1alpha1/namespaces/{ns}/trainjobs"
CONFIGMAPS = "/api/v1/namespaces/{ns}/configmaps"
PVCS = "/api/v1/namespaces/{ns}/persistentvolumeclaims"
PODMONITORS = "/apis/monitoring.coreos.com/v1/namespaces/{ns}/podmonitors"
NETPOLS = "/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies"


def llmlaunch(plane, *args: str, kubeconfig: Path | None = None):
    return CliRunner().invoke(cli, [*args, "--kubeconfig", str(kubeconfig or plane.kubeconfig)])


def names_in(plane, path: str, ns: str) -> list[str]:
    return sorted(o["metadata"]["name"] for o in plane.api("GET", path.format(ns=ns))["items"])


def contains(sent, stored, where="") -> list[str]:
    """Paths of everything we sent that the server did not keep as sent (pruned or changed)."""
    if isinstance(sent, dict):
        if not isinstance(stored, dict):
            return [where]
        return [p for k, v in sent.items() for p in contains(v, stored.get(k), f"{where}.{k}")]
    if isinstance(sent, list):
        if not isinstance(stored, list) or len(sent) != len(stored):
            return [where]
        return [p for i, (a, b) in enumerate(zip(sent, stored, strict=True)) for p in contains(a, b, f"{where}[{i}]")]
    # The server may write a quantity back as a string (8 -> "8"); that is the same value.
    return [] if sent == stored or str(sent) == str(stored) else [where]


def set_conditions(plane, ns: str, name: str, *types: str, path: str = PYTORCHJOBS) -> None:
    """Write the conditions the training operator would: the last one True, earlier Running False."""
    conditions = []
    for i, t in enumerate(types):
        last = i == len(types) - 1
        status = "True" if last or t == "Created" else "False"
        conditions.append({"type": t, "status": status, "reason": f"PyTorchJob{t}",
                           "message": f"PyTorchJob {name} is {t.lower()}.",
                           "lastUpdateTime": f"2025-01-01T00:00:0{i}Z",
                           "lastTransitionTime": f"2025-01-01T00:00:0{i}Z"})
    plane.api("PATCH", path.format(ns=ns) + f"/{name}/status", {"status": {"conditions": conditions}},
              content_type="application/merge-patch+json")


def test_submit_creates_every_object_as_rendered_then_list_status_delete(control_plane):
    ns = control_plane.create_namespace()
    args = ("--nodes", "3", "--set", "cluster.storage.size=1Gi", "--set",
            "cluster.secrets=[{env: HF_TOKEN, secret: hf, key: token}]", "-n", ns)
    result = llmlaunch(control_plane, "submit", TINY, *args)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[:5] == ["configmap/tiny-config created",
                                              "persistentvolumeclaim/tiny-data created",
                                              "networkpolicy/tiny created", "podmonitor/tiny created",
                                              "pytorchjob/tiny created"]
    expected = render(load_job(TINY, ["cluster.nodes=3", "cluster.storage.size=1Gi", f"cluster.namespace={ns}",
                                      "cluster.secrets=[{env: HF_TOKEN, secret: hf, key: token}]"],
                               resolve_paths=False))
    paths = {"ConfigMap": CONFIGMAPS, "PersistentVolumeClaim": PVCS, "PodMonitor": PODMONITORS,
             "PyTorchJob": PYTORCHJOBS, "NetworkPolicy": NETPOLS}
    for obj in expected:
        stored = control_plane.api("GET", paths[obj["kind"]].format(ns=ns) + "/" + obj["metadata"]["name"])
        assert contains(obj, stored) == [], f"{obj['kind']}: the server dropped or changed these fields"

    listed = llmlaunch(control_plane, "list", "-n", ns, "-o", "json")
    rows = [(r["name"], r["kind"], r["state"], r["nodes"]) for r in json.loads(listed.stdout)]
    assert rows == [("tiny", "PyTorchJob", "Pending", 3)]
    status = llmlaunch(control_plane, "status", "tiny", "-n", ns)
    assert status.exit_code == 0 and "state:      Pending" in status.stdout

    deleted = llmlaunch(control_plane, "delete", "tiny", "-n", ns)
    assert deleted.exit_code == 0, deleted.output
    assert sorted(deleted.stdout.splitlines()) == ["configmap/tiny-config deleted", "networkpolicy/tiny deleted",
                                                   "persistentvolumeclaim/tiny-data deleted", "podmonitor/tiny deleted",
                                                   "pytorchjob/tiny deleted"]
    for path in paths.values():
        remaining = [o for o in control_plane.api("GET", path.format(ns=ns))["items"]
                     if not o["metadata"].get("deletionTimestamp")]  # PVCs wait on their protection finalizer
        assert remaining == []
    again = llmlaunch(control_plane, "delete", "tiny", "-n", ns)
    assert again.exit_code == 1 and again.stderr == f"error: no job tiny in namespace {ns}: nothing to delete\n"


def test_server_dry_run_validates_and_creates_nothing(control_plane):
    ns = control_plane.create_namespace()
    result = llmlaunch(control_plane, "submit", TINY, "-n", ns, "--dry-run", "server")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["configmap/tiny-config created (server dry run)",
                                          "networkpolicy/tiny created (server dry run)",
                                          "podmonitor/tiny created (server dry run)",
                                          "pytorchjob/tiny created (server dry run)"]
    for path in (CONFIGMAPS, NETPOLS, PODMONITORS, PYTORCHJOBS):
        assert names_in(control_plane, path, ns) == []


@pytest.mark.parametrize(("conditions", "state"), [
    (("Created",), "Created"), (("Created", "Running"), "Running"),
    (("Created", "Running", "Restarting"), "Restarting"),
    (("Created", "Running", "Succeeded"), "Succeeded"), (("Created", "Running", "Failed"), "Failed"),
])
def test_status_reports_the_operators_conditions(control_plane, conditions, state):
    ns = control_plane.create_namespace()
    assert llmlaunch(control_plane, "submit", TINY, "-n", ns).exit_code == 0
    set_conditions(control_plane, ns, "tiny", *conditions)
    result = llmlaunch(control_plane, "status", "tiny", "-n", ns, "-o", "json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["state"], summary["message"]) == (state, f"PyTorchJob tiny is {state.lower()}.")
    assert [c["type"] for c in summary["conditions"]] == list(conditions)
    text = llmlaunch(control_plane, "status", "tiny", "-n", ns).stdout
    assert f"state:      {state} (PyTorchJob tiny is {state.lower()}.)" in text


@pytest.mark.parametrize(("final", "exit_code"), [("Running", 0), ("Failed", 1)])
def test_submit_wait_follows_the_job_until_it_runs_or_fails(control_plane, final, exit_code):
    ns = control_plane.create_namespace()
    box = {}
    thread = threading.Thread(target=lambda: box.update(r=llmlaunch(control_plane, "submit", TINY, "-n", ns, "--wait",
                                                                    "--timeout", "60")))
    thread.start()
    deadline = time.monotonic() + 30
    while "tiny" not in names_in(control_plane, PYTORCHJOBS, ns):
        assert time.monotonic() < deadline, "the job never appeared"
        time.sleep(0.2)
    set_conditions(control_plane, ns, "tiny", "Created")
    time.sleep(2.5)  # one poll sees Created
    set_conditions(control_plane, ns, "tiny", "Created", final)
    thread.join(60)
    result = box["r"]
    assert result.exit_code == exit_code, result.output
    assert f"pytorchjob/tiny: {final} (PyTorchJob tiny is {final.lower()}.)" in result.stdout
    if final == "Failed":
        assert result.stderr == f"error: pytorchjob {ns}/tiny failed: PyTorchJob tiny is failed.\n"


def test_wait_times_out_with_the_last_state(control_plane):
    ns = control_plane.create_namespace()
    result = llmlaunch(control_plane, "submit", TINY, "-n", ns, "--wait", "--timeout", "1")
    assert result.exit_code == 1
    assert result.stderr == f"error: timed out after 1 s waiting for pytorchjob {ns}/tiny to run (state Pending)\n"


def test_list_shows_only_llmlaunch_jobs_across_namespaces(control_plane):
    a, b = control_plane.create_namespace(), control_plane.create_namespace()
    for ns in (a, b):
        assert llmlaunch(control_plane, "submit", TINY, "-n", ns).exit_code == 0
    foreign = {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "metadata": {"name": "other"},
               "spec": {"pytorchReplicaSpecs": {"Master": {"replicas": 1, "template": {"spec": {"containers": [
                   {"name": "pytorch", "image": "x"}]}}}}}}
    control_plane.api("POST", PYTORCHJOBS.format(ns=a), foreign)
    rows = json.loads(llmlaunch(control_plane, "list", "-A", "-o", "json").stdout)
    assert {(r["namespace"], r["name"]) for r in rows} >= {(a, "tiny"), (b, "tiny")}
    assert (a, "other") not in {(r["namespace"], r["name"]) for r in rows}
    text = llmlaunch(control_plane, "list", "-n", a).stdout.splitlines()
    assert text[0].split() == ["NAMESPACE", "NAME", "KIND", "STATE", "NODES", "CREATED"]
    assert text[1].split()[:5] == [a, "tiny", "PyTorchJob", "Pending", "1"] and len(text) == 2


def test_name_taken_is_refused_and_the_existing_job_kept(control_plane):
    ns = control_plane.create_namespace()
    assert llmlaunch(control_plane, "submit", TINY, "-n", ns).exit_code == 0
    result = llmlaunch(control_plane, "submit", TINY, "-n", ns, "--nodes", "2")
    assert result.exit_code == 1
    assert result.stderr == (f"error: configmap {ns}/tiny-config already exists: remove the old job "
                             f"(llmlaunch delete tiny -n {ns}) or choose another name\n")
    job = control_plane.api("GET", PYTORCHJOBS.format(ns=ns) + "/tiny")
    assert list(job["spec"]["pytorchReplicaSpecs"]) == ["Master"]  # the first submit's job, untouched


def test_a_submit_failing_halfway_removes_what_it_created(control_plane):
    ns = control_plane.create_namespace()
    job = render(load_job(TINY, [f"cluster.namespace={ns}"], resolve_paths=False))[-1]
    control_plane.api("POST", PYTORCHJOBS.format(ns=ns), job)  # someone else's job holds the name
    result = llmlaunch(control_plane, "submit", TINY, "-n", ns)
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: pytorchjob {ns}/tiny already exists")
    assert result.stderr.rstrip().endswith(
        "(removed what this submit created: podmonitor/tiny, networkpolicy/tiny, configmap/tiny-config)")
    for path in (CONFIGMAPS, NETPOLS, PODMONITORS):
        assert names_in(control_plane, path, ns) == []


def test_missing_namespace(control_plane):
    result = llmlaunch(control_plane, "submit", TINY, "-n", "no-such-ns")
    assert result.exit_code == 1
    assert result.stderr == ("error: namespace no-such-ns does not exist: create it "
                             "(kubectl create namespace no-such-ns) or set cluster.namespace\n")


def test_forbidden_user_gets_the_servers_reason_and_nothing_is_created(control_plane):
    ns = control_plane.create_namespace()
    result = llmlaunch(control_plane, "submit", TINY, "-n", ns, kubeconfig=control_plane.nobody_kubeconfig)
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: cannot create configmap {ns}/tiny-config: ")
    assert 'User "nobody" cannot create resource "configmaps"' in result.stderr
    assert "(Forbidden, HTTP 403)" in result.stderr
    assert len(result.stderr.splitlines()) == 1 and names_in(control_plane, CONFIGMAPS, ns) == []
    status = llmlaunch(control_plane, "status", "tiny", "-n", ns, kubeconfig=control_plane.nobody_kubeconfig)
    assert status.exit_code == 1 and "Forbidden" in status.stderr


def test_crd_not_installed_tells_the_user_to_install_the_training_operator(control_plane):
    ns = control_plane.create_namespace()
    with control_plane.without_crd("kubeflow.org_pytorchjobs.yaml", "pytorchjobs.kubeflow.org"):
        result = llmlaunch(control_plane, "submit", TINY, "-n", ns)
        assert result.exit_code == 1
        assert result.stderr.startswith(f"error: the cluster at {control_plane.server} does not serve PyTorchJob "
                                        "(kubeflow.org/v1): install the Kubeflow training operator")
        assert names_in(control_plane, CONFIGMAPS, ns) == []  # refused before creating anything
        status = llmlaunch(control_plane, "status", "tiny", "-n", ns)
        assert status.exit_code == 1 and "no job tiny" in status.stderr  # TrainJob still served, no such job


def test_trainjob_submit_status_delete(control_plane):
    ns = control_plane.create_namespace()
    result = llmlaunch(control_plane, "submit", TINY, "-n", ns, "--set", "cluster.api=trainjob", "--nodes", "2")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[3] == "trainjob/tiny created"
    control_plane.api("PATCH", TRAINJOBS.format(ns=ns) + "/tiny/status", {"status": {"conditions": [
        {"type": "Complete", "status": "True", "reason": "JobsCompleted", "message": "jobs completed",
         "lastTransitionTime": "2025-01-01T00:00:00Z"}]}}, content_type="application/merge-patch+json")
    summary = json.loads(llmlaunch(control_plane, "status", "tiny", "-n", ns, "-o", "json").stdout)
    assert (summary["kind"], summary["state"], summary["nodes"]) == ("TrainJob", "Succeeded", 2)
    assert llmlaunch(control_plane, "delete", "tiny", "-n", ns).exit_code == 0
    assert names_in(control_plane, TRAINJOBS, ns) == [] and names_in(control_plane, CONFIGMAPS, ns) == []


def test_delete_keep_data_and_existing_claims_are_left_alone(control_plane):
    ns = control_plane.create_namespace()
    sets = ["cluster.storage.size=1Gi", f"cluster.namespace={ns}"]
    owned = {(o["kind"], o["metadata"]["name"]) for o in render(load_job(TINY, sets, resolve_paths=False))}
    assert ("PersistentVolumeClaim", "tiny-data") in owned and len(owned) == 5  # the job, its data and three more
    assert llmlaunch(control_plane, "submit", TINY, "-n", ns, "--set", sets[0]).exit_code == 0
    # A neighbour in the same namespace: deleting tiny must not touch it.
    assert llmlaunch(control_plane, "submit", TINY, "-n", ns, "--set", "name=other").exit_code == 0
    deleted = llmlaunch(control_plane, "delete", "tiny", "-n", ns, "--keep-data")
    assert deleted.exit_code == 0, deleted.output
    gone = owned - {("PersistentVolumeClaim", "tiny-data")}
    assert sorted(deleted.stdout.splitlines()) == sorted(f"{kind.lower()}/{name} deleted" for kind, name in gone)
    paths = {"ConfigMap": CONFIGMAPS, "PersistentVolumeClaim": PVCS, "PodMonitor": PODMONITORS,
             "PyTorchJob": PYTORCHJOBS, "NetworkPolicy": NETPOLS}
    for kind, name in gone:
        assert control_plane.api("GET", paths[kind].format(ns=ns) + "/" + name) is None, f"{kind} {name} is still there"
    claim = control_plane.api("GET", PVCS.format(ns=ns) + "/tiny-data")
    assert claim is not None and not claim["metadata"].get("deletionTimestamp")  # kept, and not on its way out
    assert names_in(control_plane, PYTORCHJOBS, ns) == ["other"]
    assert names_in(control_plane, CONFIGMAPS, ns) == ["other-config"]

    control_plane.api("POST", PVCS.format(ns=ns), {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                      "metadata": {"name": "shared"}, "spec": {"accessModes": ["ReadWriteMany"],
                                                               "resources": {"requests": {"storage": "1Gi"}}}})
    assert llmlaunch(control_plane, "submit", TINY, "-n", ns, "--set", "cluster.storage.claim=shared",
                     "--set", "name=third").exit_code == 0
    third = llmlaunch(control_plane, "delete", "third", "-n", ns)
    assert third.exit_code == 0, third.output
    assert sorted(third.stdout.splitlines()) == ["configmap/third-config deleted", "networkpolicy/third deleted",
                                                 "podmonitor/third deleted", "pytorchjob/third deleted"]
    shared = control_plane.api("GET", PVCS.format(ns=ns) + "/shared")
    assert shared is not None and not shared["metadata"].get("deletionTimestamp")


def make_pod(plane, ns: str, name: str, labels: dict, node: str | None = None) -> None:
    """A pod as the operator would create it (and, with `node`, as the scheduler would bind it).
    No kubelet runs, so the pod never starts."""
    spec = {"containers": [{"name": "pytorch", "image": "x"}, {"name": "sidecar", "image": "y"}]}
    if node:
        spec["nodeName"] = node
    plane.api("POST", f"/api/v1/namespaces/{ns}/pods",
              {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels}, "spec": spec})


def test_logs_picks_the_pod_of_the_requested_node(control_plane):
    ns = control_plane.create_namespace()
    assert llmlaunch(control_plane, "submit", TINY, "-n", ns, "--nodes", "3").exit_code == 0
    none_yet = llmlaunch(control_plane, "logs", "tiny", "-n", ns)
    assert none_yet.exit_code == 1
    assert none_yet.stderr.startswith(f"error: job {ns}/tiny has no pod for node 0 yet (job state Pending)")
    base = {"training.kubeflow.org/job-name": "tiny"}
    make_pod(control_plane, ns, "tiny-master-0", {**base, "training.kubeflow.org/replica-type": "master",
                                                   "training.kubeflow.org/replica-index": "0"})
    for i in (0, 1):
        make_pod(control_plane, ns, f"tiny-worker-{i}", {**base, "training.kubeflow.org/replica-type": "worker",
                                                          "training.kubeflow.org/replica-index": str(i)},
                 node=f"gpu-node-{i}")
    make_pod(control_plane, ns, "other-worker-1", {"training.kubeflow.org/job-name": "other",
                                                   "training.kubeflow.org/replica-type": "worker",
                                                   "training.kubeflow.org/replica-index": "1"}, node="gpu-node-1")
    master = llmlaunch(control_plane, "logs", "tiny", "-n", ns)
    assert master.exit_code == 1
    assert master.stderr == (f"error: pod {ns}/tiny-master-0 of node 0 is not scheduled yet (phase Pending): "
                             "no logs to show\n")
    for node, pod in ((1, "tiny-worker-0"), (2, "tiny-worker-1")):
        result = llmlaunch(control_plane, "logs", "tiny", "-n", ns, "--node", str(node), "--tail", "5")
        # The pod was found and its log requested from the server, which cannot reach a kubelet here.
        assert result.exit_code == 1
        assert result.stderr.startswith(f"error: cannot read the logs of pod {ns}/{pod}: ")
        assert f"gpu-node-{node - 1}" in result.stderr and len(result.stderr.splitlines()) == 1
    out_of_range = llmlaunch(control_plane, "logs", "tiny", "-n", ns, "--node", "3")
    assert out_of_range.exit_code == 2
    assert out_of_range.stderr == "error: --node: job tiny has 3 node(s), 0 to 2 (got 3)\n"
    missing = llmlaunch(control_plane, "logs", "nope", "-n", ns)
    assert missing.exit_code == 1 and missing.stderr.startswith(f"error: no job nope in namespace {ns}")


def test_missing_podmonitor_crd_names_both_ways_out(control_plane):
    ns = control_plane.create_namespace()
    with control_plane.without_crd("monitoring.coreos.com_podmonitors.yaml", "podmonitors.monitoring.coreos.com"):
        result = llmlaunch(control_plane, "submit", TINY, "-n", ns)
        assert result.exit_code == 1
        assert "does not serve PodMonitor (monitoring.coreos.com/v1): install the Prometheus operator" in result.stderr
        assert "or set cluster.monitoring.pod_monitor: false" in result.stderr
        ok = llmlaunch(control_plane, "submit", TINY, "-n", ns, "--set", "cluster.monitoring.pod_monitor=false")
        assert ok.exit_code == 0, ok.output
        assert llmlaunch(control_plane, "delete", "tiny", "-n", ns).exit_code == 0  # works without the CRD too
