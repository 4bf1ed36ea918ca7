"""`llmlaunch status` explains why a job does not run, in the words of the real scheduler and kubelet
(marker `pods`, the real node of tests/fixtures/node.py).

Five one-node jobs go in at once, in one namespace, and are watched together, so the module costs about one
scheduler round and one kubelet image-pull back-off after the node is up:
- `big` asks for 64 CPUs on a 2-core node: the scheduler's PodScheduled=False/Unschedulable and its
  FailedScheduling event, "Insufficient cpu"; submitted with `--wait --timeout 20`, which gives up saying so.
- `nopull` names an image the node does not have, pulled IfNotPresent: no registry is reachable, so the
  kubelet reports ErrImagePull, then ImagePullBackOff, with its Failed events.
- `neverpull` names that image with pull policy Never: the kubelet's ErrImageNeverPull.
- `noclaim` mounts a claim that does not exist: `submit` refuses it, so it arrives as a user applies
  `llmlaunch render` with kubectl; the scheduler leaves the pod pending and says which claim is missing.
- `unbound` creates its claim in a storage class that does not exist: the claim never binds; the scheduler
  says the pod has an unbound claim and the volume controller why (ProvisioningFailed).
None needs the trainer image. The training operator is tests/operator_standin.py (it writes no Events; the
job-level warnings the real one writes are covered by tests/test_status_explains.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from click.testing import CliRunner

from launcher.cli import cli as llmlaunch_cli
from node_jobs import bind_user_to_the_role, cli, job_file, wait_for
from operator_standin import PyTorchJobOperator
from tests.fixtures.node import NODE_NAME
from trainer_v23 import kubectl_binary
from trainjobs import REPO

pytestmark = pytest.mark.pods

ABSENT_IMAGE = "localhost/llmlaunch-not-on-this-node:0.0.0"
SMALL = ["--set", "cluster.nodes=1", "--set", "cluster.resources.cpu=100m", "--set", "cluster.resources.memory=256Mi"]
JOBS = {
    "big": ["--set", "cluster.resources.cpu=64", "--wait", "--timeout", "20"],
    "nopull": ["--set", "cluster.image_pull_policy=IfNotPresent"],
    "neverpull": [],  # job_file's image_pull_policy: Never
    "noclaim": [],
    "unbound": [],
}
STORAGE = {"noclaim": {"claim": "missing-claim"}, "unbound": {"size": "1Gi", "storage_class": "no-such-class"}}


def status(kubeconfig, ns: str, name: str) -> dict:
    result = CliRunner().invoke(llmlaunch_cli,
                                ["status", name, "-n", ns, "-o", "json", "--kubeconfig", str(kubeconfig)])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def submit(plane, tmp, ns: str, name: str):
    """The submit as a user types it; `big` waits (--wait --timeout 20) and must give up, saying why."""
    job = job_file(tmp, name, ns, ABSENT_IMAGE, STORAGE.get(name, {}), max_steps=40)
    args = [str(job), *SMALL, *JOBS[name]]
    if name != "noclaim":
        submitted = cli(plane, "submit", *args)
        assert submitted.returncode == (1 if name == "big" else 0), submitted.stderr
        return submitted
    refused = cli(plane, "submit", *args)
    assert refused.returncode == 1 and "no PersistentVolumeClaim" in refused.stderr, refused.stderr
    rendered = cli(plane, "render", *args, "-o", str(tmp / "noclaim-manifests"))
    assert rendered.returncode == 0, rendered.stderr
    applied = subprocess.run([kubectl_binary(), f"--kubeconfig={plane.kubeconfig}", "apply", "-f",
                              str(tmp / "noclaim-manifests")], capture_output=True, text=True, timeout=60)
    assert applied.returncode == 0, applied.stderr
    return refused


@pytest.fixture(scope="module")
def explained(control_plane, node, tmp_path_factory):
    """The jobs' `status -o json` once each shows its reason, pod and event (polled together)."""
    tmp = tmp_path_factory.mktemp("status-pods")
    plane = control_plane
    ns = plane.create_namespace("status")
    with PyTorchJobOperator(plane, ns):
        with ThreadPoolExecutor(len(JOBS)) as pool:
            submits = dict(zip(JOBS, pool.map(lambda name: submit(plane, tmp, ns, name), JOBS), strict=True))
        try:
            seen: dict[str, dict] = {}
            last: dict[str, dict] = {}

            def all_explained():
                for name in set(JOBS) - set(seen):
                    last[name] = status(plane.kubeconfig, ns, name)
                    if _explains(name, last[name]):
                        seen[name] = last[name]
                return len(seen) == len(JOBS)

            try:
                wait_for(all_explained, "status to explain every job", 120, 1)
            except AssertionError as e:
                unexplained = {n: last[n] for n in set(JOBS) - set(seen)}
                raise AssertionError(f"{e}; last seen: {json.dumps(unexplained)}") from e
            yield plane, ns, seen, tmp, submits
        finally:
            for name in JOBS:
                cli(plane, "delete", name, "-n", ns)


