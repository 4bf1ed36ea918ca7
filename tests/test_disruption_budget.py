"""cluster.disruption_budget: the PodDisruptionBudget render writes (literal expectations), the version submit
sends to a server older than Kubernetes 1.21 (served_kind, and Cluster's requests with the API faked), its
owner, the chart values, and the Role that lets a user create and delete it.

Against the real kube-apiserver 1.20: tests/test_cluster_disruption_budget.py; the chart's copy of the object:
tests/test_chart_parity.py (scenarios *-disruption-budget) and tests/test_chart.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from launcher.cluster.client import KINDS, Cluster, KubeError, served_kind
from launcher.render import ownership
from launcher.render.chart_files import SCENARIOS, load_scenario
from launcher.render.helm_values import chart_values
from launcher.render.manifests import render
from launcher.spec.load import load_job

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "examples" / "tiny.yaml"
PDB = KINDS["PodDisruptionBudget"]
V1BETA1 = {"policy/v1beta1": ["poddisruptionbudgets", "poddisruptionbudgets/status", "podsecuritypolicies"]}


def objects(*overrides: str) -> list[dict]:
    return render(load_job(TINY, ["cluster.namespace=team", "cluster.labels={team: ml}", *overrides],
                           resolve_paths=False))


def budget(*overrides: str) -> dict:
    [pdb] = [o for o in objects("cluster.disruption_budget=true", *overrides) if o["kind"] == "PodDisruptionBudget"]
    return pdb


def expected(min_available: int, selector: dict) -> dict:
    return {
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": "tiny", "namespace": "team", "labels": {
            "team": "ml", "app.kubernetes.io/name": "llmlaunch", "app.kubernetes.io/instance": "tiny",
            "app.kubernetes.io/component": "disruption-budget", "app.kubernetes.io/managed-by": "llmlaunch"}},
        "spec": {"minAvailable": min_available, "selector": {"matchLabels": selector}},
    }


TRAINER_PODS = {"app.kubernetes.io/name": "llmlaunch", "app.kubernetes.io/instance": "tiny",
                "app.kubernetes.io/component": "trainer"}


@pytest.mark.parametrize(("overrides", "min_available", "selector"), [
    (["cluster.nodes=3"], 3, TRAINER_PODS),
    (["cluster.nodes=2", "cluster.elastic={min_nodes: 1, max_nodes: 4}"], 1, TRAINER_PODS),  # a drain may shrink it
    (["cluster.nodes=4", "cluster.elastic={min_nodes: 3, max_nodes: 4}"], 3, TRAINER_PODS),
    (["cluster.api=trainjob", "cluster.nodes=2"], 2, {"jobset.sigs.k8s.io/jobset-name": "tiny"}),
])
def test_the_budget_keeps_every_node_or_an_elastic_jobs_minimum(overrides, min_available, selector):
    assert budget(*overrides) == expected(min_available, selector)


@pytest.mark.parametrize("api", ["pytorchjob", "trainjob"])
def test_it_selects_exactly_the_pods_the_network_policy_selects_and_comes_before_the_job(api):
    objs = objects("cluster.disruption_budget=true", f"cluster.api={api}", "cluster.nodes=2")
    kinds = [o["kind"] for o in objs]
    assert kinds[-2:] == ["PodDisruptionBudget", "PyTorchJob" if api == "pytorchjob" else "TrainJob"]
    policy, pdb = (next(o for o in objs if o["kind"] == k) for k in ("NetworkPolicy", "PodDisruptionBudget"))
    assert pdb["spec"]["selector"]["matchLabels"] == policy["spec"]["podSelector"]["matchLabels"]
    if api == "pytorchjob":  # ... which are the labels on the job's pod template
        pod_labels = objs[-1]["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["metadata"]["labels"]
        assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_off_by_default_and_carried_into_the_chart_values():
    assert "PodDisruptionBudget" not in {o["kind"] for o in objects()}
    assert chart_values(load_job(TINY, resolve_paths=False))["disruptionBudget"] is False
    assert chart_values(load_job(TINY, ["cluster.disruption_budget=true"], resolve_paths=False))["disruptionBudget"]


def test_the_budget_is_owned_by_the_job_so_it_goes_with_it():
    assert ownership.should_own(budget())


# -- the version sent: policy/v1 (Kubernetes >= 1.21), else policy/v1beta1 ------------------------------------

def test_served_kind_keeps_policy_v1_where_the_server_serves_it():
    assert served_kind(PDB, {"policy/v1": ["poddisruptionbudgets"], **V1BETA1}) == PDB


def test_served_kind_falls_back_to_v1beta1_on_a_server_before_1_21():
    older = served_kind(PDB, {"policy/v1": [], **V1BETA1})
    assert (older.api_version, older.kind, older.plural) == ("policy/v1beta1", "PodDisruptionBudget",
                                                             "poddisruptionbudgets")
    assert older.path("team", "tiny") == "/apis/policy/v1beta1/namespaces/team/poddisruptionbudgets/tiny"
    assert served_kind(PDB, V1BETA1) == older  # no policy/v1 group version at all (404)


def test_served_kind_changes_nothing_else():
    assert served_kind(PDB, {}) == PDB  # neither served: the server's own 404 will say so
    job = KINDS["PyTorchJob"]
    assert served_kind(job, {"kubeflow.org/v1beta1": ["pytorchjobs"]}) == job  # only kinds with a known older twin


class FakeApi(Cluster):
    """A Cluster whose requests go to a dict of discovery answers, recording each call (no server)."""

    def __init__(self, discovery: dict[str, list[str]]):  # no kubeconfig read
        self._served, self.discovery, self.calls = {}, discovery, []

    def request(self, method, path, query=None, body=None, **kwargs):
        self.calls.append((method, path, body))
        if method == "GET" and path.count("/") == 3:  # /apis/GROUP/VERSION: discovery
            if path.removeprefix("/apis/") not in self.discovery:
                raise KubeError("not found", status=404)
            return {"resources": [{"name": n} for n in self.discovery[path.removeprefix("/apis/")]]}
        return body or {}


def test_submit_requests_on_a_1_20_server_go_to_policy_v1beta1_with_the_same_spec():
    cluster = FakeApi(V1BETA1)
    pdb = budget("cluster.nodes=2")
    assert cluster.missing_kinds([PDB]) == []
    cluster.create(pdb)
    cluster.merge_patch(PDB, "team", "tiny", {"metadata": {}})
    cluster.delete(PDB, "team", "tiny")
    sent = [(m, p) for m, p, _ in cluster.calls if m != "GET"]
    assert sent == [("POST", "/apis/policy/v1beta1/namespaces/team/poddisruptionbudgets"),
                    ("PATCH", "/apis/policy/v1beta1/namespaces/team/poddisruptionbudgets/tiny"),
                    ("DELETE", "/apis/policy/v1beta1/namespaces/team/poddisruptionbudgets/tiny")]
    body = next(b for m, _, b in cluster.calls if m == "POST")
    assert body == {**pdb, "apiVersion": "policy/v1beta1"} and pdb["apiVersion"] == "policy/v1"  # rendered stays
    # discovery is read once per Cluster: the two group versions, then missing_kinds' check of the one used
    assert [p for m, p, _ in cluster.calls if m == "GET"] == ["/apis/policy/v1", "/apis/policy/v1beta1",
                                                              "/apis/policy/v1beta1"]


def test_a_current_server_gets_policy_v1_as_rendered():
    cluster = FakeApi({"policy/v1": ["poddisruptionbudgets"], **V1BETA1})
    pdb = budget()
    cluster.create(pdb)
    assert cluster.calls[-1] == ("POST", "/apis/policy/v1/namespaces/team/poddisruptionbudgets", pdb)


# -- the Role lets a user create (and own, and delete) everything submit creates ------------------------------

def test_the_role_covers_every_kind_submit_creates():
    rules = yaml.safe_load((ROOT / "helm" / "llmlaunch" / "rbac" / "role.yaml").read_text())["rules"]

    def verbs(kind) -> set[str]:
        return {v for r in rules if kind.group in r["apiGroups"] and kind.plural in r["resources"] for v in r["verbs"]}

    submits = [render(load_scenario(name)) for name in SCENARIOS]
    assert "PodDisruptionBudget" in {o["kind"] for objs in submits for o in objs}
    for objs in submits:
        for obj in objs:  # the job last; submit patches the owner reference into the others
            owned = obj is not objs[-1] and ownership.should_own(obj)
            needed = {"create", "list", "delete"} | ({"patch"} if owned else set())
            assert needed <= verbs(KINDS[obj["kind"]]), obj["kind"]
    assert verbs(PDB) == {"create", "get", "patch", "list", "delete"}
