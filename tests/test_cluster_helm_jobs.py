"""The cluster commands with what users made outside `llmlaunch submit`, against the real
kube-apiserver (tests/fixtures/control_plane.py): jobs installed with the Helm chart, and existing
claims whose own access modes decide whether several nodes can share them."""

from __future__ import annotations

import json

import pytest

from chart_helm import CHART, helm
from test_cluster_e2e import PVCS, PYTORCHJOBS, llmlaunch, names_in

pytestmark = [pytest.mark.cluster, pytest.mark.helm]

TINY = str(CHART.parent.parent / "examples" / "tiny.yaml")


def test_list_status_and_delete_find_a_job_installed_with_the_chart(control_plane):
    ns = control_plane.create_namespace("helmjob")
    helm("install", "demo", str(CHART), "-n", ns, "-f", str(CHART / "ci" / "multi-node-values.yaml"),
         kubeconfig=control_plane.kubeconfig)
    listed = llmlaunch(control_plane, "list", "-n", ns, "-o", "json")
    assert listed.exit_code == 0, listed.output
    assert [(r["name"], r["kind"]) for r in json.loads(listed.stdout)] == [("pretrain-1b", "PyTorchJob")]
    status = llmlaunch(control_plane, "status", "pretrain-1b", "-n", ns, "-o", "json")
    assert status.exit_code == 0 and json.loads(status.stdout)["nodes"] == 4, status.output
    # Helm owns the release: delete names the command that removes it and deletes nothing itself.
    deleted = llmlaunch(control_plane, "delete", "pretrain-1b", "-n", ns)
    assert deleted.exit_code == 1
    assert deleted.output.strip() == (f"error: job pretrain-1b in namespace {ns} was installed with Helm "
                                      f"(release demo): remove it with helm uninstall demo -n {ns}")
    assert names_in(control_plane, PYTORCHJOBS, ns) == ["pretrain-1b"]


def test_list_shows_submitted_and_chart_jobs_together(control_plane):
    ns = control_plane.create_namespace("both")
    helm("install", "demo", str(CHART), "-n", ns, "--set", "name=charted", kubeconfig=control_plane.kubeconfig)
    assert llmlaunch(control_plane, "submit", TINY, "-n", ns).exit_code == 0
    listed = llmlaunch(control_plane, "list", "-n", ns, "-o", "json")
    assert sorted(r["name"] for r in json.loads(listed.stdout)) == ["charted", "tiny"]


def make_claim(plane, ns: str, name: str, modes: list[str], bound_modes: list[str] | None = None) -> None:
    plane.api("POST", PVCS.format(ns=ns),
              {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name},
               "spec": {"accessModes": modes, "resources": {"requests": {"storage": "1Gi"}}}})
    if bound_modes is not None:  # what the bound volume offers, as the controller-manager would write it
        plane.api("PATCH", f"{PVCS.format(ns=ns)}/{name}/status",
                  {"status": {"phase": "Bound", "accessModes": bound_modes}},
                  content_type="application/merge-patch+json")


def test_submit_looks_up_an_existing_claim_and_refuses_read_write_once_for_several_nodes(control_plane):
    ns = control_plane.create_namespace("claim")
    make_claim(control_plane, ns, "rwo", ["ReadWriteOnce"])
    # The job file declares ReadWriteMany (the default); the claim itself is ReadWriteOnce.
    refused = llmlaunch(control_plane, "submit", TINY, "-n", ns, "--nodes", "2", "--set", "cluster.storage.claim=rwo")
    assert refused.exit_code == 1
    assert refused.output.strip() == (f"error: cluster.storage.claim: PersistentVolumeClaim {ns}/rwo is ReadWriteOnce; "
                                      "2 pods on different nodes need ReadWriteMany")
    assert names_in(control_plane, PYTORCHJOBS, ns) == []
    # One node may use it.
    assert llmlaunch(control_plane, "submit", TINY, "-n", ns, "--set", "cluster.storage.claim=rwo").exit_code == 0


def test_a_bound_claim_is_judged_by_its_volume_and_a_missing_one_is_named(control_plane):
    ns = control_plane.create_namespace("bound")
    make_claim(control_plane, ns, "asked-rwx", ["ReadWriteMany"], bound_modes=["ReadWriteOnce"])
    refused = llmlaunch(control_plane, "submit", TINY, "-n", ns, "--nodes", "2",
                        "--set", "cluster.storage.claim=asked-rwx")
    assert refused.exit_code == 1 and "asked-rwx is ReadWriteOnce" in refused.output
    missing = llmlaunch(control_plane, "submit", TINY, "-n", ns, "--set", "cluster.storage.claim=nope",
                        "--dry-run", "server")
    assert missing.exit_code == 1 and f"no PersistentVolumeClaim {ns}/nope" in missing.output
    make_claim(control_plane, ns, "rwx", ["ReadWriteMany"], bound_modes=["ReadWriteMany"])
    assert llmlaunch(control_plane, "submit", TINY, "-n", ns, "--nodes", "2",
                     "--set", "cluster.storage.claim=rwx").exit_code == 0