def _explains(name: str, s: dict) -> bool:
    """Whether the status shows everything that job's test checks (the kubelet takes a while to back off)."""
    if name == "neverpull":
        return bool(s["pods"]) and s["pods"][0]["reason"] == "ErrImageNeverPull"
    if name == "unbound":
        return "FailedScheduling" in {e["reason"] for e in s["events"]} and \
            "ProvisioningFailed" in {e["reason"] for e in s["events"]}
    if name == "nopull":
        messages = {e["message"] for e in s["events"] if e["reason"] == "Failed"}
        return bool(s["pods"]) and s["pods"][0]["reason"] == "ImagePullBackOff" and \
            {"Error: ErrImagePull", "Error: ImagePullBackOff"} <= messages
    return bool(s["pods"]) and "FailedScheduling" in {e["reason"] for e in s["events"]}


def test_a_job_too_big_for_the_node_is_unschedulable(explained):
    _, _, seen, _, _ = explained
    s = seen["big"]
    assert s["state"] == "Created" and s["progress"] is None and s["unavailable"] == {}
    [pod] = s["pods"]
    assert (pod["name"], pod["phase"], pod["node"], pod["restarts"]) == ("big-master-0", "Pending", None, 0)
    assert pod["reason"] == "Unschedulable" and "Insufficient cpu" in pod["message"], pod
    [event] = [e for e in s["events"] if e["reason"] == "FailedScheduling"]
    assert event["object"] == "pod/big-master-0" and "Insufficient cpu" in event["message"], event


def test_an_image_the_node_cannot_pull_is_named_with_the_kubelets_back_off(explained):
    _, _, seen, _, _ = explained
    s = seen["nopull"]
    [pod] = s["pods"]
    assert (pod["name"], pod["phase"], pod["node"]) == ("nopull-master-0", "Pending", NODE_NAME)
    assert pod["reason"] == "ImagePullBackOff" and ABSENT_IMAGE in pod["message"], pod
    # The kubelet's Warnings are all reason Failed: the pull's own error, then ErrImagePull and
    # ImagePullBackOff; its "Back-off pulling image" event is of type Normal, so not among them.
    failed = [e for e in s["events"] if e["reason"] == "Failed"]
    assert {e["object"] for e in failed} == {"pod/nopull-master-0"} and len(failed) == len(s["events"])
    assert any(e["message"].startswith(f'Failed to pull image "{ABSENT_IMAGE}"') for e in failed), failed


def test_a_missing_claim_keeps_the_job_pending_with_the_schedulers_event(explained):
    _, _, seen, _, _ = explained
    s = seen["noclaim"]
    [pod] = s["pods"]
    assert (pod["name"], pod["phase"], pod["node"]) == ("noclaim-master-0", "Pending", None)
    assert 'persistentvolumeclaim "missing-claim" not found' in pod["message"], pod
    [event] = [e for e in s["events"] if e["reason"] == "FailedScheduling"]
    assert 'persistentvolumeclaim "missing-claim" not found' in event["message"], event


