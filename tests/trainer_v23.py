"""What Kubeflow Trainer v2.3 makes of a TrainJob's trainer pod, for tests (no Trainer binary runs here).

Source: tag v2.3.0 of github.com/kubeflow/trainer. pkg/runtime/core/trainingruntime.go mergeRuntimePatches
strategic-merges each runtimePatch's `trainingRuntimeSpec.template.spec` into the ClusterTrainingRuntime's
JobSet spec (replicatedJobs merged by name); the pod part of that merge is done here by the same Go code,
`kubectl patch --local --type strategic` on a Pod built from the runtime's pod template. Then the JobSet
builder (pkg/runtime/framework/plugins/jobset/builder.go) puts spec.trainer into the container named `node`:
image, command, env (merged by name) and resourcesPerNode. Left out: the PET_* variables and port 29400 the
torch plugin adds, and JobSet's own labels; llmlaunch sets none of them.

The runtime is tests/data/trainer-v2.3.0/runtime-torch_distributed.yaml (a copy of
../shared/crds/trainer-v2.3.0/runtime-torch_distributed.yaml, Trainer's manifests at v2.3.0).
"""

from __future__ import annotations

import copy
import functools
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
RUNTIME = ROOT / "tests" / "data" / "trainer-v2.3.0" / "runtime-torch_distributed.yaml"


@functools.cache
def kubectl_binary() -> str:
    local = ROOT / ".tools" / "bin" / "kubectl"
    found = shutil.which("kubectl") or (str(local) if local.is_file() else None)
    if found is None:
        pytest.fail("kubectl not found on PATH or in .tools/bin: run scripts/install-test-deps.sh")
    return found


def runtime_pod(replicated_job: str = "node") -> dict:
    runtime = yaml.safe_load(RUNTIME.read_text())
    job = next(j for j in runtime["spec"]["template"]["spec"]["replicatedJobs"] if j["name"] == replicated_job)
    template = copy.deepcopy(job["template"]["spec"]["template"])
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "trainer", **template.get("metadata", {})},
            "spec": template["spec"]}


def strategic_merge(pod: dict, patch: dict) -> dict:
    """kubectl's strategic merge patch of a Pod (the Go code Trainer's controller runs), offline."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pod.json"
        path.write_text(json.dumps(pod))
        out = subprocess.run([kubectl_binary(), "patch", "--local", "-f", str(path), "--type", "strategic",
                              "-p", json.dumps(patch), "-o", "json"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def trainer_pod(trainjob: dict) -> dict:
    """The pod Trainer v2.3 would create for the TrainJob's `node` replicated job."""
    pod = runtime_pod()
    for runtime_patch in trainjob["spec"].get("runtimePatches") or []:
        for job in runtime_patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]:
            if job["name"] == "node":
                pod = strategic_merge(pod, job["template"]["spec"]["template"])
    trainer = trainjob["spec"]["trainer"]
    container = next(c for c in pod["spec"]["containers"] if c["name"] == "node")
    container["image"], container["command"] = trainer["image"], trainer["command"]
    env = {e["name"]: e for e in container.get("env", [])}
    env.update({e["name"]: e for e in trainer.get("env", [])})
    container["env"] = list(env.values())
    resources = container.setdefault("resources", {})
    for part, values in trainer.get("resourcesPerNode", {}).items():
        resources[part] = {**resources.get(part, {}), **values}
    return pod
