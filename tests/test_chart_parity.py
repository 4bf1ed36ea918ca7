"""The chart and `llmlaunch render` cannot drift apart: for every scenario (launcher/render/chart_files.py: the
examples and their variants, the same list as the golden manifests and the chart's CI values),
`helm template` with the scenario's values gives the objects render gives.

Canonical form (tests/chart_helm.py): objects sorted by apiVersion, kind, name; parsed YAML, so
formatting and key order do not count. Everything else must be equal, every byte of train.yaml and
ds_config.json included. What remains different, and why:
- Helm's release labels: helm.sh/chart and app.kubernetes.io/version only on the chart's objects, and
  managed-by Helm instead of llmlaunch: they say who manages the object (`helm upgrade/uninstall` vs
  `llmlaunch delete`), so they must differ; canonical() maps them.
- The chart's alert rules (PrometheusRule) and Grafana dashboard (ConfigMap): installed once per
  release for every job, which render (one job) does not create. They are not skipped: each must be
  monitoring/'s file unchanged, with render's labels for its component, where the values switch it on.
"""

from __future__ import annotations

import copy

import pytest
import yaml

import chart_helm
from golden_cases import load_case
from launcher.render.chart_files import SCENARIOS, scenario_values
from launcher.render.helm_values import chart_values, documented_yaml
from launcher.render.manifests import render
from launcher.spec.job_spec import JobSpec
from launcher.spec.k8s_types import has_control_character
from launcher.spec.names import common_labels

pytestmark = pytest.mark.helm
RULES = chart_helm.ROOT / "monitoring" / "alerts" / "llmlaunch-rules.yaml"
DASHBOARD = chart_helm.ROOT / "monitoring" / "dashboards" / "llmlaunch.json"


def chart_objects(spec: JobSpec, tmp_path, values_text: str | None = None) -> tuple[list[dict], list[dict]]:
    path = tmp_path / "values.yaml"
    path.write_text(values_text or documented_yaml(chart_values(spec), ["test"]))
    objects = chart_helm.template(spec.name, "-f", str(path), namespace=spec.cluster.namespace)
    extras = [o for o in objects if chart_helm.is_chart_extra(o)]
    return [o for o in objects if not chart_helm.is_chart_extra(o)], extras


def check_chart_extras(spec: JobSpec, values: dict, extras: list[dict]) -> None:
    """The alert rules and the dashboard: monitoring/'s files, render's labels, only where switched on."""
    monitoring = values.get("monitoring", {})
    expected = {}
    if monitoring.get("prometheusRule", {}).get("enabled", True):
        expected["PrometheusRule"] = f"{spec.name}-alerts"
    if monitoring.get("dashboard", {}).get("enabled", True):
        expected["ConfigMap"] = f"{spec.name}-dashboard"
    assert {o["kind"]: o["metadata"]["name"] for o in extras} == expected and len(extras) == len(expected)
    for obj in chart_helm.canonical(extras):
        component = "alerts" if obj["kind"] == "PrometheusRule" else "dashboard"
        labels = obj["metadata"]["labels"]
        assert {k: labels.get(k) for k in common_labels(spec, component)} == common_labels(spec, component)
        if component == "alerts":
            assert obj["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]
        else:
            assert obj["data"] == {"llmlaunch.json": DASHBOARD.read_text()}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_helm_template_equals_llmlaunch_render(name, tmp_path):
    spec = load_case(name)
    values = scenario_values(name)
    objects, extras = chart_objects(spec, tmp_path, documented_yaml(values, ["test"]))
    assert chart_helm.canonical(objects) == chart_helm.canonical(render(spec))
    check_chart_extras(spec, values, extras)


def test_parity_is_not_vacuous(tmp_path):
    """The comparison sees a one-character difference in any part of the job."""
    spec = load_case("multi-node")
    objects, _ = chart_objects(spec, tmp_path)
    rendered = render(spec)
    for path in (["data", "ds_config.json"], ["spec", "pytorchReplicaSpecs", "Worker", "replicas"]):
        changed = copy.deepcopy(rendered)
        target = next(o for o in changed if o["kind"] == ("ConfigMap" if path[0] == "data" else "PyTorchJob"))
        node = target
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = node[path[-1]] + (" " if isinstance(node[path[-1]], str) else 1)
        assert chart_helm.canonical(objects) != chart_helm.canonical(changed)


NASTY = ['"', "'", "\\", "\n", ": ", "- ", "#", "{", "}", "[", "]", "---", "&a", "*a", "!!python/object", "\x85",
         "\u2028", "\t", "%", "@", "`", "|", ">", "{{ .Release.Name }}", "<&>", "\U0001f600", " trailing "]


@pytest.mark.parametrize("value", ["".join(NASTY), "{{ fail \"x\" }}", "true", "0x1F", "~", ""])
def test_user_strings_reach_the_chart_verbatim(value, tmp_path):
    """The same hostile strings as test_render_injection, through values into the chart: same objects as render,
    so no string changed the structure, and template syntax in a value stays text."""
    base = yaml.safe_load((chart_helm.ROOT / "examples" / "tiny.yaml").read_text())
    base["cluster"].update({
        "nodes": 2,
        "env": {"USER_NOTE": value},
        "annotations": {"example.com/note": value},
        "secrets": [{"env": "HF_TOKEN", "secret": "hf", "key": value or "k"}],
        "network": {"nccl": {"NCCL_DEBUG": value}},
        "scheduling": {"tolerations": [{"key": "gpu", "operator": "Equal", "value": value}]},
        # A mount path takes no control characters, ':' or '..' (launcher.spec.rules refuses them): the rest stays.
        "storage": {"size": "1Gi", "mount_path": "/data/" + ("".join(
            c for c in value if c not in "/.:" and not has_control_character(c)) or "x")},
    })
    base["train"]["data"]["text_field"] = value
    spec = JobSpec.model_validate(base)
    objects, _ = chart_objects(spec, tmp_path)
    assert chart_helm.canonical(objects) == chart_helm.canonical(render(spec))
    job = next(o for o in objects if o["kind"] == "PyTorchJob")
    worker = job["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]
    env = {e["name"]: e for e in worker["containers"][0]["env"]}
    assert env["USER_NOTE"]["value"] == value
