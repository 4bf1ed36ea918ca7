"""`llmlaunch submit job.yaml --nodes 4`, the headline, on the real node (marker `pods`): four pods train to the end
and match `llmlaunch train --nodes 4` of the same job on this machine; a drain is refused by the job's
PodDisruptionBudget while it runs; the start-up is timed (submit -> all pods Running -> step 1).

Real: kube-apiserver, controller-manager (its disruption controller computes the budget's allowed disruptions),
scheduler, kubelet, containerd, the trainer image, kubectl drain through the Eviction API. Stand-ins: the
training operator and cluster DNS (see tests/test_pods.py).
"""

from __future__ import annotations

import json
import time

import pytest

from node_jobs import (
    STORAGE_CLASS,
    cli,
    create_volume,
    host_volume,
    job_file,
    job_pods,
    running_container,
    wait_for,
)
from pod_cluster import drain, last_step, pod_cluster, restarts, uncordon
from trainjobs import llmlaunch, losses

pytestmark = pytest.mark.pods

NODES = 4
RUN = {"max_steps": 40, "save_every": 20, "eval_every": 20, "keep_last": 4, "max_restarts": 0}
STEPS = RUN["max_steps"]
JOB = "four"
SELECTOR = f"training.kubeflow.org/job-name={JOB}"


@pytest.fixture(scope="module")
def cluster(control_plane, node, node_images, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pods-four")
    with pod_cluster(control_plane, node, node_images, tmp, "four", jobs=(JOB,)) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def trained(cluster):
    """The job submitted with --nodes 4 and followed as a user follows it; what each step showed."""
    plane, ns, tmp = cluster.plane, cluster.namespace, cluster.tmp
    volume = host_volume(tmp / "volume")
    create_volume(plane, f"{ns}-four", volume)
    job = job_file(volume, JOB, ns, cluster.image, {"size": "1Gi", "storage_class": STORAGE_CLASS}, **RUN)
    metrics = volume / "runs" / JOB / "metrics.jsonl"

    started = time.monotonic()
    submitted = cli(plane, "submit", str(job), "--nodes", str(NODES), "--set", "cluster.disruption_budget=true")
    assert submitted.returncode == 0, submitted.stderr
    assert "poddisruptionbudget/four created" in submitted.stdout, submitted.stdout
    pods = wait_for(lambda: len(p := job_pods(plane, ns, JOB)) == NODES and all(map(running_container, p.values()))
                    and p, "all four pods running", 300, 0.1)
    all_running = time.monotonic() - started
    wait_for(lambda: last_step(metrics) >= 1, "step 1", 300, 0.1)
    first_step = time.monotonic() - started
    cluster.note("startup", submit_to_all_pods_running_s=round(all_running, 1),
                 submit_to_step_1_s=round(first_step, 1), pods=_milestones(pods))

    explained = wait_for(lambda: (s := cluster.status(JOB))["progress"] and s["progress"]["step"] and s,
                         "status to show the progress", 120, 1)
    text = cli(plane, "status", JOB, "-n", ns).stdout
    refused = drain(cluster, SELECTOR, timeout_s=15)
    uncordon(cluster)
    done = cluster.wait_state(JOB, "Succeeded")
    yield {"volume": volume, "job": job, "pods": pods, "status": explained, "status_text": text, "drain": refused,
           "done": done, "last_worker_log": cluster.logs(JOB, node=3)}


def _milestones(pods: dict[str, dict]) -> dict[str, dict[str, str]]:
    """When each pod was created, scheduled, initialized (init container done) and ready, as the apiserver
    recorded them (whole seconds): where the start-up time goes."""
    return {name: {"created": pod["metadata"]["creationTimestamp"],
                   **{c["type"]: c["lastTransitionTime"] for c in pod["status"].get("conditions") or []}}
            for name, pod in sorted(pods.items())}


def test_status_shows_four_of_four_running_and_the_progress(cluster, trained):
    s = trained["status"]
    assert (s["nodes"], s["pods_running"]) == (NODES, NODES), s
    assert sorted(p["name"] for p in s["pods"]) == ["four-master-0", "four-worker-0", "four-worker-1",
                                                    "four-worker-2"]
    assert s["progress"]["pod"] == "four-master-0" and s["progress"]["total"] == STEPS, s["progress"]
    assert "\nnodes:      4 (4/4 pods running)\n" in trained["status_text"], trained["status_text"]
    assert f" / {STEPS} (" in trained["status_text"]
    assert trained["done"]["replicas"]["Worker"]["succeeded"] == NODES - 1


def test_logs_of_node_3_are_the_last_workers(trained):
    log = trained["last_worker_log"]
    assert "[llmlaunch rank 3] metrics: serving http://0.0.0.0:9400/metrics" in log, log[-2000:]
    assert "[llmlaunch rank 2]" not in log


def test_a_drain_is_refused_by_the_jobs_disruption_budget(cluster, trained):
    """kubectl drain evicts through the Eviction API, which the PodDisruptionBudget (minAvailable 4) refuses while
    all four pods must run: the drain gives up at its timeout and no pod of the job was disturbed."""
    refused = trained["drain"]
    assert refused.returncode != 0, refused.stdout
    assert "Cannot evict pod as it would violate the pod's disruption budget" in refused.stderr, refused.stderr
    pdb = cluster.plane.api("GET", f"/apis/policy/v1beta1/namespaces/{cluster.namespace}/poddisruptionbudgets/{JOB}")
    assert pdb["spec"]["minAvailable"] == NODES and pdb["metadata"]["ownerReferences"][0]["name"] == JOB
    after = job_pods(cluster.plane, cluster.namespace, JOB)
    assert {n: p["metadata"]["uid"] for n, p in after.items()} == \
        {n: p["metadata"]["uid"] for n, p in trained["pods"].items()}
    assert all(restarts(p) == 0 for p in after.values())


def test_four_pods_end_where_four_local_nodes_end(cluster, trained, tmp_path):
    """The same job file, `llmlaunch train --nodes 4` here: four torchrun agents rendezvous as the pods did."""
    local = tmp_path / "local"
    result = llmlaunch("train", str(trained["job"]), "--nodes", str(NODES), "--nproc-per-node", "1",
                       "--output-dir", str(local), timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    pods_out = trained["volume"] / "runs" / JOB
    got, want = losses(pods_out), losses(local)
    assert sorted(got) == sorted(want) == list(range(1, STEPS + 1))
    assert abs(got[STEPS] - want[STEPS]) <= 1e-6, (got[STEPS], want[STEPS])
    # metrics.jsonl rounds the loss to 6 decimals: values 1e-7 apart can land one unit of the last digit apart.
    # (The image resolves its own dependency versions at build time, so a minor release may differ from .venv's.)
    apart = {s: round(abs(got[s] - want[s]) * 1e6) for s in want}
    assert max(apart.values()) <= 1, {s: (got[s], want[s]) for s in want if apart[s] > 1}
    from safetensors.torch import load_file

    a, b = load_file(pods_out / "final" / "model.safetensors"), load_file(local / "final" / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert (a[name] - b[name]).abs().max().item() <= 1e-6, name
    cluster.note("four", pods_final_loss=got[STEPS], local_final_loss=want[STEPS],
                 steps_one_digit_apart=sum(apart.values()),
                 max_weight_difference=max((a[n] - b[n]).abs().max().item() for n in a))
    print(json.dumps({"pods_final_loss": got[STEPS], "local_final_loss": want[STEPS]}))
