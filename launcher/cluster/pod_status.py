"""Why a job's pods are where they are: each pod's phase, restarts, node and reason, and the latest
Warning events of the job, its pods and their claims (pure functions over API objects).

The reasons come from where Kubernetes records them: the scheduler's PodScheduled condition
(Unschedulable), the kubelet's container states (ErrImagePull, ImagePullBackOff, CrashLoopBackOff,
CreateContainerConfigError) and last terminations (OOMKilled, Error), the pod's own status (Evicted), and
the Events the scheduler and kubelet write (FailedScheduling, FailedMount, Failed, BackOff).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

# Waiting reasons that are only the normal way to Running.
STARTING = ("ContainerCreating", "PodInitializing")
EVENT_LIMIT = 10  # the latest Warning events shown


def _container_statuses(status: dict[str, Any]) -> list[dict[str, Any]]:
    return [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]


def _reason(pod: dict[str, Any]) -> tuple[str, str]:
    """(reason, message) of what holds the pod back or last went wrong in it; ("", "") when nothing does."""
    status = pod.get("status") or {}
    statuses = _container_statuses(status)
    for s in statuses:
        waiting = (s.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") and waiting["reason"] not in STARTING:
            return waiting["reason"], f"container {s['name']}: {waiting.get('message') or waiting['reason']}"
    for when, key in (("", "state"), ("last ", "lastState")):
        for s in statuses:
            ended = (s.get(key) or {}).get("terminated") or {}
            if ended.get("reason") in ("OOMKilled", "Error", "ContainerCannotRun") or \
                    (ended and ended.get("exitCode") not in (0, None)):
                detail = f"container {s['name']} {when}exited with code {ended.get('exitCode')}"
                return ended.get("reason") or "Error", detail + (
                    f": {ended['message']}" if ended.get("message") else ""
                )
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            return cond.get("reason") or "Unschedulable", cond.get("message") or ""
    if status.get("reason"):  # Evicted, NodeLost, ...
        return status["reason"], status.get("message") or ""
    return "", ""


def pod_row(pod: dict[str, Any]) -> dict[str, Any]:
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    statuses = status.get("containerStatuses") or []
    reason, message = _reason(pod)
    return {
        "name": meta.get("name"),
        "phase": "Terminating" if meta.get("deletionTimestamp") else status.get("phase") or "Pending",
        "ready": bool(statuses) and all(s.get("ready") for s in statuses),
        "restarts": sum(int(s.get("restartCount") or 0) for s in _container_statuses(status)),
        "node": (pod.get("spec") or {}).get("nodeName"),
        "reason": reason,
        "message": message,
    }


def pod_rows(pods: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted((pod_row(p) for p in pods), key=lambda r: r["name"] or "")


def claims_of(pods: Iterable[dict[str, Any]]) -> set[str]:
    return {v["persistentVolumeClaim"]["claimName"] for p in pods for v in (p.get("spec") or {}).get("volumes") or []
            if v.get("persistentVolumeClaim")}


def _when(event: dict[str, Any]) -> str:
    # Core v1 events carry lastTimestamp; events written through events.k8s.io/v1 only eventTime.
    return (event.get("lastTimestamp") or event.get("eventTime") or event.get("firstTimestamp")
            or (event.get("metadata") or {}).get("creationTimestamp") or "")


def warning_events(events: Iterable[dict[str, Any]], objects: set[tuple[str, str]],
                   limit: int = EVENT_LIMIT) -> list[dict[str, Any]]:
    """The latest `limit` Warning events about `objects` ((kind, name) pairs), oldest first. Events that say
    the same thing about the same object are one row with their counts added (the scheduler writes a new
    event for each attempt)."""
    rows: dict[tuple[str, str, str], dict[str, Any]] = {}
    for e in events:
        involved = e.get("involvedObject") or {}
        if e.get("type") != "Warning" or (involved.get("kind"), involved.get("name")) not in objects:
            continue
        obj = f"{(involved.get('kind') or '').lower()}/{involved.get('name')}"
        reason, message = e.get("reason") or "", (e.get("message") or "").strip()
        count = int(e.get("count") or (e.get("series") or {}).get("count") or 1)
        row = rows.setdefault((obj, reason, message), {"time": "", "object": obj, "reason": reason,
                                                       "message": message, "count": 0})
        row["time"], row["count"] = max(row["time"], _when(e)), row["count"] + count
    latest = sorted(rows.values(), key=lambda r: (r["time"], r["object"], r["reason"]))[-limit:] if limit else []
    for row in latest:  # whole seconds, like the other timestamps status prints
        row["time"] = row["time"][:19] + "Z" if len(row["time"]) > 20 else row["time"]
    return latest


def describe_pods(rows: list[dict[str, Any]]) -> list[str]:
    table = [("NAME", "PHASE", "READY", "RESTARTS", "NODE", "REASON")]
    table += [(r["name"], r["phase"], "yes" if r["ready"] else "no", str(r["restarts"]), r["node"] or "-",
               f"{r['reason']}: {r['message']}" if r["message"] and r["message"] != r["reason"] else r["reason"])
              for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]) - 1)]
    lines = ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
             for row in table]
    return [line.rstrip() for line in lines]


def describe_events(rows: list[dict[str, Any]]) -> list[str]:
    return [f"  {r['time'] or '-'}  {r['object']}  {r['reason']}" + (f" (x{r['count']})" if r["count"] > 1 else "")
            + f": {r['message']}" for r in rows]
