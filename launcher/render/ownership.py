"""Which objects of a job its job owns (metadata.ownerReferences), so that Kubernetes' garbage collector
removes them with the job however it goes: `llmlaunch delete`, `kubectl delete`, the operator's TTL.

The job is created last (its pods never wait for their ConfigMap or claim), so it cannot be named as owner
at creation: submit patches the owner reference in right after (jobs.submit), and undoes the whole submit
if that fails. A claim created with `cluster.storage.keep` is not owned, and carries Helm's keep policy,
which `llmlaunch delete` honours too; an existing claim (`storage.claim`) is never created, so never owned.
"""

from __future__ import annotations

from typing import Any

KEEP_ANNOTATION = "helm.sh/resource-policy"  # the annotation `helm uninstall` honours; llmlaunch delete as well
KEEP_VALUE = "keep"


def kept(obj: dict[str, Any]) -> bool:
    return ((obj.get("metadata") or {}).get("annotations") or {}).get(KEEP_ANNOTATION) == KEEP_VALUE


def should_own(obj: dict[str, Any]) -> bool:
    """Every object submit created besides the job, except a claim the user asked to keep."""
    return not kept(obj)


def owner_patch(job: dict[str, Any]) -> dict[str, Any]:
    """A merge patch making the stored `job` the owner. No blockOwnerDeletion (it needs the right to update
    the job's finalizers) and no controller flag (no controller manages these objects)."""
    meta = job["metadata"]
    return {"metadata": {"ownerReferences": [
        {"apiVersion": job["apiVersion"], "kind": job["kind"], "name": meta["name"], "uid": meta["uid"]}]}}
