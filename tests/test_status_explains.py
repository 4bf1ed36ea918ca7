"""`llmlaunch status` explains a job (pure parts, literal inputs): pod reasons, Warning events, the metrics
text parser, progress and ETA, and the text the command prints. The real scheduler's and kubelet's words
are checked in tests/test_status_pods.py; the real pod proxy in tests/test_pods.py."""

from __future__ import annotations

import math

import pytest
from prometheus_client import generate_latest

from launcher.cluster import job_status, pod_status, train_progress
from launcher.cluster.train_progress import MetricsTextError, format_duration, parse_samples, progress
from trainer.config.train_config import MetricsConfig
from trainer.observability.exporter import TrainMetrics


def pod(name, phase="Pending", node=None, containers=(), init=(), conditions=(), **status):
    return {"metadata": {"name": name}, "spec": {"nodeName": node} if node else {},
            "status": {"phase": phase, "containerStatuses": list(containers), "initContainerStatuses": list(init),
                       "conditions": list(conditions), **status}}


def container(name="pytorch", restarts=0, ready=False, state=None, last=None):
    return {"name": name, "restartCount": restarts, "ready": ready, "state": state or {}, "lastState": last or {}}


UNSCHEDULABLE = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                 "message": "0/1 nodes are available: 1 Insufficient cpu."}


def test_each_pod_says_what_holds_it_back():
    rows = pod_status.pod_rows([
        pod("j-worker-0", conditions=[UNSCHEDULABLE]),
        pod("j-master-0", node="node-1", containers=[container(state={"waiting": {
            "reason": "ImagePullBackOff", "message": 'Back-off pulling image "x:1"'}})]),
        pod("j-worker-1", "Running", "node-1", [container(restarts=2, ready=True, state={"running": {}}, last={
            "terminated": {"reason": "OOMKilled", "exitCode": 137}})]),
        pod("j-worker-2", "Pending", "node-1", [container(state={"waiting": {"reason": "ContainerCreating"}})],
            init=[container("init-pytorch", restarts=1, state={"waiting": {"reason": "CrashLoopBackOff",
                                                                             "message": "back-off 10s"}})]),
        pod("j-worker-3", "Running", "node-1", [container(ready=True, state={"running": {}})]),
        pod("j-worker-4", "Failed", "node-1", reason="Evicted", message="The node was low on resource: memory."),
    ])
    by_name = {r["name"]: r for r in rows}
    assert [r["name"] for r in rows] == sorted(by_name)
    assert by_name["j-worker-0"] == {"name": "j-worker-0", "phase": "Pending", "ready": False, "restarts": 0,
                                     "node": None, "reason": "Unschedulable", "message": UNSCHEDULABLE["message"]}
    assert (by_name["j-master-0"]["reason"], by_name["j-master-0"]["message"]) == \
        ("ImagePullBackOff", 'container pytorch: Back-off pulling image "x:1"')
    oom = by_name["j-worker-1"]
    assert (oom["reason"], oom["restarts"], oom["ready"]) == ("OOMKilled", 2, True)
    assert oom["message"] == "container pytorch last exited with code 137"
    # A waiting init container explains the pod, and its restarts count.
    assert (by_name["j-worker-2"]["reason"], by_name["j-worker-2"]["restarts"]) == ("CrashLoopBackOff", 1)
    assert (by_name["j-worker-3"]["reason"], by_name["j-worker-3"]["message"]) == ("", "")
    assert by_name["j-worker-4"]["reason"] == "Evicted"


def event(kind, name, reason, message, when, kind_of="Warning", count=1):
    return {"type": kind_of, "involvedObject": {"kind": kind, "name": name}, "reason": reason, "message": message,
            "lastTimestamp": when, "count": count}


