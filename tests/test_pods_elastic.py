"""An elastic job (`cluster.elastic: {min_nodes: 2, max_nodes: 4}`) on the real node (marker `pods`) loses a node
for good and gets it back, and trains on through both without going back to step 0.

The PyTorchJob is rendered as training-operator v1.9 runs it (elasticPolicy, Workers only, c10d rendezvous at
worker 0, `torchrun --nnodes=2:4`); tests/operator_standin.py turns it into pods as v1.9.4's ReconcilePods does,
which deletes the pod and service of every index at or above `replicas` and creates the missing ones. Lowering
`replicas` is what the operator's HPA (or a user) does; the stand-in has no HPA, so the test patches the job.

What happens, with real torchrun agents: worker 3's pod gets SIGTERM; its trainer's stop flag is max-reduced, so
all four ranks write an emergency checkpoint at the same step and exit; the other three agents restart their
workers (a failure, counted against max_restarts) and re-rendezvous at three nodes once c10d's last call (30 s)
passes without a fourth; the trainers resume from that checkpoint, converted for three ranks. When the pod comes
back, its agent waits at the rendezvous, the three agents see it (a membership change, not counted) and stop
their workers (another emergency checkpoint), and four ranks go on from it.
"""

from __future__ import annotations

import re

import pytest

from node_jobs import STORAGE_CLASS, cli, create_volume, host_volume, job_file, job_pods, running_container, wait_for
from pod_cluster import JOB_TIMEOUT, last_step, pod_cluster
from trainjobs import losses

pytestmark = pytest.mark.pods

JOB = "elastic"
RUN = {"max_steps": 60, "save_every": 20, "eval_every": 30, "keep_last": 8}
STEPS = RUN["max_steps"]
ROUND = re.compile(r"rendezvous: (\d+) node\(s\) x 1 = world size (\d+); ([^\n]*)")
RESUMED = re.compile(r"resuming from \S+ \(step (\d+)\)")


@pytest.fixture(scope="module")
def cluster(control_plane, node, node_images, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pods-elastic")
    with pod_cluster(control_plane, node, node_images, tmp, "elastic", jobs=(JOB,)) as cluster:
        yield cluster


def _set_replicas(cluster, replicas: int) -> None:
    cluster.plane.api("PATCH", cluster.job_path(JOB), {"spec": {"pytorchReplicaSpecs": {"Worker": {
        "replicas": replicas}}}}, content_type="application/merge-patch+json")


def _rounds(log: str) -> list[tuple[int, str]]:
    return [(int(world), why) for _, world, why in ROUND.findall(log)]


def test_an_elastic_job_goes_on_at_three_nodes_and_back_at_four(cluster):
    plane, ns, tmp = cluster.plane, cluster.namespace, cluster.tmp
    volume = host_volume(tmp / "volume")
    create_volume(plane, f"{ns}-elastic", volume)
    job = job_file(tmp, JOB, ns, cluster.image, {"size": "1Gi", "storage_class": STORAGE_CLASS}, nodes=4, **RUN)
    submitted = cli(plane, "submit", str(job), "--set", "cluster.elastic={min_nodes: 2, max_nodes: 4}")
    assert submitted.returncode == 0, submitted.stderr
    stored = plane.api("GET", cluster.job_path(JOB))
    assert stored["spec"]["elasticPolicy"] == {"minReplicas": 2, "maxReplicas": 4, "maxRestarts": 3,
                                               "rdzvBackend": "c10d"}
    assert list(stored["spec"]["pytorchReplicaSpecs"]) == ["Worker"]
    metrics = volume / "runs" / JOB / "metrics.jsonl"
    wait_for(lambda: len(p := job_pods(plane, ns, JOB)) == 4 and all(map(running_container, p.values())),
             "four workers running", 300, 0.5)
    wait_for(lambda: last_step(metrics) >= 12, "step 12 at four nodes", JOB_TIMEOUT, 0.2)

    # A node leaves for good: replicas 4 -> 3.
    _set_replicas(cluster, 3)
    left_at = last_step(metrics)
    wait_for(lambda: "elastic-worker-3" not in job_pods(plane, ns, JOB), "worker 3 to go", 120)
    wait_for(lambda: any(w == 3 for w, _ in _rounds(cluster.logs(JOB))), "a rendezvous of three", 240, 2)
    resumed_at_three = int(RESUMED.findall(cluster.logs(JOB))[-1])
    wait_for(lambda: last_step(metrics) >= resumed_at_three + 5, "five steps at three nodes", JOB_TIMEOUT, 0.2)
    assert len(job_pods(plane, ns, JOB)) == 3 and cluster.status(JOB)["state"] == "Running"

    # It comes back: replicas 3 -> 4.
    _set_replicas(cluster, 4)
    wait_for(lambda: [w for w, _ in _rounds(cluster.logs(JOB))][-1:] == [4] and
             len(_rounds(cluster.logs(JOB))) >= 3, "a rendezvous of four again", 240, 2)
    cluster.wait_state(JOB, "Succeeded")

    log = cluster.logs(JOB)
    (tmp / "elastic-node-0.log").write_text(log)
    rounds, resumes = _rounds(log), [int(s) for s in RESUMED.findall(log)]
    assert [w for w, _ in rounds] == [4, 3, 4], rounds
    assert rounds[0][1] == "first rendezvous of this run (no checkpoint)"
    assert rounds[1][1].startswith("a node left: ") and "written by 4 processes" in rounds[1][1], rounds
    # Node 0's agent counts the departure as its failure (its ranks exited 143), or, when another agent was
    # first into the next round, restarts as a membership change: at most one restart spent, never more.
    left_because = rounds[1][1].removeprefix(f"a node left: step-{resumes[0]:06d} was written by 4 processes")
    assert left_because in ("", " (1 of 3 restarts after a failure used on this node)"), rounds
    assert rounds[2][1].startswith("a node joined: ") and "written by 3 processes" in rounds[2][1], rounds
    # Never back to step 0: each round resumed where the last one stopped (its emergency checkpoint).
    assert len(resumes) == 2 and left_at <= resumes[0] < resumes[1] < STEPS, (left_at, resumes)
    for step in resumes:
        assert (volume / "runs" / JOB / "checkpoints" / f"step-{step:06d}" / "universal").is_dir(), step
    curve = losses(volume / "runs" / JOB)
    assert sorted(curve) == list(range(1, STEPS + 1))
    # The curve goes on: the first step of each new round is near the last round's recent losses, well below the
    # untrained loss (~6.2) a restart from step 0 would show.
    for step in resumes:
        recent = [curve[s] for s in range(step - 4, step + 1)]
        assert curve[step + 1] < max(recent) * 1.3 and curve[step + 1] < curve[1] - 1.0, (step, curve)
    by_world = {4: resumes[0] + (STEPS - resumes[1]), 3: resumes[1] - resumes[0]}
    cluster.note("elastic", steps_by_world_size=by_world, resumed_at=resumes, rounds=rounds,
                 loss={s: curve[s] for s in (1, resumes[0], resumes[0] + 1, resumes[1], resumes[1] + 1, STEPS)})
