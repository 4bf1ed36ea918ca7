"""cluster.api: trainjob renders the Kubeflow Trainer v2.3 TrainJob, and its pods get what a PyTorchJob's get.

- The trainer pod Trainer v2.3 would build (tests/trainer_v23.py: the real strategic merge of the runtime
  patch into the torch-distributed runtime) is compared field by field with the PyTorchJob's pod template
  for the same job; the only differences are the ones listed, each with its reason.
- The CRD's CEL rules (x-kubernetes-validations), which kube-apiserver 1.20 ignores, are evaluated here with
  cel-python: every rule that applies on create, on every rendered TrainJob; the transition rules
  (`oldSelf`) only guard updates, which llmlaunch never makes to a TrainJob.
- The real apiserver stores the TrainJob as rendered (nothing pruned by the v2.3 CRD's structural schema),
  and prunes Trainer v2.0's `podSpecOverrides`: the bug this shape fixes.
"""

from __future__ import annotations

import copy
import json

import celpy
import kubernetes_validate
import pytest
import yaml

import schema_check
from golden_cases import cases, load_case
from launcher.render.chart_files import SCENARIOS
from launcher.render.manifests import render
from launcher.render.pod_values import SA_TOKEN_DIR
from launcher.spec.load import load_job
from trainer_v23 import trainer_pod

FULL = SCENARIOS["tiny-trainjob-full"].overrides
TRAINJOB_CASES = sorted(name for name in cases() if "cluster.api=trainjob" in cases()[name][1])

# Pod fields a PyTorchJob sets that a Trainer v2.3 runtime patch cannot reach, and why that is fine.
NOT_IN_A_RUNTIME_PATCH = {
    "automountServiceAccountToken",  # replaced by a mount at the token's path (test below)
    "enableServiceLinks",  # only adds service variables to the environment; nothing reads them
}
CONTAINER_DIFFERENCES = {
    "name",  # pytorch vs node: each operator injects its variables into its own container name
    "imagePullPolicy",  # not patchable: cluster.image_pull_policy is refused with trainjob
    "ports",  # the metrics port is scraped by number (PodMonitor portNumber)
    "workingDir",  # not patchable: the command starts with `env --chdir=MOUNT`
    "command",  # that `env --chdir`, and $(PET_MASTER_*) instead of $(MASTER_*)
}


def _objects(overrides):
    return {o["kind"]: o for o in render(load_job(cases()["single-node"][0], overrides, resolve_paths=False))}


def _pytorchjob_master(overrides) -> dict:
    pytorch = [o for o in overrides if o not in ("cluster.api=trainjob",)]
    return _objects(pytorch)["PyTorchJob"]["spec"]["pytorchReplicaSpecs"]["Master"]["template"]


@pytest.mark.tools  # kubectl patch --local applies the runtime patch as Trainer v2.3 does
def test_the_trainer_pod_gets_everything_a_pytorchjob_pod_gets():
    trainjob = _objects(FULL)["TrainJob"]
    pod, master = trainer_pod(trainjob), _pytorchjob_master(FULL)
    spec, want = pod["spec"], master["spec"]
    for key, value in want.items():
        if key in NOT_IN_A_RUNTIME_PATCH or key == "containers" or key == "volumes":
            continue
        assert spec.get(key) == value, key
    assert set(spec) - set(want) == set(), set(spec) - set(want)
    assert {k: v for k, v in master["metadata"]["labels"].items()} == pod["metadata"]["labels"]
    assert master["metadata"]["annotations"] == pod["metadata"]["annotations"]

    token = {"name": "no-sa-token", "emptyDir": {}}
    assert spec["volumes"] == want["volumes"] + [token]
    [container], [wanted] = spec["containers"], want["containers"]
    for key, value in wanted.items():
        if key in CONTAINER_DIFFERENCES:
            continue
        if key == "volumeMounts":
            value = value + [{"name": "no-sa-token", "mountPath": SA_TOKEN_DIR, "readOnly": True}]
        assert container.get(key) == value, key
    assert set(container) - set(wanted) == set()
    assert container["command"][:2] == ["env", "--chdir=/workspace"] and container["command"][2:] == [
        arg.replace("$(MASTER_", "$(PET_MASTER_") for arg in wanted["command"]]
    # The settings the full case sets reached the pod (not only "equal because both are empty").
    assert spec["serviceAccountName"] == "trainer" and spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert spec["terminationGracePeriodSeconds"] == 300 and spec["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["SYS_PTRACE", "IPC_LOCK"]}
    assert container["resources"]["limits"]["rdma/ib"] == 1 and container["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token", "optional": False}}} \
        in container["env"]
    assert trainjob["spec"]["activeDeadlineSeconds"] == 86400


@pytest.mark.tools
def test_no_container_of_the_trainer_pod_gets_the_service_account_token():
    """The ServiceAccount admission plugin mounts the token only into containers without a mount at its path,
    and adds the token volume only if one needs it (plugin/pkg/admission/serviceaccount, 1.20 to today)."""
    pod = trainer_pod(_objects(FULL)["TrainJob"])
    containers = pod["spec"].get("initContainers", []) + pod["spec"]["containers"]
    assert containers and all(any(m["mountPath"] == SA_TOKEN_DIR for m in c["volumeMounts"]) for c in containers)
    no_token = next(v for v in pod["spec"]["volumes"] if v["name"] == "no-sa-token")
    assert no_token == {"name": "no-sa-token", "emptyDir": {}}


