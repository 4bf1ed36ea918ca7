"""A rendered 2-node job trained to the end in real pods on a real Kubernetes node (marker `pods`).

Real: kube-apiserver + etcd, kube-controller-manager (PV binder, endpoints, garbage collector, node
lifecycle), kube-scheduler, kubelet, containerd + runc + the CNI bridge (each pod its own IP), the trainer
image built from the repository's Dockerfile (on a CPU torch base), `llmlaunch submit / status / list /
logs / delete` as a user runs them, and a Prometheus that finds the pods through the apiserver.
Stand-ins, because no binary of them exists here: Kubeflow's training operator
(tests/operator_standin.py, which turns the stored PyTorchJob into pods and services as v1.9.4 does) and
cluster DNS for the operator's per-replica Services (tests/cluster_dns.py, dnsmasq fed from the real
Endpoints).

Two jobs share the node: pods-a runs untouched and is watched as a user watches a job; pods-b is the same
job hit by two faults, and must end exactly where pods-a ended.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from node_jobs import (
    POD_UID,
    STORAGE_CLASS,
    cli,
    create_claim,
    create_volume,
    host_volume,
    job_file,
    job_pods,
    podmonitor_scrape_config,
    running_container,
    wait_for,
)
from pod_cluster import JOB_TIMEOUT, drain, exit_codes, last_step, pod_cluster, read_json, restarts, uncordon
from tests.fixtures.control_plane import ControlPlane
from tests.fixtures.node import POD_SUBNET, Node
from tests.fixtures.prometheus import start_prometheus, stop
from trainer import yaml_io
from trainjobs import DATA, REPO, llmlaunch_env, losses

pytestmark = pytest.mark.pods

# Long enough that `status` catches the job mid-run on a fast machine; every checkpoint kept.
RUN = {"max_steps": 60, "save_every": 10, "eval_every": 20, "keep_last": 8, "max_restarts": 3}
STEPS = RUN["max_steps"]
SAVES = set(range(RUN["save_every"], STEPS + 1, RUN["save_every"]))


@pytest.fixture(scope="module")
def cluster(control_plane, node, node_images, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pods")
    with pod_cluster(control_plane, node, node_images, tmp, "pods", jobs=("pods-a", "pods-b")) as cluster:
        yield cluster


def test_a_rendered_job_trains_to_the_end_in_real_pods(cluster):
    plane, ns, tmp = cluster.plane, cluster.namespace, cluster.tmp
    volume = host_volume(tmp / "volume-a")
    create_volume(plane, f"{ns}-a", volume)
    job = job_file(tmp, "pods-a", ns, cluster.image, {"size": "1Gi", "storage_class": STORAGE_CLASS}, **RUN)
    submitted = cli(plane, "submit", str(job))
    assert submitted.returncode == 0, submitted.stderr

    claim = wait_for(lambda: (c := plane.api("GET", f"/api/v1/namespaces/{ns}/persistentvolumeclaims/pods-a-data"))
                     ["status"].get("phase") == "Bound" and c, "the PV controller to bind pods-a-data", 60)
    assert claim["spec"]["volumeName"] == f"{ns}-a"
    pods = wait_for(lambda: len(p := job_pods(plane, ns, "pods-a")) == 2 and all(map(running_container, p.values()))
                    and p, "both pods running", 300)
    ips = {name: pod["status"]["podIP"] for name, pod in pods.items()}
    assert sorted(ips) == ["pods-a-master-0", "pods-a-worker-0"]
    assert len(set(ips.values())) == 2 and all(ipaddress.ip_address(ip) in ipaddress.ip_network(POD_SUBNET)
                                               for ip in ips.values()), ips
    assert cluster.wait_state("pods-a", "Running", 60)["replicas"]["Master"]["active"] == 1
    listed = cli(plane, "list", "-n", ns, "-o", "json")
    assert [(r["name"], r["state"]) for r in json.loads(listed.stdout)] == [("pods-a", "Running")]

    # Followed from now until the worker's container ends.
    follow = subprocess.Popen([*LLMLAUNCH, "logs", "pods-a", "-n", ns, "--node", "1", "-f"], cwd=REPO,
                              env=llmlaunch_env(KUBECONFIG=str(plane.kubeconfig)), stdout=subprocess.PIPE, text=True)
    scrape = podmonitor_scrape_config(plane.api("GET",
                                                f"/apis/monitoring.coreos.com/v1/namespaces/{ns}/podmonitors/pods-a"),
                                      plane)
    prom, proc = start_prometheus(tmp / "prometheus", [], scrape_interval="2s", scrape_configs=scrape)
    try:
        # Every pod serves its step and its ranks' step times; the job-wide values (loss, tokens) come from
        # rank 0's pod alone, so that summing over pods counts nothing twice (docs/monitoring.md).
        prom.wait_for('count(count by (pod) (llmlaunch_train_step > 0)) == 2', timeout=300)
        prom.wait_for('llmlaunch_train_loss > 0', timeout=60)
        # `status` reads the master's /metrics through the apiserver's pod proxy, here as a user bound only
        # to the llmlaunch-user Role (its pods/proxy rule), and totals the steps from the job's train.yaml.
        explained = cluster.status("pods-a", as_user=True)
        progress = explained["progress"]
        assert explained["unavailable"] == {} and [p["phase"] for p in explained["pods"]] == ["Running"] * 2, explained
        assert progress["pod"] == "pods-a-master-0", progress
        assert progress["total"] == STEPS and 0 < progress["step"] <= STEPS, progress
        assert progress["loss"] > 0 and progress["tokens_per_second"] > 0 and progress["eta_seconds"] >= 0, progress
        text = cli(plane, "status", "pods-a", "-n", ns).stdout
        (tmp / "status-running.txt").write_text(text)
        assert "progress:   step " in text and f" / {STEPS} (" in text and "(pod pods-a-master-0)" in text, text
        stepping = {r["metric"]["pod"]: r["metric"]["instance"] for r in prom.query("llmlaunch_train_step")}
        assert stepping == {name: f"{ip}:9400" for name, ip in ips.items()}, stepping
        assert {r["metric"]["rank"] for r in prom.query("llmlaunch_rank_step_seconds")} == {"0", "1"}
        assert [r["metric"]["pod"] for r in prom.query("llmlaunch_train_loss")] == ["pods-a-master-0"]
        assert {r["metric"]["llmlaunch_job"] for r in prom.query("up")} == {"pods-a"}
    finally:
        stop(proc)

    done = cluster.wait_state("pods-a", "Succeeded")
    assert done["replicas"]["Master"]["succeeded"] == 1
    followed, _ = follow.communicate(timeout=120)
    worker_log = cli(plane, "logs", "pods-a", "-n", ns, "--node", "1").stdout
    assert "[llmlaunch rank 1] metrics: serving http://0.0.0.0:9400/metrics" in worker_log, worker_log
    assert followed.strip() and followed.strip() in worker_log.strip()
    # Nothing the run touched wanted the read-only root: no library fell back or complained.
    master_log = cli(plane, "logs", "pods-a", "-n", ns).stdout
    for complaint in ("Read-only file system", "not writable", "temporary cache directory"):
        assert complaint not in master_log + worker_log, complaint
    listed = cli(plane, "list", "-n", ns, "-o", "json")
    assert [(r["name"], r["state"]) for r in json.loads(listed.stdout)] == [("pods-a", "Succeeded")]

    out = volume / "runs" / "pods-a"
    assert sorted(p.name for p in (out / "checkpoints").glob("step-*")) == [f"step-{s:06d}" for s in sorted(SAVES)]
    assert (out / "final" / "model.safetensors").stat().st_uid == POD_UID
    assert sorted(losses(out)) == list(range(1, STEPS + 1))
    _assert_loads_with_plain_transformers(out / "final")
    for pod in job_pods(plane, ns, "pods-a").values():
        _assert_ran_as_rendered(cluster.node, pod)
    cluster.note("a", pod_ips=ips, final_loss=losses(out)[STEPS], exit_codes=exit_codes(job_pods(plane, ns, "pods-a")))


def _assert_loads_with_plain_transformers(final: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tokenizer = AutoModelForCausalLM.from_pretrained(final), AutoTokenizer.from_pretrained(final)
    text = json.loads((DATA / "tiny" / "eval.jsonl").read_text().splitlines()[0])["text"]
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        loss = model(input_ids=ids, labels=ids).loss.item()
    assert 0 < loss < 5.0, loss  # trained: well below the untrained model's ln(512) = 6.24


def _assert_ran_as_rendered(node: Node, pod: dict) -> None:
    """containerd's own record of the container: the user and read-only root the kubelet asked runc for."""
    container_id = next(s["containerID"] for s in pod["status"]["containerStatuses"] if s["name"] == "pytorch")
    spec = json.loads(node.ctr("containers", "info", container_id.removeprefix("containerd://")))["Spec"]
    assert spec["root"]["readonly"] is True
    assert (spec["process"]["user"]["uid"], spec["process"]["user"]["gid"]) == (POD_UID, POD_UID)
    assert "CAP_SYS_ADMIN" not in spec["process"]["capabilities"].get("effective", [])


