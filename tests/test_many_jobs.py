"""A namespace with hundreds of jobs, on the real kube-apiserver + etcd (tests/fixtures/control_plane.py).

300 llmlaunch jobs (submitted suspended, as `llmlaunch submit` does) beside 50 PyTorchJobs of another team.
`list`, `status` and `delete` run as the real CLI process; what they cost is read from the apiserver's own
request counter (GET /metrics), so "one list request per kind, none per job" is the server's word. An
expired continue token is made for real: etcd is compacted past the revision of a list being paged.
"""

from __future__ import annotations

import json
import math
import subprocess

import pytest

from bulk_jobs import create_foreign, job_names, request_count, submit_suspended
from launcher.cluster.client import KINDS, Cluster, KubeError
from launcher.spec.names import jobs_selector
from tests.fixtures.control_plane import ControlPlane
from trainjobs import llmlaunch

pytestmark = pytest.mark.cluster

LLMLAUNCH_JOBS, FOREIGN_JOBS = 300, 50
PAGE = 7  # small pages, so 300 jobs take many continue tokens


@pytest.fixture(scope="module")
def crowded(control_plane: ControlPlane) -> str:
    ns = control_plane.create_namespace("many")
    create_foreign(control_plane, ns, FOREIGN_JOBS)
    submit_suspended(control_plane, ns, job_names(0, LLMLAUNCH_JOBS))
    return ns


def cli(plane: ControlPlane, *args: str) -> subprocess.CompletedProcess:
    return llmlaunch(*args, timeout=120, env={"KUBECONFIG": str(plane.kubeconfig)})


def listed(plane: ControlPlane, ns: str) -> list[dict]:
    result = cli(plane, "list", "-n", ns, "-o", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def reads(plane: ControlPlane, resource: str) -> dict[str, int]:
    return {verb: request_count(plane, verb, resource) for verb in ("LIST", "GET")}


def test_list_shows_the_300_jobs_with_one_list_request_per_kind(control_plane, crowded):
    before = {kind: reads(control_plane, kind) for kind in ("pytorchjobs", "trainjobs")}
    rows = listed(control_plane, crowded)
    after = {kind: reads(control_plane, kind) for kind in before}
    assert sorted(r["name"] for r in rows) == job_names(0, LLMLAUNCH_JOBS)  # no vision-* job among them
    assert {(r["namespace"], r["kind"], r["state"]) for r in rows} == {(crowded, "PyTorchJob", "Suspended")}
    # kube-apiserver 1.20 counts a GET of one custom resource as LIST too (kubernetes#95556): one LIST and
    # nothing else per kind also rules out a GET per job.
    assert {kind: {verb: after[kind][verb] - before[kind][verb] for verb in ("LIST", "GET")} for kind in before} == {
        "pytorchjobs": {"LIST": 1, "GET": 0}, "trainjobs": {"LIST": 1, "GET": 0}}


def test_status_reads_its_own_job_only(control_plane, crowded):
    before = sum(reads(control_plane, "pytorchjobs").values())
    result = cli(control_plane, "status", "job-0123", "-n", crowded, "-o", "json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["name"], summary["state"], summary["message"]) == (
        "job-0123", "Suspended", "PyTorchJob job-0123 is suspended.")
    assert sum(reads(control_plane, "pytorchjobs").values()) - before == 1  # its GET (counted as LIST on 1.20)


def test_small_pages_read_every_job_once_one_request_per_page(control_plane, crowded):
    cluster = Cluster(str(control_plane.kubeconfig))
    before = request_count(control_plane, "LIST", "pytorchjobs")
    items = cluster.list(KINDS["PyTorchJob"], crowded, jobs_selector(), limit=PAGE)
    assert [o["metadata"]["name"] for o in items] == job_names(0, LLMLAUNCH_JOBS)  # in order, none twice
    assert request_count(control_plane, "LIST", "pytorchjobs") - before == math.ceil(LLMLAUNCH_JOBS / PAGE)
    everything = cluster.list(KINDS["PyTorchJob"], crowded, limit=PAGE)
    assert len(everything) == LLMLAUNCH_JOBS + FOREIGN_JOBS


def compact_etcd(plane: ControlPlane, ns: str) -> None:
    """Write once (a new revision), then compact etcd up to it: every older list snapshot is gone."""
    plane.api("POST", f"/api/v1/namespaces/{ns}/configmaps",
              {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "bump-"}})
    status = subprocess.run(["etcdctl", "--endpoints", plane.etcd, "endpoint", "status", "-w", "json"],
                            capture_output=True, text=True, check=True, timeout=30)
    revision = json.loads(status.stdout)[0]["Status"]["header"]["revision"]
    subprocess.run(["etcdctl", "--endpoints", plane.etcd, "compact", str(revision)],
                   capture_output=True, check=True, timeout=30)


def compacting_after_first_pages(cluster: Cluster, plane: ControlPlane, ns: str, times: int) -> None:
    """After each of the next `times` first pages, compact etcd, so the continue token just handed out expires."""
    request, left = cluster.request, [times]

    def paged(method, path, query=None, *args, **kwargs):
        page = request(method, path, query, *args, **kwargs)
        if left[0] and "limit" in (query or {}) and "continue" not in query:
            left[0] -= 1
            compact_etcd(plane, ns)
        return page

    cluster.request = paged


def test_an_expired_continue_token_restarts_the_list_once(control_plane, crowded):
    cluster = Cluster(str(control_plane.kubeconfig))
    compacting_after_first_pages(cluster, control_plane, crowded, times=1)
    before = request_count(control_plane, "LIST", "pytorchjobs")
    items = cluster.list(KINDS["PyTorchJob"], crowded, jobs_selector(), limit=PAGE)
    assert [o["metadata"]["name"] for o in items] == job_names(0, LLMLAUNCH_JOBS)  # whole, nothing twice
    # the first page, its expired continuation, then the whole list again
    assert request_count(control_plane, "LIST", "pytorchjobs") - before == 2 + math.ceil(LLMLAUNCH_JOBS / PAGE)


def test_a_token_that_expires_again_fails_in_one_line(control_plane, crowded):
    cluster = Cluster(str(control_plane.kubeconfig))
    compacting_after_first_pages(cluster, control_plane, crowded, times=2)
    before = request_count(control_plane, "LIST", "pytorchjobs")
    with pytest.raises(KubeError) as failure:
        cluster.list(KINDS["PyTorchJob"], crowded, jobs_selector(), limit=PAGE)
    assert str(failure.value) == (
        f"cannot list pytorchjobs in namespace {crowded}: it changed faster than it could be read in pages of "
        f"{PAGE} (the continue token expired twice, HTTP 410 Expired); try again")
    assert failure.value.status == 410
    assert request_count(control_plane, "LIST", "pytorchjobs") - before == 4  # two tries of two pages each


def test_delete_one_job_then_list_shows_299(control_plane, crowded):
    deleted = cli(control_plane, "delete", "job-0007", "-n", crowded)
    assert deleted.returncode == 0, deleted.stderr
    assert "pytorchjob/job-0007 deleted" in deleted.stdout.splitlines()
    rows = listed(control_plane, crowded)
    assert sorted(r["name"] for r in rows) == [n for n in job_names(0, LLMLAUNCH_JOBS) if n != "job-0007"]
    assert len(rows) == LLMLAUNCH_JOBS - 1