@pytest.mark.tools
@pytest.mark.parametrize("name", TRAINJOB_CASES)
def test_the_trainer_pod_is_a_valid_pod(name):
    pod = trainer_pod(render(load_case(name))[-1])
    pod["metadata"]["namespace"] = "default"
    for version in schema_check.K8S_VERSIONS:
        kubernetes_validate.validate(pod, version, strict=True)


def test_the_closed_v23_schema_refuses_the_v20_shape():
    job = render(load_case("tiny-trainjob"))[-1]
    old = copy.deepcopy(job)
    old["spec"]["podSpecOverrides"] = [{"targetJobs": [{"name": "node"}]}]
    assert any("'podSpecOverrides' was unexpected" in p for p in schema_check.problems(old))
    typo = copy.deepcopy(job)
    typo["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]["template"][
        "spec"]["template"]["spec"]["containers"][0]["volumeMount"] = []
    assert any("'volumeMount' was unexpected" in p for p in schema_check.problems(typo))


# --- CEL rules --------------------------------------------------------------------------------------


def _cel_rules(schema: dict, path: tuple = ()):
    """(path of property names, rule) for every x-kubernetes-validations rule in a CRD schema."""
    for rule in schema.get("x-kubernetes-validations") or []:
        yield path, rule
    for key, sub in (schema.get("properties") or {}).items():
        yield from _cel_rules(sub, path + (key,))
    if isinstance(schema.get("items"), dict):
        yield from _cel_rules(schema["items"], path + ("[]",))


def _values_at(obj, path: tuple):
    if not path:
        yield obj
        return
    head, rest = path[0], path[1:]
    if head == "[]":
        for item in obj if isinstance(obj, list) else []:
            yield from _values_at(item, rest)
    elif isinstance(obj, dict) and head in obj:
        yield from _values_at(obj[head], rest)


def _trainjob_rules():
    crd = yaml.load((schema_check.CRD_DIR / "trainer.kubeflow.org_trainjobs.yaml").read_text(),
                    Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return list(_cel_rules(schema))


def _evaluate(rule: str, value) -> bool:
    env = celpy.Environment()
    return bool(env.program(env.compile(rule)).evaluate({"self": celpy.json_to_cel(value)}))


def test_the_cel_rules_of_the_crd_hold_for_every_rendered_trainjob():
    rules = _trainjob_rules()
    on_create = [(path, r) for path, r in rules if "oldSelf" not in r["rule"]]
    transition = [(path, r) for path, r in rules if "oldSelf" in r["rule"]]
    assert len(rules) == 19 and len(on_create) == 6 and all(r["rule"] == "self == oldSelf" for _, r in transition)
    checked = set()
    for name in TRAINJOB_CASES:
        job = json.loads(json.dumps(render(load_case(name))[-1]))
        for path, rule in on_create:
            for value in _values_at(job, path):
                assert _evaluate(rule["rule"], value), f"{name}: {'.'.join(path)}: {rule['message']}"
                checked.add((path, rule["rule"]))
    # The rules on what llmlaunch writes ran; the rest are on fields it never sets (initializer, managedBy, status).
    assert {".".join(p) for p, _ in checked} == {""}
    unset = {".".join(p) for p, _ in on_create} - {""}
    assert unset == {"spec.initializer.dataset.storageUri", "spec.initializer.model.storageUri", "spec.managedBy",
                     "status.trainerStatus"}
    for name in TRAINJOB_CASES:
        job = render(load_case(name))[-1]
        assert not {"initializer", "managedBy"} & set(job["spec"]) and "status" not in job


def test_the_cel_evaluation_can_fail():
    rules = dict((r["message"], r["rule"]) for _, r in _trainjob_rules())
    assert not _evaluate(rules["metadata.name must match RFC 1035 DNS label format"], {"metadata": {"name": "Tiny"}})
    assert not _evaluate(rules["metadata.name must be no more than 63 characters"], {"metadata": {"name": "a" * 64}})


# --- the real apiserver ----------------------------------------------------------------------------


@pytest.mark.cluster
def test_the_apiserver_stores_the_trainjob_as_rendered_and_prunes_the_v20_shape(control_plane):
    ns = control_plane.create_namespace("tj")
    path = f"/apis/trainer.kubeflow.org/v1alpha1/namespaces/{ns}/trainjobs"
    objects = render(load_job(cases()["single-node"][0], [*FULL, f"cluster.namespace={ns}"], resolve_paths=False))
    job = objects[-1]
    stored = control_plane.api("POST", path, job)
    assert stored["spec"] == {**job["spec"], "managedBy": "trainer.kubeflow.org/trainjob-controller"}  # CRD default
    old = copy.deepcopy(job)
    old["metadata"]["name"] = "old-shape"
    old["spec"].pop("runtimePatches")
    old["spec"]["podSpecOverrides"] = [{"targetJobs": [{"name": "node"}], "volumes": [{"name": "x", "emptyDir": {}}]}]
    assert "podSpecOverrides" not in control_plane.api("POST", path, old)["spec"]
    pod = trainer_pod(job)
    pod["metadata"]["namespace"] = ns
    created = control_plane.api("POST", f"/api/v1/namespaces/{ns}/pods?dryRun=All", pod)
    assert created["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