def test_only_the_latest_warnings_about_the_job_its_pods_and_claims():
    events = [
        event("Pod", "j-master-0", "FailedScheduling", "0/1 nodes are available: 1 Insufficient cpu.",
              "2025-01-01T00:00:05Z", count=3),
        event("Pod", "j-master-0", "Scheduled", "assigned", "2025-01-01T00:00:06Z", kind_of="Normal"),
        event("Pod", "other-master-0", "BackOff", "not ours", "2025-01-01T00:00:07Z"),
        event("PersistentVolumeClaim", "j-data", "ProvisioningFailed", "no class", "2025-01-01T00:00:01Z"),
        {"type": "Warning", "involvedObject": {"kind": "PyTorchJob", "name": "j"}, "reason": "FailedCreatePod",
         "message": "quota", "eventTime": "2025-01-01T00:00:03.000001Z"},  # events.k8s.io style: no lastTimestamp
        # the scheduler writes one event per attempt: the same words count as one row
        {"type": "Warning", "involvedObject": {"kind": "Pod", "name": "j-master-0"}, "reason": "FailedScheduling",
         "message": "0/1 nodes are available: 1 Insufficient cpu.", "eventTime": "2025-01-01T00:00:09.5Z"},
    ]
    objects = {("PyTorchJob", "j"), ("Pod", "j-master-0"), ("PersistentVolumeClaim", "j-data")}
    rows = pod_status.warning_events(events, objects)
    assert [(r["time"], r["object"], r["reason"], r["count"]) for r in rows] == [
        ("2025-01-01T00:00:01Z", "persistentvolumeclaim/j-data", "ProvisioningFailed", 1),
        ("2025-01-01T00:00:03Z", "pytorchjob/j", "FailedCreatePod", 1),
        ("2025-01-01T00:00:09Z", "pod/j-master-0", "FailedScheduling", 4)]
    assert [r["object"] for r in pod_status.warning_events(events, objects, limit=1)] == ["pod/j-master-0"]
    claims = pod_status.claims_of([{"spec": {"volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "c"}},
                                                          {"name": "t", "emptyDir": {}}]}}])
    assert claims == {"c"}


METRICS = r'''# HELP llmlaunch_train_step Current optimizer step.
# TYPE llmlaunch_train_step gauge
llmlaunch_train_step{job="j",namespace="ml",node_rank="0"} 12.0
llmlaunch_train_loss{job="j",namespace="ml",node_rank="0"} 4.8125
llmlaunch_tokens_per_second{job="j",namespace="ml",node_rank="0"} 1930.5
llmlaunch_run_info{device="NVIDIA H100 80GB HBM3, \"SXM\"\\x",job="j",node_rank="0",world_size="8"} 1.0
llmlaunch_step_duration_seconds_bucket{job="j",le="+Inf",node_rank="0"} 12.0 1700000000000
llmlaunch_step_duration_seconds_count{job="j",node_rank="0"} 12.0
llmlaunch_step_duration_seconds_sum{job="j",node_rank="0"} 24.0
llmlaunch_eval_loss NaN
'''


def test_metrics_text_is_parsed_with_escapes_timestamps_and_special_values():
    samples = list(parse_samples(METRICS))
    assert len(samples) == 8
    name, labels, value = samples[3]
    assert (name, labels["device"], labels["world_size"], value) == \
        ("llmlaunch_run_info", 'NVIDIA H100 80GB HBM3, "SXM"\\x', "8", 1.0)
    assert samples[4][1]["le"] == "+Inf" and samples[4][2] == 12.0  # the timestamp is not the value
    assert math.isnan(samples[-1][2])
    with pytest.raises(MetricsTextError, match="line 2"):
        list(parse_samples("ok 1\nbroken{x=1} 2\n"))
    with pytest.raises(MetricsTextError):
        list(parse_samples("no_value\n"))


def test_progress_and_eta_from_the_metrics():
    p = progress(METRICS, total_steps=40)
    assert p == {"step": 12, "total": 40, "loss": 4.8125, "tokens_per_second": 1930.5, "step_seconds": 2.0,
                 "eta_seconds": 56.0}
    assert train_progress.describe(p) == "step 12 / 40 (30%), loss 4.812, 1,930 tokens/s, ETA 56 s"
    assert progress(METRICS, total_steps=None)["eta_seconds"] is None
    assert "total unknown" in train_progress.describe(progress(METRICS, None))
    assert progress(METRICS, total_steps=10)["eta_seconds"] == 0  # past max_steps: the final save is left
    starting = progress("# nothing exported yet\n", 40)
    assert starting["step"] is None and train_progress.describe(starting) == "no step yet (the trainer is starting)"
    assert [format_duration(s) for s in (None, 4.4, 65, 3 * 3600 + 7 * 60 + 1, 2 * 86400 + 4 * 3600)] == \
        ["-", "4 s", "1m05s", "3h07m", "2d04h"]


