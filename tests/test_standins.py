"""The two stand-ins the real-node tests need (tests/operator_standin.py, tests/cluster_dns.py), checked against
the real kube-apiserver of tests/fixtures/control_plane.py.

That control plane has no scheduler or kubelet, so here the test plays those: it binds pods and writes their
status through the status subresource as a kubelet would. Endpoints come from the real endpoints controller
(the `controller_manager` fixture), or, for Services without a selector, from the test as a user writes them.
Everything the stand-ins themselves create or write goes through the API.
"""

from __future__ import annotations

import copy
import json
import random
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from cluster_dns import NOERROR, NXDOMAIN, REFUSED, ClusterDNS, query
from launcher.cli import cli
from launcher.render.manifests import render
from launcher.spec import names
from launcher.spec.load import load_job
from operator_standin import PyTorchJobOperator, wait_for

pytestmark = pytest.mark.cluster

TINY = str(Path(__file__).resolve().parent.parent / "examples" / "tiny.yaml")
INIT_IMAGE = "localhost/llmlaunch-test-init:any"  # the --pytorch-init-container-image flag's value


def rendered_job(ns: str, *sets: str) -> dict:
    objs = render(load_job(TINY, [*sets, f"cluster.namespace={ns}"], resolve_paths=False))
    return next(o for o in objs if o["kind"] == "PyTorchJob")


def create_job(plane, ns: str, job: dict) -> dict:
    return plane.api("POST", f"/apis/kubeflow.org/v1/namespaces/{ns}/pytorchjobs", job)


def get_job(plane, ns: str, name: str = "tiny") -> dict:
    return plane.api("GET", f"/apis/kubeflow.org/v1/namespaces/{ns}/pytorchjobs/{name}")


def pods(plane, ns: str) -> dict[str, dict]:
    return {p["metadata"]["name"]: p for p in plane.api("GET", f"/api/v1/namespaces/{ns}/pods")["items"]}


def services(plane, ns: str) -> dict[str, dict]:
    return {s["metadata"]["name"]: s for s in plane.api("GET", f"/api/v1/namespaces/{ns}/services")["items"]}


def conditions(job: dict) -> dict[str, tuple[str, str, str]]:
    return {c["type"]: (c["status"], c["reason"], c["message"])
            for c in (job.get("status") or {}).get("conditions", [])}


def env_of(pod: dict) -> dict[str, str]:
    """The environment the kubelet would give the `pytorch` container (a later duplicate wins)."""
    container = next(c for c in pod["spec"]["containers"] if c["name"] == "pytorch")
    return {e["name"]: e.get("value") for e in container["env"]}


def kubelet_reports(plane, ns: str, pod: str, phase: str, exit_code: int | None = None, restarts: int = 0,
                    ip: str | None = None) -> None:
    """Write a pod's status as the kubelet would (no kubelet runs on this control plane)."""
    obj = plane.api("GET", f"/api/v1/namespaces/{ns}/pods/{pod}")
    t = "2025-01-01T00:00:00Z"
    state = {"running": {"startedAt": t}} if exit_code is None else {
        "terminated": {"exitCode": exit_code, "reason": "Error" if exit_code else "Completed", "startedAt": t,
                       "finishedAt": t}}
    obj["status"] = {"phase": phase, "containerStatuses": [
        {"name": "pytorch", "ready": exit_code is None, "restartCount": restarts, "image": "img", "imageID": "",
         "state": state}],
        "conditions": [{"type": "Ready", "status": "True" if phase == "Running" else "False"}]}
    if ip:
        obj["status"].update(podIP=ip, podIPs=[{"ip": ip}])
    plane.api("PUT", f"/api/v1/namespaces/{ns}/pods/{pod}/status", obj)


