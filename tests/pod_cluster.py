"""One namespace of the real node for a `pods` test module: its user, the operator and DNS stand-ins, and what the
tests read off it (job state, steps on the volume, container restarts), plus `kubectl drain` as an admin runs it.

    with pod_cluster(control_plane, node, node_images, tmp, "pods", jobs=("pods-a",)) as cluster:
        ...  # cluster.status("job"), cluster.wait_state("job", "Succeeded"), drain(cluster, selector)
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cluster_dns import ClusterDNS
from node_jobs import bind_user_to_the_role, cli, wait_for
from operator_standin import PyTorchJobOperator
from tests.fixtures.control_plane import ControlPlane
from tests.fixtures.node import Node
from trainer_v23 import kubectl_binary

JOB_TIMEOUT = 600  # seconds from submit to Succeeded, restarts included, on a busy 2-core machine


@dataclass
class PodCluster:
    plane: ControlPlane
    node: Node
    namespace: str
    image: str
    tmp: Path
    operator: PyTorchJobOperator

    def status(self, name: str, as_user: bool = False) -> dict:
        """`status -o json` as the admin, or as_user: as alice, bound only to the llmlaunch-user Role."""
        kubeconfig = ["--kubeconfig", str(self.plane.user_kubeconfig)] if as_user else []
        result = cli(self.plane, "status", name, "-n", self.namespace, "-o", "json", *kubeconfig)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def note(self, key: str, **figures) -> None:
        """What a run showed (pod IPs, losses, restarts, timings), kept in the test's tmp dir as summary.json."""
        path = self.tmp / "summary.json"
        summary = json.loads(path.read_text()) if path.is_file() else {}
        path.write_text(json.dumps({**summary, key: figures}, indent=1))

    def wait_state(self, name: str, state: str, timeout: float = JOB_TIMEOUT) -> dict:
        return wait_for(lambda: (s := self.status(name))["state"] == state and s, f"{name} {state}", timeout, 2)

    def logs(self, name: str, node: int = 0) -> str:
        return cli(self.plane, "logs", name, "-n", self.namespace, "--node", str(node)).stdout

    def job_path(self, name: str) -> str:
        return f"/apis/kubeflow.org/v1/namespaces/{self.namespace}/pytorchjobs/{name}"


@contextlib.contextmanager
def pod_cluster(plane: ControlPlane, node: Node, images: dict, tmp: Path, prefix: str,
                jobs: tuple[str, ...] = ()) -> Iterator[PodCluster]:
    """A fresh namespace with alice bound to the llmlaunch-user Role, cluster DNS and the training operator;
    `llmlaunch delete` of each of `jobs` at the end, so their pods leave the shared node to the next module."""
    namespace = plane.create_namespace(prefix)
    bind_user_to_the_role(plane, namespace)
    with ClusterDNS(plane, node.ip, tmp / "dns", domain=node.domain), \
            PyTorchJobOperator(plane, namespace, init_image=images["init"]) as operator:
        yield PodCluster(plane, node, namespace, images["trainer"], tmp, operator)
        for job in jobs:
            cli(plane, "delete", job, "-n", namespace)


def kubectl(plane: ControlPlane, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([kubectl_binary(), f"--kubeconfig={plane.kubeconfig}", *args], capture_output=True,
                          text=True, timeout=timeout)


def drain(cluster: PodCluster, selector: str, timeout_s: int) -> subprocess.CompletedProcess:
    """`kubectl drain` of the node, as an admin empties it for maintenance: cordon, then evict (the Eviction API,
    which a PodDisruptionBudget can refuse) every pod the selector picks, each with its own grace period."""
    return kubectl(cluster.plane, "drain", cluster.node.name, f"--pod-selector={selector}", "--ignore-daemonsets",
                   "--delete-emptydir-data", f"--timeout={timeout_s}s", timeout=timeout_s + 60)


def uncordon(cluster: PodCluster) -> None:
    done = kubectl(cluster.plane, "uncordon", cluster.node.name)
    assert done.returncode == 0, done.stderr


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def restarts(pod: dict | None) -> int:
    statuses = ((pod or {}).get("status") or {}).get("containerStatuses") or []
    return sum(s["restartCount"] for s in statuses if s["name"] == "pytorch")


def last_step(metrics: Path) -> int:
    try:
        lines = [line for line in metrics.read_text().splitlines() if line.strip()]
        return json.loads(lines[-1])["step"] if lines else 0
    except (OSError, ValueError):
        return 0


def exit_codes(pods: dict[str, dict]) -> dict[str, int]:
    return {name: s["state"]["terminated"]["exitCode"] for name, pod in pods.items()
            for s in pod["status"]["containerStatuses"] if s["name"] == "pytorch" and "terminated" in s["state"]}
