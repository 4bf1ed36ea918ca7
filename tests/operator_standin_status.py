"""Job status rules of Kubeflow training-operator v1.9.4 (github.com/kubeflow/trainer at tag v1.9.4), as pure
functions over the job and status dicts; each names its source file. Used by tests/operator_standin.py.
"""

from __future__ import annotations

import copy
import datetime

from operator_standin_specs import (
    KIND,
    MASTER,
    REPLICA_INDEX_LABEL,
    REPLICA_TYPE_LABEL,
    WORKER,
    gen_labels,
    replica_types,
)


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def since(stamp: str) -> float:
    then = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
    return (datetime.datetime.now(datetime.timezone.utc) - then).total_seconds()


# --- pkg/util/status.go: conditions ---------------------------------------------------------------------------
def is_true(status: dict, ctype: str) -> bool:
    return any(c["type"] == ctype and c["status"] == "True" for c in status.get("conditions") or [])


def is_finished(status: dict) -> bool:
    return is_true(status, "Succeeded") or is_true(status, "Failed")


def update_condition(status: dict, ctype: str, cstatus: str, reason: str, message: str) -> None:
    """UpdateJobConditions -> setCondition -> filterOutCondition."""
    if is_true(status, "Failed"):
        return  # a Failed job keeps its conditions
    conditions = status.get("conditions") or []
    current = next((c for c in conditions if c["type"] == ctype), None)
    if current and current["status"] == cstatus and current.get("reason") == reason:
        return
    stamp = now()
    new = {"type": ctype, "status": cstatus, "reason": reason, "message": message, "lastUpdateTime": stamp,
           "lastTransitionTime": current["lastTransitionTime"] if current and current["status"] == cstatus else stamp}
    kept = []
    for c in conditions:
        if c["type"] == ctype or {ctype, c["type"]} == {"Running", "Restarting"}:
            continue
        if ctype in ("Failed", "Succeeded") and c["type"] == "Running":
            c = dict(c, status="False")
        kept.append(c)
    status["conditions"] = kept + [new]


def reason(suffix: str) -> str:
    return KIND + suffix  # NewReason(kind, reason): "PyTorchJobRunning", ...


# --- pkg/core/status.go, pkg/util/k8sutil/k8sutil.go -----------------------------------------------------------
def count_pod(replica_status: dict, pod: dict) -> None:
    """UpdateJobReplicaStatuses: a Running pod being deleted counts as failed."""
    phase = (pod.get("status") or {}).get("phase")
    if phase == "Running":
        key = "failed" if pod["metadata"].get("deletionTimestamp") else "active"
    else:
        key = {"Succeeded": "succeeded", "Failed": "failed"}.get(phase)
    if key:
        replica_status[key] += 1


def is_active(pod: dict) -> bool:
    return (pod.get("status", {}).get("phase") not in ("Succeeded", "Failed")
            and not pod["metadata"].get("deletionTimestamp"))


def exit_code(pod: dict) -> int:
    """ReconcilePods (pkg/controller.v1/common/pod.go): the `pytorch` container's exit code, else 0xbeef."""
    code = 0xBEEF
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        terminated = (cs.get("state") or {}).get("terminated")
        if cs.get("name") == "pytorch" and terminated:
            code = int(terminated.get("exitCode", 0))
    return code


def normalised(status: dict | None) -> dict:
    status = copy.deepcopy(status or {})
    status.setdefault("conditions", [])
    for rs in (status.get("replicaStatuses") or {}).values():
        for key in ("active", "succeeded", "failed"):
            rs.setdefault(key, 0)
    return status


def by_index(objs: list[dict], rt: str, replicas: int) -> list[list[dict]]:
    """FilterPodsForReplicaType + GetPodSlices (pkg/core/pod.go; the same for services in pkg/core/service.go)."""
    slices: dict[int, list[dict]] = {}
    for obj in objs:
        labels = obj["metadata"].get("labels") or {}
        if labels.get(REPLICA_TYPE_LABEL) != rt:
            continue
        try:
            slices.setdefault(int(labels[REPLICA_INDEX_LABEL]), []).append(obj)
        except (KeyError, ValueError):
            continue
    size = max([replicas - 1, *slices]) + 1
    return [slices.get(i, []) for i in range(size)]


def past_backoff_limit(job: dict, pods: list[dict], limit: int) -> bool:
    """core.PastBackoffLimit (pkg/core/job.go): container restarts of Running pods, for restartable replicas."""
    restarts = 0
    for rtype, rspec in job["spec"]["pytorchReplicaSpecs"].items():
        if rspec["restartPolicy"] not in ("OnFailure", "Always", "ExitCode"):
            continue
        for pod in pods:
            labels, st = pod["metadata"].get("labels") or {}, pod.get("status") or {}
            if labels.get(REPLICA_TYPE_LABEL) != rtype.lower() or st.get("phase") != "Running":
                continue
            restarts += sum(int(c.get("restartCount", 0))
                            for c in (st.get("initContainerStatuses") or []) + (st.get("containerStatuses") or []))
    return restarts > 0 if limit == 0 else restarts >= limit


def update_job_status(job: dict, status: dict) -> None:
    """PyTorchJobReconciler.UpdateJobStatus (pkg/controller.v1/pytorch/pytorchjob_controller.go)."""
    name, ns = job["metadata"]["name"], job["metadata"]["namespace"]
    specs = job["spec"]["pytorchReplicaSpecs"]
    status.setdefault("startTime", now())
    for rtype in replica_types(job):
        rs, replicas = status["replicaStatuses"][rtype], int(specs[rtype]["replicas"])
        labels = dict(gen_labels(name), **{REPLICA_TYPE_LABEL: rtype.lower()})
        rs["selector"] = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))  # FormatLabelSelector
        expected, running, failed, succeeded = replicas - rs["succeeded"], rs["active"], rs["failed"], rs["succeeded"]
        if MASTER in specs:
            if rtype == MASTER:
                if running > 0:
                    update_condition(status, "Running", "True", reason("Running"), f"PyTorchJob {name} is running.")
                if expected == 0:
                    status.setdefault("completionTime", now())
                    update_condition(status, "Succeeded", "True", reason("Succeeded"),
                                     f"PyTorchJob {name} is successfully completed.")
                    return
        elif rtype == WORKER:
            if expected == 0 or (job["spec"].get("elasticPolicy") is not None and succeeded > 0):
                status.setdefault("completionTime", now())
                update_condition(status, "Succeeded", "True", reason("Succeeded"),
                                 f"PyTorchJob {ns}/{name} successfully completed.")
            elif running > 0:
                update_condition(status, "Running", "True", reason("Running"), f"PyTorchJob {ns}/{name} is running.")
        if failed > 0 and replicas > succeeded + running:
            if specs[rtype]["restartPolicy"] != "Never":
                update_condition(status, "Restarting", "True", reason("Restarting"),
                                 f"PyTorchJob {name} is restarting because {failed} {rtype} replica(s) failed.")
            else:
                status.setdefault("completionTime", now())
                update_condition(status, "Failed", "True", reason("Failed"),
                                 f"PyTorchJob {name} is failed because {failed} {rtype} replica(s) failed.")
