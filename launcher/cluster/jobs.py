"""Job operations on a cluster: submit (all or nothing), wait, find, explain, delete, pick a node's pod.

Each takes a kube.Cluster and raises KubeError with one line naming the object and the reason.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from launcher.cluster import job_status, pod_status, train_progress
from launcher.cluster.client import JOB_KINDS, KINDS, Cluster, Kind, KubeError
from launcher.render import ownership
from launcher.spec import names
from trainer import yaml_io

Echo = Callable[[str], None]


def ref(obj: dict[str, Any]) -> str:
    return f"{obj['kind'].lower()}/{obj['metadata']['name']}"


def check_installed(cluster: Cluster, objects: list[dict[str, Any]]) -> None:
    """Refuse early, with the install hint, when a kind's CRD is not on the cluster."""
    kinds = list({o["kind"]: KINDS[o["kind"]] for o in objects}.values())
    for kind in cluster.missing_kinds(kinds):
        raise KubeError(
            f"the cluster at {cluster.host} does not serve {kind.kind} ({kind.api_version}): {kind.install_hint}"
        )


def _create_error(obj: dict[str, Any], job: str, e: KubeError) -> str:
    ns, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
    what = f"{obj['kind'].lower()} {ns}/{name}"
    if e.status == 409:
        return f"{what} already exists: remove the old job (llmlaunch delete {job} -n {ns}) or choose another name"
    if e.status == 404 and e.details_kind == "namespaces":
        return f"namespace {ns} does not exist: create it (kubectl create namespace {ns}) or set cluster.namespace"
    return f"cannot create {what}: {e}"


def check_claim(cluster: Cluster, namespace: str, claim: str, pods: int) -> None:
    """An existing claim (cluster.storage.claim) must exist and, for pods on several nodes, be
    ReadWriteMany: its own access modes count, not the job file's declared access_mode."""
    pvc = cluster.get(KINDS["PersistentVolumeClaim"], namespace, claim)
    if pvc is None:
        raise KubeError(f"cluster.storage.claim: no PersistentVolumeClaim {namespace}/{claim}; create it first, "
                        "or set cluster.storage.size to have the job create one")
    # Bound claims report what the volume offers; a pending one only what it asked for.
    modes = (pvc.get("status") or {}).get("accessModes") or (pvc.get("spec") or {}).get("accessModes") or []
    if pods > 1 and "ReadWriteMany" not in modes:
        raise KubeError(
            f"cluster.storage.claim: PersistentVolumeClaim {namespace}/{claim} is "
            f"{', '.join(modes) or 'of no access mode'}; "
            f"{pods} pods on different nodes need ReadWriteMany"
        )


def submit(cluster: Cluster, objects: list[dict[str, Any]], dry_run: bool, echo: Echo) -> None:
    """Create the objects in order (the job last, so its pods never wait for their ConfigMap or claim), then
    make the job the owner of the others; if any step fails, delete what was created, then raise."""
    check_installed(cluster, objects)
    job = objects[-1]["metadata"]["name"]
    created: list[dict[str, Any]] = []
    stored: dict[str, Any] = {}
    for obj in objects:
        try:
            stored = cluster.create(obj, dry_run=dry_run)
        except KubeError as e:
            _fail(cluster, created, _create_error(obj, job, e), e)
        if not dry_run:
            created.append(obj)
        echo(f"{ref(obj)} created" + (" (server dry run)" if dry_run else ""))
    if dry_run:
        return
    owned = [o for o in created[:-1] if ownership.should_own(o)]
    for obj in owned:
        try:
            cluster.merge_patch(KINDS[obj["kind"]], obj["metadata"]["namespace"], obj["metadata"]["name"],
                                ownership.owner_patch(stored))
        except KubeError as e:
            what = f"{obj['kind'].lower()} {obj['metadata']['namespace']}/{obj['metadata']['name']}"
            _fail(cluster, created, f"cannot make {ref(objects[-1])} the owner of {what}: {e}", e)
    if owned:
        echo(f"owned by {ref(objects[-1])} (deleted with it): {', '.join(ref(o) for o in owned)}")


def _fail(cluster: Cluster, created: list[dict[str, Any]], message: str, e: KubeError):
    undone, left = rollback(cluster, created)
    if undone:
        message += f" (removed what this submit created: {', '.join(undone)})"
    if left:
        message += f" (could not remove {', '.join(left)}: delete them by hand)"
    raise KubeError(message, e.status, e.reason) from e