LLMLAUNCH = [sys.executable, "-m", "launcher.cli"]


def test_b_faults_on_the_node_end_where_the_uninterrupted_job_ends(cluster):
    """The same job as pods-a, on an existing claim, hit twice; it must end with pods-a's losses and weights.

    1. After the step-10 checkpoint the worker's trainer is frozen (failpoint) and its container killed:
       the kubelet restarts it (restartPolicy OnFailure), both nodes re-rendezvous and resume at step 10.
    2. Later the node is drained (`kubectl drain`: cordon, then the Eviction API for both pods): the kubelet
       sends SIGTERM with the rendered grace period, the ranks write an emergency checkpoint within it, the
       operator recreates the pods, which wait Unschedulable until the node is uncordoned, and the group
       resumes from that checkpoint.
    The failpoints reach the pods as the test harness's own variables (cluster.env refuses LLMLAUNCH_*),
    written into the suspended job's pod templates before it is resumed.
    """
    plane, node, ns, tmp = cluster.plane, cluster.node, cluster.namespace, cluster.tmp
    volume = host_volume(tmp / "volume-b")
    (volume / "failpoints").mkdir()
    os.chown(volume / "failpoints", POD_UID, POD_UID)
    create_volume(plane, f"{ns}-b", volume)
    create_claim(plane, ns, "shared-b")
    job = job_file(tmp, "pods-b", ns, cluster.image, {"claim": "shared-b"}, **RUN)
    submitted = cli(plane, "submit", str(job), "--set", "cluster.run_policy.suspend=true")
    assert submitted.returncode == 0, submitted.stderr
    _arm_failpoints(plane, ns, "pods-b", "checkpoint@10:pod=1:stop")

    frozen = wait_for(lambda: read_json(volume / "failpoints" / "checkpoint-10-pod1.json"),
                      "the worker to reach its step-10 checkpoint", JOB_TIMEOUT, 1)
    worker = job_pods(plane, ns, "pods-b")["pods-b-worker-0"]
    node.kill_container(running_container(worker))
    restarted = wait_for(lambda: restarts(job_pods(plane, ns, "pods-b").get("pods-b-worker-0")) >= 1,
                         "the kubelet to restart the worker's container", 120)
    assert restarted and frozen["pod"] == 1

    metrics = volume / "runs" / "pods-b" / "metrics.jsonl"
    wait_for(lambda: last_step(metrics) >= 13, "the resumed run to pass step 13", JOB_TIMEOUT, 0.2)
    # The node is drained for maintenance: both pods evicted through the Eviction API, each with its grace period.
    before = {n: p["metadata"]["uid"] for n, p in job_pods(plane, ns, "pods-b").items()}
    evicted_at = time.time()
    drained = drain(cluster, "training.kubeflow.org/job-name=pods-b", timeout_s=120)
    try:
        assert drained.returncode == 0, drained.stderr
        assert {f"evicting pod {ns}/{n}" for n in before} <= set(drained.stdout.splitlines()), drained.stdout
        # The operator recreates the pods; the cordoned node cannot take them, and status says so.
        pending = wait_for(lambda: (s := cluster.status("pods-b"))["pods"] and all(
            p["reason"] == "Unschedulable" for p in s["pods"]) and s, "the recreated pods to wait for the node", 120)
        assert {p["name"] for p in pending["pods"]} == set(before), pending["pods"]
        assert all("1 node(s) were unschedulable" in p["message"] for p in pending["pods"]), pending["pods"]
    finally:
        uncordon(cluster)
    recreated = wait_for(lambda: (m := job_pods(plane, ns, "pods-b").get("pods-b-master-0")) and
                         m["metadata"]["uid"] != before["pods-b-master-0"] and m,
                         "the operator to recreate the master", 120)

    assert cluster.wait_state("pods-b", "Succeeded")["replicas"]["Master"]["succeeded"] == 1
    out, reference = volume / "runs" / "pods-b", tmp / "volume-a" / "runs" / "pods-a"
    # The recreated master resumed from the checkpoint the SIGTERM'd ranks wrote: past the fault, before the end,
    # complete; the only checkpoint besides the periodic ones (it is one of them when the stop fell on a save step).
    master_log = cli(plane, "logs", "pods-b", "-n", ns).stdout
    resumed = re.search(r"resuming from \S+ \(step (\d+)\)", master_log)
    assert resumed and recreated["metadata"]["name"] == "pods-b-master-0", master_log[-3000:]
    emergency = int(resumed.group(1))
    assert 13 <= emergency < STEPS, emergency
    written = json.loads((out / "checkpoints" / f"step-{emergency:06d}" / "COMPLETE").read_text())
    grace = yaml_io.load(job.read_text())["cluster"]["termination_grace_period_seconds"]
    assert written["step"] == emergency and written["time"] - evicted_at < grace, (written, evicted_at)
    extra = {int(p.name[5:]) for p in (out / "checkpoints").glob("step-*")} - SAVES
    assert extra == ({emergency} - SAVES), extra

    got, want = losses(out), losses(reference)
    assert sorted(got) == sorted(want) == list(range(1, STEPS + 1))
    assert max(abs(got[s] - want[s]) for s in want) <= 1e-6, {s: (got[s], want[s]) for s in want if got[s] != want[s]}
    from safetensors.torch import load_file

    a, b = load_file(reference / "final" / "model.safetensors"), load_file(out / "final" / "model.safetensors")
    for name in a:
        assert (a[name] - b[name]).abs().max().item() <= 1e-6, name
    cluster.note("b", emergency_step=emergency, emergency_seconds_after_eviction=round(written["time"] - evicted_at, 1),
                 final_loss=got[STEPS], reference_final_loss=want[STEPS],
                 worker_restarts=restarts(job_pods(plane, ns, "pods-b")["pods-b-worker-0"]),
                 pod_ips={n: p["status"]["podIP"] for n, p in job_pods(plane, ns, "pods-b").items()})


def _arm_failpoints(plane: ControlPlane, namespace: str, job: str, failpoints: str) -> None:
    path = f"/apis/kubeflow.org/v1/namespaces/{namespace}/pytorchjobs/{job}"
    stored = plane.api("GET", path)
    for replica in stored["spec"]["pytorchReplicaSpecs"].values():
        container = replica["template"]["spec"]["containers"][0]
        container["env"] += [{"name": "LLMLAUNCH_FAILPOINTS", "value": failpoints},
                             {"name": "LLMLAUNCH_FAILPOINT_DIR", "value": "/workspace/failpoints"}]
    stored["spec"]["runPolicy"]["suspend"] = False
    plane.api("PUT", path, stored)