def test_the_text_form_as_a_user_bound_to_the_role_without_a_tensor_library(explained):
    """The real CLI process, as alice bound only to the llmlaunch-user Role: pods and events are readable
    (nothing `unavailable`), and status imports no tensor library."""
    plane, ns, _, tmp, _ = explained
    bind_user_to_the_role(plane, ns)
    code = ("import json, sys\nfrom launcher.cli import cli\n"
            "try:\n    cli.main(sys.argv[1:], standalone_mode=False)\nfinally:\n    sys.stdout.flush()\n"
            "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'deepspeed', 'transformers', 'peft', "
            "'prometheus_client'})\nprint(json.dumps(heavy), file=sys.stderr)")
    texts = {}
    for name in JOBS:
        result = subprocess.run([sys.executable, "-c", code, "status", name, "-n", ns, "--kubeconfig",
                                 str(plane.user_kubeconfig)], capture_output=True, text=True, cwd=REPO, timeout=120,
                                env={**os.environ, "PYTHONPATH": str(REPO)})
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stderr.strip().splitlines()[-1]) == []
        texts[name] = result.stdout
        assert "not shown" not in result.stdout, result.stdout
    (tmp / "status.txt").write_text("\n\n".join(f"$ llmlaunch status {n} -n {ns}\n{t}" for n, t in texts.items()))
    assert "pods:\n  NAME          PHASE    READY  RESTARTS  NODE  REASON\n  big-master-0  Pending  no     0" \
           "         -     Unschedulable: 0/1 nodes are available: 1 Insufficient cpu." in texts["big"], texts["big"]
    assert "pod/nopull-master-0  Failed (x" in texts["nopull"] and "Error: ImagePullBackOff" in texts["nopull"]
    assert 'FailedScheduling' in texts["noclaim"] and '"missing-claim" not found' in texts["noclaim"]


def test_an_image_missing_with_pull_policy_never_is_named(explained):
    _, _, seen, _, _ = explained
    [pod] = seen["neverpull"]["pods"]
    assert (pod["name"], pod["phase"], pod["reason"]) == ("neverpull-master-0", "Pending", "ErrImageNeverPull"), pod
    assert f'Container image "{ABSENT_IMAGE}" is not present with pull policy of Never' in pod["message"], pod


def test_a_claim_that_never_binds_is_explained_by_the_scheduler_and_the_volume_controller(explained):
    _, _, seen, _, _ = explained
    s = seen["unbound"]
    [pod] = s["pods"]
    assert (pod["name"], pod["phase"], pod["reason"]) == ("unbound-master-0", "Pending", "Unschedulable"), pod
    assert "pod has unbound immediate PersistentVolumeClaims" in pod["message"], pod
    [provisioning] = [e for e in s["events"] if e["reason"] == "ProvisioningFailed"]
    assert provisioning["object"] == "persistentvolumeclaim/unbound-data", provisioning
    assert 'storageclass.storage.k8s.io "no-such-class" not found' in provisioning["message"], provisioning


def test_submit_wait_gives_up_with_the_schedulers_words(explained):
    """`submit --wait --timeout 20` of a job too big for the node: it says why while waiting, then exit 1 and one
    line with the state and the pod the scheduler cannot place, in the scheduler's words."""
    _, ns, _, _, submits = explained
    result = submits["big"]
    assert result.returncode == 1
    assert "pod big-master-0 Pending: Unschedulable: 0/1 nodes are available: 1 Insufficient cpu." in \
        result.stdout.splitlines(), result.stdout
    assert result.stderr == (f"error: timed out after 20 s waiting for pytorchjob {ns}/big to run (state Created); "
                             "pod big-master-0 Pending: Unschedulable: 0/1 nodes are available: 1 Insufficient cpu.\n")