def rollback(cluster: Cluster, created: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    undone, left = [], []
    for obj in reversed(created):
        try:
            cluster.delete(KINDS[obj["kind"]], obj["metadata"]["namespace"], obj["metadata"]["name"])
            undone.append(ref(obj))
        except KubeError:
            left.append(ref(obj))
    return undone, left


def find_job(cluster: Cluster, namespace: str, name: str) -> tuple[Kind, dict[str, Any]]:
    """The PyTorchJob or TrainJob called `name` (whichever API the cluster serves)."""
    served = [k for k in JOB_KINDS if k not in cluster.missing_kinds([k])]
    if not served:
        raise KubeError(
            f"the cluster at {cluster.host} serves neither PyTorchJob nor TrainJob: {JOB_KINDS[0].install_hint}"
        )
    for kind in served:
        obj = cluster.get(kind, namespace, name)
        if obj is not None:
            return kind, obj
    raise KubeError(f"no job {name} in namespace {namespace} (llmlaunch list -n {namespace} shows the jobs there)")


def wait(cluster: Cluster, kind: Kind, namespace: str, name: str, timeout: float, echo: Echo,
         interval: float = 2.0) -> dict[str, Any]:
    """Follow the job's conditions until it runs, succeeds or fails; fail on Failed or timeout. Meanwhile
    say what holds each pod back (the scheduler's or kubelet's words) whenever that changes, and end a
    timeout with it: a job that cannot start is explained, not waited on silently."""
    deadline, last, held = time.monotonic() + timeout, None, []
    while True:
        obj = cluster.get(kind, namespace, name)
        if obj is None:
            raise KubeError(f"{kind.kind.lower()} {namespace}/{name} was deleted while waiting for it")
        state, message = job_status.job_state(obj)
        if state != last:
            echo(f"{kind.kind.lower()}/{name}: {state}" + (f" ({message})" if message else ""))
            last = state
        if state == "Failed":
            raise KubeError(
                f"{kind.kind.lower()} {namespace}/{name} failed: {message or 'no message from the operator'}"
            )
        if state in job_status.STARTED:
            return obj
        now_held = held_back(cluster, kind, namespace, name)
        for line in now_held:
            if line not in held:
                echo(line)
        held = now_held
        if time.monotonic() >= deadline:
            raise KubeError(
                f"timed out after {timeout:g} s waiting for {kind.kind.lower()} {namespace}/{name} to run "
                f"(state {state})" + "".join(f"; {line}" for line in held)
            )
        time.sleep(interval)


def held_back(cluster: Cluster, kind: Kind, namespace: str, name: str) -> list[str]:
    """One line per pod of the job that something holds back, e.g. `pod j-master-0 Pending: Unschedulable:
    0/1 nodes are available: 1 Insufficient cpu.`; none when the pods cannot be read (RBAC)."""
    try:
        pods = cluster.list(KINDS["Pod"], namespace, names.job_pods_selector(kind.kind, name))
    except KubeError:
        return []
    return [f"pod {r['name']} {r['phase']}: " + (f"{r['reason']}: {r['message']}" if r["message"] not in
                                                 ("", r["reason"]) else r["reason"])
            for r in pod_status.pod_rows(pods) if r["reason"]]


def list_jobs(cluster: Cluster, namespace: str | None) -> list[dict[str, Any]]:
    """Summaries of the llmlaunch jobs (submitted or installed with the chart), oldest first; namespace None = all."""
    served = [k for k in JOB_KINDS if k not in cluster.missing_kinds([k])]
    if not served:
        raise KubeError(
            f"the cluster at {cluster.host} serves neither PyTorchJob nor TrainJob: {JOB_KINDS[0].install_hint}"
        )
    items = [obj for kind in served for obj in cluster.list(kind, namespace, names.jobs_selector())]
    items.sort(key=lambda o: (o["metadata"].get("creationTimestamp") or "", o["metadata"]["name"]))
    return [job_status.summary(o) for o in items]


def delete_job(cluster: Cluster, namespace: str, name: str, keep_data: bool, echo: Echo) -> None:
    """Remove the job and every object its submit created (found by llmlaunch's labels)."""
    kinds = [k for k in (*JOB_KINDS, KINDS["PodMonitor"]) if k not in cluster.missing_kinds([k])]
    kinds += [KINDS["NetworkPolicy"], KINDS["PodDisruptionBudget"], KINDS["ConfigMap"]]
    kinds += [] if keep_data else [KINDS["PersistentVolumeClaim"]]
    found = [(k, o) for k in kinds for o in cluster.list(k, namespace, names.selector(name))
             if not o["metadata"].get("deletionTimestamp")]  # already going (e.g. a PVC still in use)
    if not found:
        raise KubeError(f"no job {name} in namespace {namespace}: nothing to delete")
    for _, obj in found:
        meta = obj["metadata"]
        if (meta.get("labels") or {}).get(names.MANAGED_BY_LABEL) == "Helm":
            # Deleting a release's objects behind Helm's back leaves a release that lies about them.
            release = (meta.get("annotations") or {}).get(names.HELM_RELEASE_ANNOTATION, name)
            raise KubeError(f"job {name} in namespace {namespace} was installed with Helm (release {release}): "
                            f"remove it with helm uninstall {release} -n {namespace}")
    for kind, obj in [(k, o) for k, o in found if ownership.kept(o)]:
        echo(f"{kind.kind.lower()}/{obj['metadata']['name']} kept (cluster.storage.keep)")
    found = [(k, o) for k, o in found if not ownership.kept(o)]
    for kind, obj in found:
        try:
            cluster.delete(kind, namespace, obj["metadata"]["name"])
        except KubeError as e:
            if e.status != 404:  # already gone is what we want
                raise KubeError(f"cannot delete {kind.kind.lower()} {namespace}/{obj['metadata']['name']}: {e}") from e
        echo(f"{kind.kind.lower()}/{obj['metadata']['name']} deleted")


def node_pod(cluster: Cluster, kind: Kind, job: dict[str, Any], node: int) -> dict[str, Any]:
    """The newest pod running node `node` (0 = the master) of the job."""
    meta = job["metadata"]
    elastic = bool((job.get("spec") or {}).get("elasticPolicy"))
    labels = names.node_pod_labels(kind.kind.lower(), meta["name"], node, elastic)
    selector = ",".join(f"{k}={v}" for k, v in labels.items())
    pods = cluster.list(KINDS["Pod"], meta["namespace"], selector)
    if not pods:
        state, _ = job_status.job_state(job)
        raise KubeError(f"job {meta['namespace']}/{meta['name']} has no pod for node {node} yet (job state {state}); "
                        "the operator creates pods once the job is admitted")
    return max(pods, key=lambda p: (p["metadata"].get("creationTimestamp") or "", p["metadata"]["name"]))


def explain(cluster: Cluster, kind: Kind, job: dict[str, Any]) -> dict[str, Any]:
    """What `status` shows besides the conditions: the job's pods, the latest Warning events of the job, its
    pods and their claims, and, while the master pod runs, the training progress from its /metrics (through
    the apiserver's pod proxy). A part that cannot be read is named in `unavailable`; the rest still shows."""
    meta = job["metadata"]
    ns, name = meta["namespace"], meta["name"]
    out: dict[str, Any] = {"pods": [], "events": [], "progress": None, "unavailable": {}}
    pods: list[dict[str, Any]] = []
    try:
        pods = cluster.list(KINDS["Pod"], ns, names.job_pods_selector(kind.kind, name))
    except KubeError as e:
        out["unavailable"]["pods"] = str(e)
    out["pods"] = pod_status.pod_rows(pods)
    objects = {(kind.kind, name), *(("Pod", p["metadata"]["name"]) for p in pods),
               *(("PersistentVolumeClaim", c) for c in pod_status.claims_of(pods)),
               # a TrainJob's pods belong to Jobs of its JobSet: their events explain missing pods
               *((r["kind"], r["name"]) for p in pods for r in p["metadata"].get("ownerReferences") or [])}
    if kind.kind == "TrainJob":
        objects.add(("JobSet", name))
    try:
        out["events"] = pod_status.warning_events(cluster.list(KINDS["Event"], ns, field_selector="type=Warning"),
                                                  objects)
    except KubeError as e:
        out["unavailable"]["events"] = str(e)
    master = _running_master(kind, job, pods)
    if master is not None:
        pod = master["metadata"]["name"]
        try:
            out["progress"] = {"pod": pod, **_progress(cluster, ns, name, master)}
        except (KubeError, train_progress.MetricsTextError) as e:
            # The trainer serves /metrics once its setup (model, data, DeepSpeed) is done.
            starting = " (the trainer serves them once its setup is done)" if "connection refused" in str(e) else ""
            out["unavailable"]["progress"] = f"cannot read the metrics of pod {ns}/{pod}{starting}: {e}"
    return out


def _running_master(kind: Kind, job: dict[str, Any], pods: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The running pod of node 0: rank 0 lives there, and only it exports the loss and throughput."""
    elastic = bool((job.get("spec") or {}).get("elasticPolicy"))
    labels = names.node_pod_labels(kind.kind.lower(), job["metadata"]["name"], 0, elastic)
    running = [p for p in pods if (p.get("status") or {}).get("phase") == "Running"
               and not p["metadata"].get("deletionTimestamp")
               and all((p["metadata"].get("labels") or {}).get(k) == v for k, v in labels.items())]
    return max(running, key=lambda p: p["metadata"].get("creationTimestamp") or "", default=None)


def _progress(cluster: Cluster, ns: str, job: str, pod: dict[str, Any]) -> dict[str, Any]:
    ports = [port["containerPort"] for c in pod["spec"]["containers"] for port in c.get("ports") or []
             if port.get("name") == "metrics"]
    if not ports:
        raise KubeError("it has no container port named metrics (train.metrics.enabled is false)")
    text = cluster.pod_proxy_get(ns, pod["metadata"]["name"], ports[0], "metrics")
    return train_progress.progress(text, _max_steps(cluster, ns, job))


def _max_steps(cluster: Cluster, ns: str, job: str) -> int | None:
    """run.max_steps of the train.yaml the job's pods read (its ConfigMap, from submit or the chart)."""
    for config in cluster.list(KINDS["ConfigMap"], ns, names.selector(job)):
        text = (config.get("data") or {}).get("train.yaml")
        if text:
            run = (yaml_io.load(text) or {}).get("run") or {}
            return run.get("max_steps")
    return None
