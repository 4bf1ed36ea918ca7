"""Least privilege, against the real apiserver's RBAC authorizer (--authorization-mode=RBAC).

alice is bound only to helm/llmlaunch/rbac/role.yaml (the Role docs/cluster.md gives), applied with the real
kubectl: submit (with its owner patches), status (with the job's pods and Warning events), list, delete work;
`list -A` is refused until the ClusterRole of rbac/clusterrole.yaml is bound too. nobody, bound to nothing,
gets one line per command that names the verb and the resource, and exit 1. `logs` as alice is not run here:
a pod whose log can be read needs the real node (tests/fixtures/node.py), where alice runs `status` of pending
jobs (tests/test_status_pods.py) and of a training one, whose progress needs the pods/proxy rule
(tests/test_pods.py); the pods/log rule is not exercised yet.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from launcher.cli import cli
from node_jobs import bind_user_to_the_role
from tests.fixtures.control_plane import USER
from trainer_v23 import kubectl_binary

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parent.parent
RBAC = ROOT / "helm" / "llmlaunch" / "rbac"
TINY = str(ROOT / "examples" / "tiny.yaml")


def run(kubeconfig, *args: str):
    return CliRunner().invoke(cli, [*args, "--kubeconfig", str(kubeconfig)])


def kubectl(plane, *args: str) -> None:
    out = subprocess.run([kubectl_binary(), f"--kubeconfig={plane.kubeconfig}", *args], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr


def test_a_user_bound_to_the_role_runs_every_command(control_plane):
    ns = control_plane.create_namespace("rbac")
    bind_user_to_the_role(control_plane, ns)
    alice = control_plane.user_kubeconfig
    for args in (["--set", "cluster.storage.size=1Gi", "--set", "cluster.disruption_budget=true"],
                 ["--set", "cluster.api=trainjob", "--set", "name=tj"]):
        submitted = run(alice, "submit", TINY, "-n", ns, *args)
        assert submitted.exit_code == 0, submitted.output
        assert "owned by" in submitted.stdout
        assert ("poddisruptionbudget/tiny created" in submitted.stdout) == ("cluster.disruption_budget=true" in args)
    status = run(alice, "status", "tiny", "-n", ns, "-o", "json")
    assert status.exit_code == 0, status.output
    explained = json.loads(status.stdout)
    # The Role lets status read the job's pods and Warning events (none yet: no operator runs here).
    assert (explained["state"], explained["pods"], explained["events"], explained["unavailable"]) == \
        ("Pending", [], [], {})
    listed = run(alice, "list", "-n", ns, "-o", "json")
    assert listed.exit_code == 0 and [r["name"] for r in json.loads(listed.stdout)] == ["tiny", "tj"]

    everywhere = run(alice, "list", "-A")
    assert everywhere.exit_code == 1 and len(everywhere.stderr.splitlines()) == 1
    assert f'User "{USER}" cannot list resource "pytorchjobs" in API group "kubeflow.org" at the cluster scope' \
        in everywhere.stderr
    kubectl(control_plane, "apply", "-f", str(RBAC / "clusterrole.yaml"))
    kubectl(control_plane, "create", "clusterrolebinding", f"{USER}-llmlaunch-list-all-{ns}",
            "--clusterrole=llmlaunch-list-all", f"--user={USER}")
    everywhere = run(alice, "list", "-A", "-o", "json")
    assert everywhere.exit_code == 0, everywhere.output
    assert {("tiny", ns), ("tj", ns)} <= {(r["name"], r["namespace"]) for r in json.loads(everywhere.stdout)}

    for job in ("tiny", "tj"):
        deleted = run(alice, "delete", job, "-n", ns)
        assert deleted.exit_code == 0, deleted.output
    for path in ("api/v1/namespaces/{ns}/configmaps", "api/v1/namespaces/{ns}/persistentvolumeclaims",
                 "apis/policy/v1beta1/namespaces/{ns}/poddisruptionbudgets"):  # (policy/v1 from Kubernetes 1.21)
        # (a controller-manager in the session adds its own kube-root-ca.crt ConfigMap: not ours)
        items = control_plane.api("GET", f"/{path.format(ns=ns)}?labelSelector="
                                  "app.kubernetes.io/managed-by%3Dllmlaunch")["items"]
        assert [i for i in items if not i["metadata"].get("deletionTimestamp")] == []


@pytest.mark.parametrize("args, verb, resource", [
    (["submit", TINY], "create", "configmaps"),
    (["status", "tiny"], "get", "pytorchjobs"),
    (["list"], "list", "pytorchjobs"),
    (["logs", "tiny"], "get", "pytorchjobs"),
    (["delete", "tiny"], "list", "pytorchjobs"),
])
def test_a_user_without_the_role_gets_one_line_naming_verb_and_resource(control_plane, args, verb, resource):
    ns = control_plane.create_namespace("rbac")
    result = run(control_plane.nobody_kubeconfig, *args, "-n", ns)
    assert result.exit_code == 1, result.output
    [line] = result.stderr.splitlines()
    assert "forbidden" in line and f'cannot {verb} resource "{resource}"' in line, line
    assert line.endswith("(Forbidden, HTTP 403); the llmlaunch-user Role grants what the CLI needs "
                         "(docs/cluster.md#least-privilege)")


def test_the_chart_installs_the_same_rules():
    from chart_helm import template

    objects = template("run", "--set", "rbac.create=true", "--set", "rbac.allNamespaces=true",
                       "--set", "rbac.subjects[0].kind=User", "--set", f"rbac.subjects[0].name={USER}",
                       namespace="team")
    kinds = {o["kind"]: o for o in objects if o["kind"] in ("Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")}
    assert kinds["Role"]["rules"] == yaml.safe_load((RBAC / "role.yaml").read_text())["rules"]
    assert kinds["ClusterRole"]["rules"] == yaml.safe_load((RBAC / "clusterrole.yaml").read_text())["rules"]
    assert kinds["RoleBinding"]["subjects"] == [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": USER}]
    assert kinds["RoleBinding"]["roleRef"]["name"] == kinds["Role"]["metadata"]["name"] == "run-user"
    assert not [o for o in template("run", namespace="team") if o["kind"].endswith(("Role", "RoleBinding"))]