def test_progress_reads_what_the_trainers_exporter_writes():
    """The exporter's own bytes (prometheus_client), so a renamed metric breaks this test."""
    m = TrainMetrics(MetricsConfig(), job="j", namespace="ml", node_rank=0, local_rank=0, rank=0, world_size=2,
                     local_world_size=1, flops_per_token=6e9, peak_flops=None, device="cpu", nvml=None)
    for n in (1, 2, 3):
        m.observe_step_duration(0.5)
        m.on_step(step=n, loss=3.0 - n / 10, lr=1e-4, grad_norm=1.0, tokens=1000, samples=4, step_seconds=0.5,
                  data_wait_seconds=0.0)
    p = progress(generate_latest(m.registry).decode(), total_steps=40)
    assert (p["step"], p["total"], p["loss"], p["tokens_per_second"]) == (3, 40, 2.7, 2000.0)
    assert p["eta_seconds"] == pytest.approx(37 * 0.5)


def test_status_text_shows_pods_warnings_and_progress():
    obj = {"kind": "PyTorchJob", "metadata": {"name": "j", "namespace": "ml"}, "spec": {"pytorchReplicaSpecs": {
        "Master": {"replicas": 1}}}, "status": {"conditions": [{"type": "Created", "status": "True", "reason":
        "PyTorchJobCreated", "message": "created", "lastTransitionTime": "2025-01-01T00:00:00Z"}]}}
    details = {"pods": pod_status.pod_rows([pod("j-master-0", conditions=[UNSCHEDULABLE])]),
               "events": pod_status.warning_events([event("Pod", "j-master-0", "FailedScheduling",
                                                          UNSCHEDULABLE["message"], "2025-01-01T00:00:05Z", count=2)],
                                                   {("Pod", "j-master-0")}),
               "progress": None, "unavailable": {"progress": "forbidden"}}
    s = job_status.explained(obj, details)
    assert set(s) >= {"state", "conditions", "pods", "events", "progress", "unavailable"}
    text = job_status.describe(s)
    assert "  NAME        PHASE    READY  RESTARTS  NODE  REASON\n" \
           "  j-master-0  Pending  no     0         -     Unschedulable: 0/1 nodes are available: 1 Insufficient cpu." \
           in text, text
    assert "  2025-01-01T00:00:05Z  pod/j-master-0  FailedScheduling (x2): 0/1 nodes are available: 1 " \
           "Insufficient cpu." in text
    assert text.endswith("progress: not shown: forbidden")
    running = {**details, "pods": [], "events": [], "unavailable": {},
               "progress": {"pod": "j-master-0", **progress(METRICS, 40)}}
    text = job_status.describe(job_status.explained(obj, running))
    assert "pods:       none yet" in text and "warnings" not in text
    assert text.endswith("progress:   step 12 / 40 (30%), loss 4.812, 1,930 tokens/s, ETA 56 s (pod j-master-0)")
    # `list` keeps the plain summary: no pods, events or progress sections.
    assert "pods" not in job_status.describe(job_status.summary(obj))


def test_status_counts_the_running_pods_against_the_nodes():
    """`4/4 pods running` once every node's pod runs; a terminating pod (a node going away) is not counted."""
    obj = {"kind": "PyTorchJob", "metadata": {"name": "j", "namespace": "ml"}, "spec": {"pytorchReplicaSpecs": {
        "Master": {"replicas": 1}, "Worker": {"replicas": 3}}}, "status": {}}
    up = [pod(n, "Running", "node-1", [container(ready=True, state={"running": {}})])
          for n in ("j-master-0", "j-worker-0", "j-worker-1", "j-worker-2")]
    details = {"pods": pod_status.pod_rows(up), "events": [], "progress": None, "unavailable": {}}
    s = job_status.explained(obj, details)
    assert s["pods_running"] == 4 and "\nnodes:      4 (4/4 pods running)\n" in job_status.describe(s)
    up[3]["metadata"]["deletionTimestamp"] = "2025-01-01T00:00:00Z"
    s = job_status.explained(obj, {**details, "pods": pod_status.pod_rows(up)})
    assert s["pods_running"] == 3 and "\nnodes:      4 (3/4 pods running)\n" in job_status.describe(s)
