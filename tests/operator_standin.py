"""A stand-in for Kubeflow training-operator v1.9.4's PyTorchJob controller (no binary or image of it here).

It reconciles every PyTorchJob of one namespace as pkg/controller.v1/common/job.go ReconcileJobs does at tag
v1.9.4 of github.com/kubeflow/trainer: one Pod and one headless Service per replica (built by
tests/operator_standin_specs.py: names, labels, owner references, env, the workers' `init-pytorch`
container), a deleted pod recreated, a Failed pod deleted and recreated when the replica's restartPolicy
allows it, the backoff limit and active deadline, cleanPodPolicy and ttlSecondsAfterFinished once the job
ends, and the job status (conditions with the real reasons and messages, replicaStatuses, start and
completion times) written through the status subresource as UpdateJobStatusInApiServer does.

Differences from the real operator: it polls the apiserver (every `interval` s) instead of watching, so it
needs no expectations; it writes no Events and no Prometheus metrics; and it leaves out gang scheduling
(Volcano / scheduler-plugins PodGroups), HPA for elastic jobs, the validating webhook, the `managedBy` hand-off
beyond skipping such jobs, and leader election. Replica types are visited Master first (Go's map order is random).
"""

from __future__ import annotations

import copy
import time
import urllib.parse

from operator_standin_specs import (
    INIT_IMAGE_DEFAULT,
    INIT_MAX_TRIES_DEFAULT,
    apply_defaults,
    gen_labels,
    new_pod,
    new_service,
    replica_types,
)
from operator_standin_status import (
    by_index,
    count_pod,
    exit_code,
    is_active,
    is_finished,
    is_true,
    normalised,
    now,
    past_backoff_limit,
    reason,
    since,
    update_condition,
    update_job_status,
)
from poller import Poller

MANAGED_BY_DEFAULT = "kubeflow.org/training-operator"  # pkg/apis/kubeflow.org/v1/common_types.go


