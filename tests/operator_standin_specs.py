"""The objects Kubeflow training-operator v1.9.4 makes from a PyTorchJob: defaults, Pods, headless Services.

Pure functions over the job as the apiserver returns it (dicts), ported rule by rule from
github.com/kubeflow/trainer at tag v1.9.4; each rule names its source file. The controller loop that
calls them is tests/operator_standin.py.
"""

from __future__ import annotations

import copy

GROUP_VERSION, KIND = "kubeflow.org/v1", "PyTorchJob"
CONTROLLER_NAME = "pytorchjob-controller"  # pkg/controller.v1/pytorch/pytorchjob_controller.go
DEFAULT_CONTAINER, DEFAULT_PORT_NAME, DEFAULT_PORT = "pytorch", "pytorchjob-port", 23456  # apis/.../pytorch_types.go
# pkg/apis/kubeflow.org/v1/common_types.go
REPLICA_INDEX_LABEL = "training.kubeflow.org/replica-index"
REPLICA_TYPE_LABEL = "training.kubeflow.org/replica-type"
OPERATOR_NAME_LABEL = "training.kubeflow.org/operator-name"
JOB_NAME_LABEL = "training.kubeflow.org/job-name"
JOB_ROLE_LABEL = "training.kubeflow.org/job-role"
MASTER, WORKER = "Master", "Worker"
# pkg/config/config.go: defaults of --pytorch-init-container-image / --pytorch-init-container-max-tries
INIT_IMAGE_DEFAULT, INIT_MAX_TRIES_DEFAULT = "alpine:3.10", 100


class JobSpecError(ValueError):
    """A job the real operator would fail to reconcile (it logs and retries; so does the stand-in)."""


def apply_defaults(job: dict) -> dict:
    """SetDefaults_PyTorchJob (pkg/apis/kubeflow.org/v1/pytorch_defaults.go, defaulting_utils.go), applied
    in memory before every reconcile as Reconcile's r.Scheme.Default does; never written back."""
    job = copy.deepcopy(job)
    spec = job.setdefault("spec", {})
    run_policy = spec.setdefault("runPolicy", {})
    run_policy.setdefault("cleanPodPolicy", "None")
    specs = spec.setdefault("pytorchReplicaSpecs", {})
    for canonical in (MASTER, WORKER):  # setPyTorchTypeNamesToCamelCase
        for key in list(specs):
            if key.lower() == canonical.lower() and key != canonical:
                specs[canonical] = specs.pop(key)
                break
    for rspec in specs.values():
        rspec.setdefault("replicas", 1)
        rspec["restartPolicy"] = rspec.get("restartPolicy") or "OnFailure"
        containers = rspec.setdefault("template", {}).setdefault("spec", {}).setdefault("containers", [])
        index = next((i for i, c in enumerate(containers) if c.get("name") == DEFAULT_CONTAINER), 0)
        if containers and not any(p.get("name") == DEFAULT_PORT_NAME for p in containers[index].get("ports") or []):
            containers[index].setdefault("ports", []).append({"name": DEFAULT_PORT_NAME, "containerPort": DEFAULT_PORT})
    elastic = spec.get("elasticPolicy")
    if elastic is not None:  # setElasticPolicy
        lo, hi = elastic.get("minReplicas"), elastic.get("maxReplicas")
        if lo is None and hi is None and WORKER in specs:
            elastic["minReplicas"] = elastic["maxReplicas"] = specs[WORKER]["replicas"]
        elif lo is None and hi is not None:
            elastic["minReplicas"] = hi
        elif hi is None and lo is not None:
            elastic["maxReplicas"] = lo
    if (elastic is None or elastic.get("nProcPerNode") is None) and spec.get("nprocPerNode") is None:
        spec["nprocPerNode"] = "auto"  # setDefaultNprocPerNode
    return job


def replica_types(job: dict) -> list[str]:
    """Master before Worker: Go ranges over the replica map in random order; this is one of those orders."""
    specs = job["spec"]["pytorchReplicaSpecs"]
    return sorted(specs, key=lambda t: (t != MASTER, t != WORKER, t))


def gen_labels(job_name: str) -> dict[str, str]:
    """JobController.GenLabels (pkg/controller.v1/common/job_controller.go)."""
    return {OPERATOR_NAME_LABEL: CONTROLLER_NAME, JOB_NAME_LABEL: job_name.replace("/", "-")}


