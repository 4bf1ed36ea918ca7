"""Every rendered object validates: Kubernetes 1.27-1.34 strict schemas for core kinds and pod
templates, and the CRD's own openAPIV3Schema (closed to unknown fields) for custom resources."""

from __future__ import annotations

import pytest

import schema_check
from golden_cases import cases, load_case
from launcher.render.manifests import render


@pytest.mark.parametrize("name", sorted(cases()))
def test_every_object_validates(name):
    objects = render(load_case(name))
    assert objects
    for obj in objects:
        assert schema_check.problems(obj) == [], f"{name}: {obj['kind']} {obj['metadata']['name']}"


def test_the_checker_rejects_what_a_server_would_prune_or_refuse():
    job = render(load_case("single-node"))[-1]
    job["spec"]["runPolicy"]["cleanupPolicy"] = "All"  # misspelt field: a server would drop it silently
    master = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    master["containers"][0]["resources"]["limits"]["cpu"] = "lots"
    job["metadata"]["label"] = {"team": "a"}  # metadata is checked as ObjectMeta
    job["spec"]["pytorchReplicaSpecs"]["Worker"] = job["spec"]["pytorchReplicaSpecs"]["Master"]
    job["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["volumes"][0]["configMap"]["nme"] = "x"
    found = "\n".join(schema_check.problems(job))
    assert "'cleanupPolicy' was unexpected" in found
    assert "'lots'" in found  # quantity pattern of the pod template
    assert "'label' was unexpected" in found
    assert "Pod tiny-worker (Kubernetes 1.27.0)" in found and "'nme' was unexpected" in found