class PyTorchJobOperator(Poller):
    """Reconciles the PyTorchJobs of `namespace` through `plane.api(method, path, body)` (ControlPlane.api)."""

    def __init__(self, plane, namespace: str, init_image: str = INIT_IMAGE_DEFAULT,
                 init_max_tries: int = INIT_MAX_TRIES_DEFAULT, interval: float = 0.5):
        self.plane, self.namespace, self.interval = plane, namespace, interval
        self.init_image, self.init_max_tries = init_image, init_max_tries  # --pytorch-init-container-image/-max-tries
        self.actions: list[str] = []  # what it did, in order ("create pod x", "delete pod y", "status x: ...")
        self.errors: list[str] = []   # reconcile errors (the real operator logs them and requeues)
        self.written: list[dict] = []  # every status written, in order
        self._created_uids: set[str] = set()

    # --- lifecycle ---
    def start(self) -> PyTorchJobOperator:
        self.reconcile_all()
        self.start_polling(f"pytorchjob-operator-{self.namespace}")
        return self

    def stop(self) -> None:
        self.stop_polling()

    def poll(self) -> None:
        self.reconcile_all()

    # --- API paths ---
    def _jobs_path(self, name: str = "") -> str:
        return f"/apis/kubeflow.org/v1/namespaces/{self.namespace}/pytorchjobs" + (f"/{name}" if name else "")

    def _core_path(self, plural: str, name: str = "", selector: dict | None = None) -> str:
        path = f"/api/v1/namespaces/{self.namespace}/{plural}" + (f"/{name}" if name else "")
        if selector:
            path += "?labelSelector=" + urllib.parse.quote(",".join(f"{k}={v}" for k, v in sorted(selector.items())))
        return path

    def _act(self, what: str) -> None:
        self.actions.append(what)

    def reconcile_all(self) -> None:
        """One pass over every job (Reconcile in pytorchjob_controller.go); errors are kept, not raised."""
        try:
            jobs = (self.plane.api("GET", self._jobs_path()) or {}).get("items") or []
        except Exception as e:  # noqa: BLE001 - the loop must outlive a failed call, as a controller does
            self.errors.append(f"list jobs: {e}")
            return
        for job in jobs:
            try:
                self.reconcile(job)
            except Exception as e:  # noqa: BLE001
                self.errors.append(f"{job['metadata']['name']}: {e}")

    def reconcile(self, stored: dict) -> None:
        meta = stored["metadata"]
        managed_by = (stored.get("spec", {}).get("runPolicy") or {}).get("managedBy")
        if meta.get("deletionTimestamp") or (managed_by and managed_by != MANAGED_BY_DEFAULT):
            return
        job = apply_defaults(stored)
        status = normalised(stored.get("status"))
        if meta["uid"] not in self._created_uids:  # onOwnerCreateFunc, until a status write carries it
            update_condition(status, "Created", "True", reason("Created"), f"PyTorchJob {meta['name']} is created.")
        self._reconcile_jobs(stored, job, status)

    def _reconcile_jobs(self, stored: dict, job: dict, status: dict) -> None:
        """JobController.ReconcileJobs (pkg/controller.v1/common/job.go)."""
        name, uid = job["metadata"]["name"], job["metadata"]["uid"]
        specs, run_policy = job["spec"]["pytorchReplicaSpecs"], job["spec"]["runPolicy"]
        # GetPodsForJob / GetServicesForJob (pytorchjob_controller.go): by GenLabels, pods also by controllerRef
        pod_list = self.plane.api("GET", self._core_path("pods", selector=gen_labels(name))) or {}
        pods = [p for p in pod_list.get("items", [])
                if any(r.get("controller") and r.get("uid") == uid for r in p["metadata"].get("ownerReferences") or [])]
        service_list = self.plane.api("GET", self._core_path("services", selector=gen_labels(name))) or {}
        services = service_list.get("items", [])
        old = copy.deepcopy(status)
        if is_finished(status):
            self._clean_up(job, status, pods)
            if is_true(status, "Succeeded"):
                for rs in status.get("replicaStatuses", {}).values():
                    rs["succeeded"], rs["active"] = rs["succeeded"] + rs["active"], 0
            return self._write_status(stored, status, old)
        if run_policy.get("suspend"):  # trainutil.IsJobSuspended
            self._clean_up(job, status, pods)
            for rs in status.get("replicaStatuses", {}).values():
                rs["active"] = 0
            msg = f"PyTorchJob {name} is suspended."
            if is_true(status, "Running"):
                update_condition(status, "Running", "False", reason("Suspended"), msg)
            if not is_true(status, "Suspended"):
                update_condition(status, "Suspended", "True", reason("Suspended"), msg)
            return self._write_status(stored, status, old)
        if is_true(status, "Suspended"):
            update_condition(status, "Suspended", "False", reason("Resumed"), f"PyTorchJob {name} is resumed.")
            status["startTime"] = now()

        active = sum(1 for p in pods if is_active(p))
        failed = sum(1 for p in pods if p.get("status", {}).get("phase") == "Failed")
        total = sum(int(s["replicas"]) for s in specs.values())
        prev_failed = sum(rs["failed"] for rs in (status.get("replicaStatuses") or {}).values())
        failure = None
        if run_policy.get("backoffLimit") is not None:
            limit = int(run_policy["backoffLimit"])
            # previousRetry is the FakeWorkQueue's NumRequeues: always 0 in v1.9.4
            exceeds = failed > prev_failed and active != total and limit < 0 + 1
            if exceeds or past_backoff_limit(job, pods, limit):
                failure = f"Job {name} has failed because it has reached the specified backoff limit"
        if failure is None and run_policy.get("activeDeadlineSeconds") is not None and status.get("startTime") \
                and since(status["startTime"]) >= int(run_policy["activeDeadlineSeconds"]):  # core.PastActiveDeadline
            failure = f"Job {name} has failed because it was active longer than specified deadline"
        if failure is not None:
            status.setdefault("completionTime", now())
            update_condition(status, "Failed", "True", reason("Failed"), failure)
            self._delete_pods_and_services(job, status, pods)
            self._cleanup_job(job, status)
            return self._write_status(stored, status, old, always=True)

        for rtype in replica_types(job):
            self._reconcile_pods(job, status, pods, rtype)
            self._reconcile_services(job, services, rtype)
        update_job_status(job, status)
        self._write_status(stored, status, old)

    def _reconcile_pods(self, job: dict, status: dict, pods: list[dict], rtype: str) -> None:
        """JobController.ReconcilePods (pkg/controller.v1/common/pod.go)."""
        rt, rspec, name = rtype.lower(), job["spec"]["pytorchReplicaSpecs"][rtype], job["metadata"]["name"]
        replicas, policy = int(rspec["replicas"]), rspec["restartPolicy"]
        rstatus = status.setdefault("replicaStatuses", {})[rtype] = {"active": 0, "succeeded": 0, "failed": 0}
        for index, found in enumerate(by_index(pods, rt, replicas)):
            if not found:
                pod = new_pod(job, rtype, index, self.init_image, self.init_max_tries)
                self.plane.api("POST", self._core_path("pods"), pod)
                self._act(f"create pod {pod['metadata']['name']}")
                continue
            if len(found) > 1:
                continue  # "We have too many pods": logged, left alone
            pod = found[0]
            if index >= replicas:
                self._delete("pods", pod)
            if pod.get("status", {}).get("phase") == "Failed":
                code = exit_code(pod)
                if policy in ("OnFailure", "Always") or (policy == "ExitCode" and code >= 128):  # IsRetryableExitCode
                    self._delete("pods", pod)
                    update_condition(status, "Restarting", "True", reason("Restarting"),
                                     f"job {name} is restarting because {rtype} replica(s) failed.")
                elif policy == "ExitCode":
                    update_condition(status, "Failed", "True", reason("Failed"),
                                     f'job "{name}" is failing because "{rtype}" replica(s) failed.')
            count_pod(rstatus, pod)

    def _reconcile_services(self, job: dict, services: list[dict], rtype: str) -> None:
        """JobController.ReconcileServices (pkg/controller.v1/common/service.go)."""
        replicas = int(job["spec"]["pytorchReplicaSpecs"][rtype]["replicas"])
        for index, found in enumerate(by_index(services, rtype.lower(), replicas)):
            if not found:
                svc = new_service(job, rtype, index)
                self.plane.api("POST", self._core_path("services"), svc)
                self._act(f"create service {svc['metadata']['name']}")
            elif len(found) == 1 and index >= replicas:
                self._delete("services", found[0])

    # --- clean-up: pkg/controller.v1/common/job.go ---
    def _clean_up(self, job: dict, status: dict, pods: list[dict]) -> None:
        """CleanUpResources without PodGroups."""
        self._delete_pods_and_services(job, status, pods)
        self._cleanup_job(job, status)

    def _delete_pods_and_services(self, job: dict, status: dict, pods: list[dict]) -> None:
        """DeletePodsAndServices: everything while running; once finished, as cleanPodPolicy says."""
        policy = job["spec"]["runPolicy"]["cleanPodPolicy"]
        if is_finished(status) and policy == "None":
            return
        for pod in pods:
            if (is_finished(status) and policy == "Running"
                    and pod.get("status", {}).get("phase") not in ("Running", "Pending")):
                continue
            self._delete("pods", pod)
            self._delete("services", pod)  # "Pod and service have the same name"

    def _cleanup_job(self, job: dict, status: dict) -> None:
        """CleanupJob: delete the job ttlSecondsAfterFinished after its completion (the poll plays the requeue)."""
        ttl = job["spec"]["runPolicy"].get("ttlSecondsAfterFinished")
        if ttl is None or job["spec"]["runPolicy"].get("suspend"):
            return
        if status.get("completionTime") and since(status["completionTime"]) > int(ttl):
            self.plane.api("DELETE", self._jobs_path(job["metadata"]["name"]))
            self._act(f"delete job {job['metadata']['name']}")

    def _delete(self, plural: str, obj: dict) -> None:
        """RealPodControl.DeletePod / RealServiceControl.DeleteService: skip what is gone or already terminating."""
        name = obj["metadata"]["name"]
        current = self.plane.api("GET", self._core_path(plural, name))
        if current is None or current["metadata"].get("deletionTimestamp"):
            return
        self.plane.api("DELETE", self._core_path(plural, name))
        self._act(f"delete {plural[:-1]} {name}")

    def _write_status(self, stored: dict, status: dict, old: dict, always: bool = False) -> None:
        """UpdateJobStatusInApiServer: Status().Update of the job read this pass, only when the status changed
        (a conflict raises; the next pass retries from a fresh read)."""
        if status == old and not always:
            return
        out = copy.deepcopy(status)
        out.setdefault("replicaStatuses", {})
        for rs in out["replicaStatuses"].values():  # `json:",omitempty"` on the counts
            for key in ("active", "succeeded", "failed"):
                if not rs.get(key):
                    rs.pop(key, None)
        if not out["conditions"]:
            out.pop("conditions")
        body = dict(copy.deepcopy(stored), status=out)
        self.plane.api("PUT", self._jobs_path(stored["metadata"]["name"]) + "/status", body)
        self._created_uids.add(stored["metadata"]["uid"])
        self.written.append(out)
        summary = ",".join(c["type"] for c in out.get("conditions", []) if c["status"] == "True")
        self._act(f"status {stored['metadata']['name']}: {summary}")


def wait_for(check, timeout: float = 30, what: str = "condition"):
    """Poll `check` until it returns something truthy (test helper)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} not reached in {timeout} s")