def general_name(job_name: str, rt: str, index) -> str:
    """GenGeneralName (pkg/core/utils.go) = replicaName (pkg/controller.v1/pytorch/envvar.go)."""
    return f"{job_name}-{rt.lower()}-{index}".replace("/", "-")


def owner_reference(job: dict) -> dict:
    """JobController.GenOwnerReference (pkg/controller.v1/common/job_controller.go)."""
    meta = job["metadata"]
    return {"apiVersion": GROUP_VERSION, "kind": KIND, "name": meta["name"], "uid": meta["uid"],
            "blockOwnerDeletion": True, "controller": True}


def _port_of(job: dict, rtype: str) -> int:
    """getPortFromPyTorchJob (pkg/controller.v1/pytorch/envvar.go)."""
    for container in job["spec"]["pytorchReplicaSpecs"][rtype]["template"]["spec"].get("containers") or []:
        if container.get("name") == DEFAULT_CONTAINER:
            for port in container.get("ports") or []:
                if port.get("name") == DEFAULT_PORT_NAME:
                    return int(port["containerPort"])
    raise JobSpecError("port not found")


def _nproc_per_node_int(job: dict) -> int:
    """getNprocPerNodeInt (envvar.go): "auto" or anything non-numeric counts as 1."""
    try:
        return int(job["spec"].get("nprocPerNode"))
    except (TypeError, ValueError):
        return 1


def _elastic_env(job: dict) -> list[dict]:
    """ElasticEnvVarGenerator.Generate (pkg/controller.v1/pytorch/elastic.go)."""
    policy, specs, env = job["spec"]["elasticPolicy"], job["spec"]["pytorchReplicaSpecs"], []
    host = policy.get("rdzvHost") or f"{job['metadata']['name']}-worker-0"
    port = policy["rdzvPort"] if policy.get("rdzvPort") is not None else _port_of(job, WORKER)
    env.append({"name": "PET_RDZV_ENDPOINT", "value": f"{host}:{port}"})
    env.append({"name": "PET_RDZV_BACKEND", "value": policy.get("rdzvBackend") or "c10d"})
    if policy.get("minReplicas") is None and policy.get("maxReplicas") is None:
        if WORKER not in specs:
            raise JobSpecError("cannot find the worker spec")
        env.append({"name": "PET_NNODES", "value": str(specs[WORKER]["replicas"])})
    else:
        env.append({"name": "PET_NNODES", "value": f"{policy['minReplicas']}:{policy['maxReplicas']}"})
    if policy.get("maxRestarts") is not None:
        env.append({"name": "PET_MAX_RESTARTS", "value": str(policy["maxRestarts"])})
    if policy.get("nProcPerNode") is not None:
        env.append({"name": "PET_NPROC_PER_NODE", "value": str(policy["nProcPerNode"])})
    if policy.get("rdzvId") is not None:
        env.append({"name": "PET_RDZV_ID", "value": policy["rdzvId"]})
    if policy.get("rdzvConf") is not None:
        conf = "".join(f"{c.get('key', '')}={c.get('value', '')}," for c in policy["rdzvConf"])
        env.append({"name": "PET_RDZV_CONF", "value": conf[:-1]})
    if policy.get("standalone"):
        env.append({"name": "PET_STANDALONE", "value": ""})
    return env


def pod_env(job: dict, rt: str, index: int) -> list[dict]:
    """What setPodEnv (pkg/controller.v1/pytorch/envvar.go) appends to every container's env."""
    specs = job["spec"]["pytorchReplicaSpecs"]
    total = sum(int(s["replicas"]) for s in specs.values())  # getTotalReplicas
    env = [{"name": "PYTHONUNBUFFERED", "value": "1"}]
    if MASTER in specs:
        port, addr = str(_port_of(job, MASTER)), general_name(job["metadata"]["name"], MASTER, 0)  # master.go
        env += [{"name": "MASTER_PORT", "value": port}, {"name": "PET_MASTER_PORT", "value": port},
                {"name": "MASTER_ADDR", "value": addr}, {"name": "PET_MASTER_ADDR", "value": addr}]
        rank = index + 1 if rt == WORKER.lower() else index
        env += [{"name": "WORLD_SIZE", "value": str(total * _nproc_per_node_int(job))},
                {"name": "RANK", "value": str(rank)}, {"name": "PET_NODE_RANK", "value": str(rank)}]
    if job["spec"].get("nprocPerNode") is not None:
        env.append({"name": "PET_NPROC_PER_NODE", "value": str(job["spec"]["nprocPerNode"])})
    if job["spec"].get("elasticPolicy") is not None:
        env += _elastic_env(job)
    else:
        env.append({"name": "PET_NNODES", "value": str(total)})
    return env


