"""Every chart scenario (helm/llmlaunch/ci/*-values.yaml) judged by the real kube-apiserver of
tests/fixtures/control_plane.py, with the CRDs installed (PyTorchJob, TrainJob, PodMonitor, PrometheusRule).

`helm install --dry-run=server` (Helm 3.19) renders with the server's capabilities but never sends the
objects, so it proves nothing about them. Here `helm template` is piped to
`kubectl apply --dry-run=server --validate=false`: the apiserver alone decodes each object, checks it
against its built-in or CRD schema and admission, and stores nothing. --validate=false keeps kubectl's
own client-side check out of it, so what is refused is refused by the server.
"""

from __future__ import annotations

import subprocess

import pytest
import yaml

from chart_helm import CHART, OPERATOR_API, helm
from test_chart_e2e import ci_values, stored
from test_cluster_e2e import contains
from test_render_kubectl import json_stream, kubectl

pytestmark = [pytest.mark.helm, pytest.mark.cluster]

SCENARIOS = sorted(p.name.removesuffix("-values.yaml") for p in (CHART / "ci").glob("*.yaml"))


def rendered(plane, scenario: str, ns: str) -> str:
    """helm template as helm install would render for this server: its CRDs' API and its Kubernetes version
    (1.20: a PodDisruptionBudget in policy/v1beta1, which this server serves instead of policy/v1)."""
    version = plane.api("GET", "/version")["gitVersion"]
    return helm("template", "run", str(CHART), "-n", ns, "--api-versions", OPERATOR_API, "--kube-version", version,
                "-f", ci_values(scenario)).stdout


def server_dry_run(plane, ns: str, text: str) -> subprocess.CompletedProcess:
    return subprocess.run([kubectl(), "--kubeconfig", str(plane.kubeconfig), "apply", "-n", ns, "--dry-run=server",
                           "--validate=false", "-o", "json", "-f", "-"],
                          input=text, capture_output=True, text=True, timeout=120)


def answered(stdout: str) -> list[dict]:
    """kubectl -o json prints one object, or a List of them."""
    out = []
    for doc in json_stream(stdout):
        out += doc["items"] if doc.get("kind") == "List" else [doc]
    return out


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_the_apiserver_accepts_every_scenario_as_rendered_and_stores_nothing(control_plane, scenario):
    ns = control_plane.create_namespace("helm-dry")
    text = rendered(control_plane, scenario, ns)
    sent = [o for o in yaml.safe_load_all(text) if o]
    assert ("PrometheusRule" in {o["kind"] for o in sent}) == (scenario != "monitoring-off")
    budgets = [o["apiVersion"] for o in sent if o["kind"] == "PodDisruptionBudget"]
    assert budgets == (["policy/v1beta1"] if scenario.endswith("disruption-budget") else [])
    result = server_dry_run(control_plane, ns, text)
    assert result.returncode == 0, result.stderr
    back = {(o["kind"], o["metadata"]["name"]): o for o in answered(result.stdout)}
    assert set(back) == {(o["kind"], o["metadata"]["name"]) for o in sent}
    for obj in sent:  # the server kept every field: nothing pruned by a CRD schema, nothing changed
        assert contains(obj, back[(obj["kind"], obj["metadata"]["name"])]) == [], obj["kind"]
    assert stored(control_plane, ns) == {}


def test_a_schema_invalid_object_is_refused_by_the_server(control_plane):
    """The path above reaches the server's schemas: one value of the wrong type in the PyTorchJob (what a
    template quoting an integer would render) is refused there, and nothing of the release is stored."""
    ns = control_plane.create_namespace("helm-bad")
    objects = [o for o in yaml.safe_load_all(rendered(control_plane, "multi-node", ns)) if o]
    job = next(o for o in objects if o["kind"] == "PyTorchJob")
    job["spec"]["runPolicy"]["backoffLimit"] = "3"
    result = server_dry_run(control_plane, ns, yaml.safe_dump_all(objects))
    assert result.returncode != 0
    assert 'The PyTorchJob "pretrain-1b" is invalid: spec.runPolicy.backoffLimit' in result.stderr, result.stderr
    assert "must be of type integer" in result.stderr, result.stderr
    assert stored(control_plane, ns) == {}
