"""cluster.disruption_budget against the real kube-apiserver 1.20 (tests/fixtures/control_plane.py), which serves
PodDisruptionBudget only as policy/v1beta1: `llmlaunch submit` creates the rendered policy/v1 object in that
version, with the same spec, owned by the job; `llmlaunch delete` removes it; a server dry run sends it too.
(The garbage collector removing it with the job: tests/test_owner_references.py.)
"""

from __future__ import annotations

import pytest

from launcher.render.manifests import render
from launcher.spec.load import load_job
from test_cluster_e2e import TINY, contains, llmlaunch

pytestmark = pytest.mark.cluster

PDBS = "/apis/policy/v1beta1/namespaces/{ns}/poddisruptionbudgets"
JOBS = {"pytorchjob": "/apis/kubeflow.org/v1/namespaces/{ns}/pytorchjobs",
        "trainjob": "/apis/trainer.kubeflow.org/v1alpha1/namespaces/{ns}/trainjobs"}


def test_this_server_serves_pod_disruption_budgets_only_as_v1beta1(control_plane):
    assert control_plane.api("GET", "/apis/policy/v1") is None  # 404: Kubernetes 1.20
    names = [r["name"] for r in control_plane.api("GET", "/apis/policy/v1beta1")["resources"]]
    assert "poddisruptionbudgets" in names


@pytest.mark.parametrize(("api", "sets", "min_available"), [
    ("pytorchjob", ["cluster.nodes=3"], 3),
    ("pytorchjob", ["cluster.nodes=2", "cluster.elastic={min_nodes: 1, max_nodes: 3}"], 1),
    ("trainjob", ["cluster.api=trainjob", "cluster.nodes=2"], 2),
])
def test_submit_creates_the_budget_as_v1beta1_owned_by_the_job_and_delete_removes_it(control_plane, api, sets,
                                                                                      min_available):
    ns = control_plane.create_namespace("pdb")
    sets = [*sets, "cluster.disruption_budget=true"]
    submitted = llmlaunch(control_plane, "submit", TINY, "-n", ns, *(w for s in sets for w in ("--set", s)))
    assert submitted.exit_code == 0, submitted.output
    assert submitted.stdout.splitlines()[:6] == [
        "configmap/tiny-config created", "networkpolicy/tiny created", "podmonitor/tiny created",
        "poddisruptionbudget/tiny created", f"{api}/tiny created",
        f"owned by {api}/tiny (deleted with it): configmap/tiny-config, networkpolicy/tiny, podmonitor/tiny, "
        "poddisruptionbudget/tiny"]

    rendered = next(o for o in render(load_job(TINY, [*sets, f"cluster.namespace={ns}"], resolve_paths=False))
                    if o["kind"] == "PodDisruptionBudget")
    stored = control_plane.api("GET", PDBS.format(ns=ns) + "/tiny")
    assert stored["apiVersion"] == "policy/v1beta1" and rendered["apiVersion"] == "policy/v1"
    assert contains({k: v for k, v in rendered.items() if k != "apiVersion"}, stored) == []  # kept as sent
    assert stored["spec"]["minAvailable"] == min_available
    job = control_plane.api("GET", JOBS[api].format(ns=ns) + "/tiny")
    assert stored["metadata"]["ownerReferences"] == [{"apiVersion": job["apiVersion"], "kind": job["kind"],
                                                      "name": "tiny", "uid": job["metadata"]["uid"]}]

    deleted = llmlaunch(control_plane, "delete", "tiny", "-n", ns)
    assert deleted.exit_code == 0, deleted.output
    assert "poddisruptionbudget/tiny deleted" in deleted.stdout.splitlines()
    assert control_plane.api("GET", PDBS.format(ns=ns))["items"] == []


def test_server_dry_run_sends_the_budget_and_creates_nothing(control_plane):
    ns = control_plane.create_namespace("pdb")
    result = llmlaunch(control_plane, "submit", TINY, "-n", ns, "--set", "cluster.disruption_budget=true",
                       "--dry-run", "server")
    assert result.exit_code == 0, result.output
    assert "poddisruptionbudget/tiny created (server dry run)" in result.stdout.splitlines()
    assert control_plane.api("GET", PDBS.format(ns=ns))["items"] == []


def test_a_submit_failing_after_the_budget_removes_it(control_plane):
    ns = control_plane.create_namespace("pdb")
    job = render(load_job(TINY, [f"cluster.namespace={ns}"], resolve_paths=False))[-1]
    control_plane.api("POST", JOBS["pytorchjob"].format(ns=ns), job)  # someone else's job holds the name
    result = llmlaunch(control_plane, "submit", TINY, "-n", ns, "--set", "cluster.disruption_budget=true")
    assert result.exit_code == 1
    assert "(removed what this submit created: poddisruptionbudget/tiny, podmonitor/tiny" in result.stderr
    assert control_plane.api("GET", PDBS.format(ns=ns))["items"] == []