def init_container(master_addr: str, image: str, max_tries: int) -> dict:
    """The default template of pkg/controller.v1/pytorch/initcontainer.go, rendered."""
    return {"name": "init-pytorch", "image": image, "imagePullPolicy": "IfNotPresent",
            "resources": {"limits": {"cpu": "100m", "memory": "20Mi"}, "requests": {"cpu": "50m", "memory": "10Mi"}},
            "command": ["sh", "-c", f"err=1;for i in $(seq {max_tries}); do if nslookup {master_addr}; then err=0 && "
                        f"break; fi;echo waiting for master; sleep 2; done; exit $err"]}


def is_master_role(job: dict, rtype: str, index: int) -> bool:
    """PyTorchJobReconciler.IsMasterRole (pytorchjob_controller.go)."""
    if MASTER in job["spec"]["pytorchReplicaSpecs"]:
        return rtype == MASTER
    return rtype == WORKER and index == 0


def new_pod(job: dict, rtype: str, index: int, init_image: str, init_max_tries: int) -> dict:
    """JobController.createNewPod (pkg/controller.v1/common/pod.go) + SetClusterSpec (pytorchjob_controller.go)
    + GetPodFromTemplate (pkg/controller.v1/control/pod_control.go)."""
    name, rt = job["metadata"]["name"], rtype.lower()
    rspec = job["spec"]["pytorchReplicaSpecs"][rtype]
    template = copy.deepcopy(rspec["template"])
    meta = template.get("metadata") or {}
    labels = dict(meta.get("labels") or {})
    labels.update(gen_labels(name))
    labels[REPLICA_TYPE_LABEL], labels[REPLICA_INDEX_LABEL] = rt, str(index)
    if is_master_role(job, rtype, index):
        labels[JOB_ROLE_LABEL] = "master"
    spec = template.get("spec") or {}
    for container in spec.get("containers") or []:  # setPodEnv: every container, not the init containers
        container["env"] = list(container.get("env") or []) + pod_env(job, rt, index)
    if MASTER in job["spec"]["pytorchReplicaSpecs"] and rt == WORKER.lower():  # setInitContainer (initcontainer.go)
        spec["initContainers"] = list(spec.get("initContainers") or []) + [
            init_container(general_name(name, MASTER, 0), init_image, init_max_tries)]
    # core.SetRestartPolicy (pkg/core/pod.go): ExitCode is the operator's own policy, so the pod gets Never
    spec["restartPolicy"] = "Never" if rspec["restartPolicy"] == "ExitCode" else rspec["restartPolicy"]
    metadata = {"name": general_name(name, rt, index), "labels": labels,
                "annotations": dict(meta.get("annotations") or {}), "ownerReferences": [owner_reference(job)]}
    if meta.get("finalizers"):
        metadata["finalizers"] = list(meta["finalizers"])
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def service_ports(rspec: dict) -> list[dict]:
    """core.GetPortsFromJob (pkg/core/service.go): every port of the `pytorch` container (a Go map there, so
    in random order; container order here)."""
    for container in rspec["template"]["spec"].get("containers") or []:
        if container.get("name") == DEFAULT_CONTAINER:
            return [{"name": p.get("name", ""), "port": int(p["containerPort"])} for p in container.get("ports") or []]
    raise JobSpecError("failed to find the port")


def new_service(job: dict, rtype: str, index: int) -> dict:
    """JobController.CreateNewService (pkg/controller.v1/common/service.go) + GetServiceFromTemplate
    (pkg/controller.v1/control/utils.go): one headless Service per replica, named like its pod."""
    name, rt = job["metadata"]["name"], rtype.lower()
    labels = gen_labels(name)
    labels[REPLICA_TYPE_LABEL], labels[REPLICA_INDEX_LABEL] = rt, str(index)
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": general_name(name, rt, index), "labels": labels,
                         "ownerReferences": [owner_reference(job)]},
            "spec": {"clusterIP": "None", "selector": dict(labels),
                     "ports": service_ports(job["spec"]["pytorchReplicaSpecs"][rtype])}}
