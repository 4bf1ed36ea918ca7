"""A job's state, read from the status its operator writes (pure functions, no cluster access).

PyTorchJob (training operator v1) appends conditions Created, Running, Restarting, Succeeded,
Failed (and Suspended); a TrainJob (Trainer v2) has Suspended, Complete, Failed plus per-JobSet
counts. Both map onto one vocabulary: Pending, Created, Running, Restarting, Suspended,
Succeeded, Failed.
"""

from __future__ import annotations

from typing import Any

from launcher.cluster import pod_status, train_progress

TERMINAL = ("Succeeded", "Failed")
STARTED = ("Running", "Succeeded", "Failed")  # states `submit --wait` stops at


def _true_conditions(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("status") == "True"]


def job_state(obj: dict[str, Any]) -> tuple[str, str]:
    """(state, the operator's message for it)."""
    true = _true_conditions(obj)
    by_type = {c.get("type"): c for c in true}
    aliases = {"Complete": "Succeeded"} if obj.get("kind") == "TrainJob" else {}
    for cond_type in ("Failed", "Succeeded", "Complete", "Suspended"):
        if cond_type in by_type:
            return aliases.get(cond_type, cond_type), by_type[cond_type].get("message", "")
    if obj.get("kind") == "TrainJob":
        jobs = (obj.get("status") or {}).get("jobsStatus") or []
        if any(j.get("active", 0) or j.get("ready", 0) for j in jobs):
            return "Running", ""
        return ("Created", "") if obj.get("status") else ("Pending", "")
    if true:
        last = true[-1]
        return last.get("type", "Unknown"), last.get("message", "")
    return "Pending", "waiting for the training operator to pick the job up"


def nodes_of(obj: dict[str, Any]) -> int:
    spec = obj.get("spec") or {}
    if obj.get("kind") == "TrainJob":
        return int((spec.get("trainer") or {}).get("numNodes") or 1)
    return sum(int(r.get("replicas") or 0) for r in (spec.get("pytorchReplicaSpecs") or {}).values())


def summary(obj: dict[str, Any]) -> dict[str, Any]:
    """What `llmlaunch status -o json` prints."""
    meta, status = obj.get("metadata") or {}, obj.get("status") or {}
    state, message = job_state(obj)
    return {
        "name": meta.get("name"),
        "namespace": meta.get("namespace"),
        "kind": obj.get("kind"),
        "state": state,
        "message": message,
        "nodes": nodes_of(obj),
        "replicas": status.get("replicaStatuses") or {j.get("name"): j for j in status.get("jobsStatus") or []},
        "created": meta.get("creationTimestamp"),
        "started": status.get("startTime"),
        "completed": status.get("completionTime"),
        "conditions": [
            {k: c.get(k) for k in ("type", "status", "reason", "message", "lastTransitionTime")}
            for c in status.get("conditions") or []
        ],
    }


def explained(obj: dict[str, Any], details: dict[str, Any]) -> dict[str, Any]:
    """What `llmlaunch status -o json` prints: the summary plus jobs.explain's pods, events and progress, and
    how many of the job's pods run (terminating ones not counted)."""
    running = sum(1 for p in details["pods"] if p["phase"] == "Running")
    return {**summary(obj), **{k: details[k] for k in ("pods", "events", "progress", "unavailable")},
            "pods_running": running}


def describe(s: dict[str, Any]) -> str:
    """The human form of a summary (with its pods, events and progress when it has them)."""
    lines = [
        f"name:       {s['name']}",
        f"namespace:  {s['namespace']}",
        f"kind:       {s['kind']}",
        f"state:      {s['state']}" + (f" ({s['message']})" if s["message"] else ""),
        f"nodes:      {s['nodes']}" + (f" ({s['pods_running']}/{s['nodes']} pods running)" if "pods" in s else ""),
        f"created:    {s['created'] or '-'}",
        f"started:    {s['started'] or '-'}",
        f"completed:  {s['completed'] or '-'}",
    ]
    for name, counts in sorted(s["replicas"].items()):
        shown = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if isinstance(v, int))
        lines.append(f"replicas:   {name}: {shown or '-'}")
    if s["conditions"]:
        lines.append("conditions:")
        for c in s["conditions"]:
            lines.append(f"  {c['type']:<11} {c['status']:<6} {c['lastTransitionTime'] or '-':<21} "
                         f"{c['reason'] or ''}: {c['message'] or ''}".rstrip(": "))
    if "pods" in s:
        lines += ["pods:", *pod_status.describe_pods(s["pods"])] if s["pods"] else ["pods:       none yet"]
    if s.get("events"):
        lines += ["warnings:   (latest Warning events, oldest first)", *pod_status.describe_events(s["events"])]
    if s.get("progress"):
        lines.append(f"progress:   {train_progress.describe(s['progress'])} (pod {s['progress']['pod']})")
    for part, reason in sorted((s.get("unavailable") or {}).items()):
        lines.append(f"{part}: not shown: {reason}")
    return "\n".join(lines)