def test_pods_and_services_are_those_of_training_operator_v1_9_4(control_plane):
    ns = control_plane.create_namespace()
    job = create_job(control_plane, ns, rendered_job(ns, "cluster.nodes=4"))
    with PyTorchJobOperator(control_plane, ns, init_image=INIT_IMAGE, interval=0.2) as op:
        found = wait_for(lambda: len(pods(control_plane, ns)) == 4 and len(services(control_plane, ns)) == 4
                         and pods(control_plane, ns), what="4 pods and 4 services")
    assert not op.errors
    assert sorted(found) == ["tiny-master-0", "tiny-worker-0", "tiny-worker-1", "tiny-worker-2"]
    owner = {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "name": "tiny", "uid": job["metadata"]["uid"],
             "blockOwnerDeletion": True, "controller": True}
    template = job["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]
    for name, pod in found.items():
        rt, index = name.split("-")[1], name.split("-")[2]
        rank = int(index) + (rt == "worker")
        assert pod["metadata"]["ownerReferences"] == [owner]
        assert pod["metadata"]["labels"] == {
            **template["metadata"]["labels"], "training.kubeflow.org/operator-name": "pytorchjob-controller",
            "training.kubeflow.org/job-name": "tiny", "training.kubeflow.org/replica-type": rt,
            "training.kubeflow.org/replica-index": index,
            **({"training.kubeflow.org/job-role": "master"} if rt == "master" else {})}
        # the template's annotations (kube-apiserver 1.20 adds its seccomp one from the securityContext)
        assert template["metadata"]["annotations"].items() <= pod["metadata"]["annotations"].items()
        assert pod["spec"]["restartPolicy"] == "OnFailure"
        assert env_of(pod) == {
            "LLMLAUNCH_JOB": "tiny", "HOME": "/tmp", "PYTHONUNBUFFERED": "1", "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1",
            "TORCH_ELASTIC_SHUTDOWN_TIMEOUT": "120", "LLMLAUNCH_NAMESPACE": None, "MASTER_PORT": "23456",
            "PET_MASTER_PORT": "23456", "MASTER_ADDR": "tiny-master-0", "PET_MASTER_ADDR": "tiny-master-0",
            "WORLD_SIZE": "4", "RANK": str(rank), "PET_NODE_RANK": str(rank), "PET_NPROC_PER_NODE": "1",
            "PET_NNODES": "4"}
        init = pod["spec"].get("initContainers", [])
        if rt == "master":
            assert init == []
        else:
            assert [(c["name"], c["image"]) for c in init] == [("init-pytorch", INIT_IMAGE)]
            assert "if nslookup tiny-master-0; then" in init[0]["command"][2] and "seq 100" in init[0]["command"][2]
        # llmlaunch logs --node N finds its pod by the operator's labels
        node = rank
        selector = ",".join(f"{k}={v}" for k, v in names.node_pod_labels("pytorchjob", "tiny", node, False).items())
        listed = control_plane.api("GET", f"/api/v1/namespaces/{ns}/pods?labelSelector={selector}")["items"]
        assert [p["metadata"]["name"] for p in listed] == [name]
    for name, svc in services(control_plane, ns).items():
        assert svc["spec"]["clusterIP"] == "None"
        assert svc["spec"]["selector"] == {k: v for k, v in found[name]["metadata"]["labels"].items()
                                           if k.startswith("training.kubeflow.org/") and not k.endswith("job-role")}
        assert [(p["name"], p["port"], p["targetPort"]) for p in svc["spec"]["ports"]] == [
            ("pytorchjob-port", 23456, 23456), ("metrics", 9400, 9400)]
        assert svc["metadata"]["ownerReferences"] == [owner]
    status = get_job(control_plane, ns)["status"]
    assert conditions({"status": status}) == {"Created": ("True", "PyTorchJobCreated", "PyTorchJob tiny is created.")}
    assert status["replicaStatuses"] == {
        "Master": {"selector": "training.kubeflow.org/job-name=tiny,"
                               "training.kubeflow.org/operator-name=pytorchjob-controller,"
                               "training.kubeflow.org/replica-type=master"},
        "Worker": {"selector": "training.kubeflow.org/job-name=tiny,"
                               "training.kubeflow.org/operator-name=pytorchjob-controller,"
                               "training.kubeflow.org/replica-type=worker"}}
    assert status["startTime"]


def test_status_follows_the_pods_and_llmlaunch_reads_it(control_plane):
    ns = control_plane.create_namespace()
    assert CliRunner().invoke(cli, ["submit", TINY, "--nodes", "2", "-n", ns,
                                    "--kubeconfig", str(control_plane.kubeconfig)]).exit_code == 0

    def state():
        out = CliRunner().invoke(cli, ["status", "tiny", "-n", ns, "-o", "json",
                                       "--kubeconfig", str(control_plane.kubeconfig)])
        return json.loads(out.stdout)

    with PyTorchJobOperator(control_plane, ns, interval=0.2) as op:
        wait_for(lambda: len(pods(control_plane, ns)) == 2, what="2 pods")
        wait_for(lambda: state()["state"] == "Created", what="Created")
        kubelet_reports(control_plane, ns, "tiny-master-0", "Running")
        kubelet_reports(control_plane, ns, "tiny-worker-0", "Running")
        running = wait_for(lambda: (s := state())["state"] == "Running" and s, what="Running")
        assert running["message"] == "PyTorchJob tiny is running."
        assert {k: v.get("active") for k, v in running["replicas"].items()} == {"Master": 1, "Worker": 1}
        kubelet_reports(control_plane, ns, "tiny-worker-0", "Succeeded", exit_code=0)
        kubelet_reports(control_plane, ns, "tiny-master-0", "Succeeded", exit_code=0)
        done = wait_for(lambda: (s := state())["state"] == "Succeeded" and s, what="Succeeded")
    assert not op.errors
    assert done["message"] == "PyTorchJob tiny is successfully completed."
    assert {k: v.get("succeeded") for k, v in done["replicas"].items()} == {"Master": 1, "Worker": 1}
    job = get_job(control_plane, ns)
    assert conditions(job)["Running"][0] == "False" and job["status"]["completionTime"]
    assert sorted(pods(control_plane, ns)) == ["tiny-master-0", "tiny-worker-0"]  # cleanPodPolicy None keeps them


def test_failed_pod_is_replaced_under_on_failure_and_a_deleted_pod_recreated(control_plane):
    ns = control_plane.create_namespace()
    create_job(control_plane, ns, rendered_job(ns, "cluster.nodes=2"))
    with PyTorchJobOperator(control_plane, ns, interval=0.2) as op:
        first = wait_for(lambda: len(p := pods(control_plane, ns)) == 2 and p, what="2 pods")
        kubelet_reports(control_plane, ns, "tiny-master-0", "Running")
        kubelet_reports(control_plane, ns, "tiny-worker-0", "Failed", exit_code=1)
        replaced = wait_for(lambda: (p := pods(control_plane, ns).get("tiny-worker-0")) and
                            p["metadata"]["uid"] != first["tiny-worker-0"]["metadata"]["uid"] and p,
                            what="new worker pod")
        # the pass that deleted the failed pod wrote Restarting in place of Running (ReconcilePods' message, then,
        # the running master having put Running back, UpdateJobStatus's); the next pass, with the master still
        # running and no failed pod left, writes Running again
        restarting = [conditions({"status": s}) for s in op.written if "Restarting" in conditions({"status": s})]
        assert restarting[0]["Restarting"] == (
            "True", "PyTorchJobRestarting", "PyTorchJob tiny is restarting because 1 Worker replica(s) failed.")
        assert "Running" not in restarting[0]
        wait_for(lambda: conditions(get_job(control_plane, ns)).get("Running", ("",))[0] == "True",
                 what="Running again")
        assert "delete pod tiny-worker-0" in op.actions and replaced["spec"]["initContainers"]
        control_plane.api("DELETE", f"/api/v1/namespaces/{ns}/pods/tiny-master-0")
        wait_for(lambda: (p := pods(control_plane, ns).get("tiny-master-0")) and
                 p["metadata"]["uid"] != first["tiny-master-0"]["metadata"]["uid"], what="new master pod")
    assert not op.errors


@pytest.mark.parametrize(("policy", "exit_code", "restarted", "failed_message"), [
    ("Never", 1, False, "PyTorchJob tiny is failed because 1 Worker replica(s) failed."),
    ("ExitCode", 137, True, None),
    ("ExitCode", 1, False, 'job "tiny" is failing because "Worker" replica(s) failed.'),
])
def test_restart_policy_decides_between_a_new_pod_and_a_failed_job(control_plane, policy, exit_code, restarted,
                                                                   failed_message):
    ns = control_plane.create_namespace()
    job = rendered_job(ns, "cluster.nodes=2")
    job["spec"]["runPolicy"]["cleanPodPolicy"] = "All"
    for spec in job["spec"]["pytorchReplicaSpecs"].values():
        spec["restartPolicy"] = policy
    create_job(control_plane, ns, job)
    with PyTorchJobOperator(control_plane, ns, interval=0.2) as op:
        first = wait_for(lambda: len(p := pods(control_plane, ns)) == 2 and p, what="2 pods")
        assert {p["spec"]["restartPolicy"] for p in first.values()} == {"Never"}  # ExitCode is the operator's
        kubelet_reports(control_plane, ns, "tiny-master-0", "Running")
        kubelet_reports(control_plane, ns, "tiny-worker-0", "Failed", exit_code=exit_code)
        if restarted:
            wait_for(lambda: (p := pods(control_plane, ns).get("tiny-worker-0")) and
                     p["metadata"]["uid"] != first["tiny-worker-0"]["metadata"]["uid"], what="new worker pod")
            assert "Failed" not in conditions(get_job(control_plane, ns))
        else:  # cleanPodPolicy All: once failed, every pod and service goes
            wait_for(lambda: not pods(control_plane, ns) and not services(control_plane, ns), what="clean-up")
            job = get_job(control_plane, ns)
            assert conditions(job)["Failed"] == ("True", "PyTorchJobFailed", failed_message)
            assert not [a for a in op.actions if a.startswith("create pod")][2:]  # nothing recreated
    assert not op.errors


def test_backoff_limit_fails_the_job_on_container_restarts(control_plane):
    ns = control_plane.create_namespace()
    create_job(control_plane, ns, rendered_job(ns, "cluster.nodes=2"))  # backoffLimit 3 as rendered
    with PyTorchJobOperator(control_plane, ns, interval=0.2) as op:
        wait_for(lambda: len(pods(control_plane, ns)) == 2, what="2 pods")
        kubelet_reports(control_plane, ns, "tiny-master-0", "Running", restarts=2)
        wait_for(lambda: "Running" in conditions(get_job(control_plane, ns)), what="Running")
        assert "Failed" not in conditions(get_job(control_plane, ns))
        kubelet_reports(control_plane, ns, "tiny-worker-0", "Running", restarts=1)
        job = wait_for(lambda: "Failed" in conditions(j := get_job(control_plane, ns)) and j, what="Failed")
    assert conditions(job)["Failed"] == ("True", "PyTorchJobFailed",
                                         "Job tiny has failed because it has reached the specified backoff limit")
    assert len(pods(control_plane, ns)) == 2 and not op.errors  # cleanPodPolicy None


def test_elastic_job_has_workers_only_with_rendezvous_env(control_plane):
    ns = control_plane.create_namespace()
    create_job(control_plane, ns, rendered_job(ns, "cluster.nodes=2", "cluster.elastic={min_nodes: 1, max_nodes: 3}"))
    with PyTorchJobOperator(control_plane, ns, interval=0.2) as op:
        found = wait_for(lambda: len(p := pods(control_plane, ns)) == 2 and p, what="2 pods")
        assert sorted(found) == ["tiny-worker-0", "tiny-worker-1"]
        assert found["tiny-worker-0"]["metadata"]["labels"]["training.kubeflow.org/job-role"] == "master"
        assert "training.kubeflow.org/job-role" not in found["tiny-worker-1"]["metadata"]["labels"]
        for pod in found.values():
            env = env_of(pod)
            assert {k: env.get(k) for k in ("PET_RDZV_ENDPOINT", "PET_RDZV_BACKEND", "PET_NNODES", "PET_MAX_RESTARTS",
                                            "PET_NPROC_PER_NODE", "MASTER_ADDR", "WORLD_SIZE", "RANK")} == {
                "PET_RDZV_ENDPOINT": "tiny-worker-0:23456", "PET_RDZV_BACKEND": "c10d", "PET_NNODES": "1:3",
                "PET_MAX_RESTARTS": "3", "PET_NPROC_PER_NODE": "1", "MASTER_ADDR": None, "WORLD_SIZE": None,
                "RANK": None}
            assert not pod["spec"].get("initContainers")
        kubelet_reports(control_plane, ns, "tiny-worker-0", "Running")
        kubelet_reports(control_plane, ns, "tiny-worker-1", "Succeeded", exit_code=0)
        job = wait_for(lambda: "Succeeded" in conditions(j := get_job(control_plane, ns)) and j, what="Succeeded")
    assert conditions(job)["Succeeded"] == ("True", "PyTorchJobSucceeded",
                                            f"PyTorchJob {ns}/tiny successfully completed.")
    assert not op.errors


def free_loopback_ip() -> str:
    while True:
        ip = f"127.0.{random.randint(1, 254)}.{random.randint(2, 254)}"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind((ip, 53))
                return ip
            except OSError:
                continue


def endpoints(ns: str, name: str, ready: list[tuple[str, str | None]], not_ready: list[str] = ()) -> dict:
    """An Endpoints object as kube-controller-manager's endpoints controller writes it."""
    subset = {"addresses": [{"ip": ip, **({"hostname": h} if h else {})} for ip, h in ready],
              "ports": [{"name": "pytorchjob-port", "port": 23456, "protocol": "TCP"}]}
    if not_ready:
        subset["notReadyAddresses"] = [{"ip": ip} for ip in not_ready]
    return {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": name, "namespace": ns}, "subsets": [subset]}


def test_cluster_dns_serves_headless_services_from_their_endpoints(control_plane, tmp_path):
    # Services without a selector: their Endpoints are written by hand (by this test), and an endpoints
    # controller running in the same session leaves them alone.
    ns = control_plane.create_namespace()
    ip, fqdn = free_loopback_ip(), f"svc-a.{ns}.svc.cluster.local"
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc-a"},
           "spec": {"clusterIP": "None", "ports": [{"name": "p", "port": 23456}]}}
    control_plane.api("POST", f"/api/v1/namespaces/{ns}/services", svc)
    control_plane.api("POST", f"/api/v1/namespaces/{ns}/services", dict(copy.deepcopy(svc), metadata={"name": "cip"},
                                                                       spec={"ports": [{"port": 80}]}))
    control_plane.api("POST", f"/api/v1/namespaces/{ns}/endpoints",
                      endpoints(ns, "svc-a", [("10.244.0.5", None), ("10.244.0.6", "h0")], not_ready=["10.244.0.9"]))
    control_plane.api("POST", f"/api/v1/namespaces/{ns}/endpoints", endpoints(ns, "cip", [("10.244.0.7", None)]))
    with ClusterDNS(control_plane, ip, tmp_path / "dns", interval=0.2) as dns:
        assert query(ip, fqdn) == (NOERROR, ["10.244.0.5", "10.244.0.6"])  # ready addresses only
        assert query(ip, f"h0.svc-a.{ns}.svc.cluster.local") == (NOERROR, ["10.244.0.6"])  # hostname + subdomain
        assert query(ip, f"cip.{ns}.svc.cluster.local")[0] == NXDOMAIN  # not headless: no ClusterIP without kube-proxy
        assert query(ip, "example.com")[0] == REFUSED  # nothing forwarded
        ep = control_plane.api("GET", f"/api/v1/namespaces/{ns}/endpoints/svc-a")
        ep["subsets"][0]["addresses"] = [{"ip": "10.244.0.9"}]
        control_plane.api("PUT", f"/api/v1/namespaces/{ns}/endpoints/svc-a", ep)
        wait_for(lambda: query(ip, fqdn) == (NOERROR, ["10.244.0.9"]), what="new address served")
        assert query(ip, f"h0.svc-a.{ns}.svc.cluster.local")[0] == NXDOMAIN
        control_plane.api("DELETE", f"/api/v1/namespaces/{ns}/services/svc-a")
        wait_for(lambda: query(ip, fqdn)[0] == NXDOMAIN, what="name gone with its service")
        assert not dns.errors and dns.reloads >= 3
    pid = dns.proc.pid
    assert dns.proc.poll() is not None and not Path(f"/proc/{pid}").exists()
    with pytest.raises(OSError):
        query(ip, fqdn, timeout=0.5)  # stopped: nobody answers


def test_operator_and_dns_together_resolve_the_master_service(control_plane, controller_manager, tmp_path):
    """The wiring of the real-node test: the operator's Service, its Endpoints (written by the real
    endpoints controller from the pod status a kubelet would report), the name the workers look up."""
    ns, ip = control_plane.create_namespace(), free_loopback_ip()
    create_job(control_plane, ns, rendered_job(ns, "cluster.nodes=2"))
    with PyTorchJobOperator(control_plane, ns, interval=0.2), ClusterDNS(control_plane, ip, tmp_path, interval=0.2):
        wait_for(lambda: "tiny-master-0" in services(control_plane, ns), what="master service")
        # the scheduler binds the pod to a node, the kubelet reports it ready: the endpoints controller takes it
        control_plane.api("POST", f"/api/v1/namespaces/{ns}/pods/tiny-master-0/binding", {
            "apiVersion": "v1", "kind": "Binding", "metadata": {"name": "tiny-master-0"},
            "target": {"apiVersion": "v1", "kind": "Node", "name": "node-x"}})
        kubelet_reports(control_plane, ns, "tiny-master-0", "Running", ip="10.244.0.12")
        master_addr = env_of(pods(control_plane, ns)["tiny-worker-0"])["MASTER_ADDR"]
        # the pod's resolv.conf searches <ns>.svc.cluster.local first
        wait_for(lambda: query(ip, f"{master_addr}.{ns}.svc.cluster.local") == (NOERROR, ["10.244.0.12"]),
                 what="MASTER_ADDR resolves to the master pod")
