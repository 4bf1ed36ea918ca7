"""The chart and `llmlaunch render` cannot drift apart: for every example job (and the golden
variants), `helm template` with the values of `llmlaunch values` gives the objects render gives.

Canonical form (tests/chart_helm.py): objects sorted by apiVersion, kind, name; parsed YAML, so
formatting and key order do not count; Helm's own labels (helm.sh/chart, app.kubernetes.io/version,
managed-by Helm instead of llmlaunch) mapped to render's. Everything else must be equal, every
byte of train.yaml and ds_config.json included. The chart's extra objects (PrometheusRule and the
dashboard ConfigMap, which render does not create) are set aside and checked to be exactly those.
"""

from __future__ import annotations

import copy

import pytest
import yaml

import chart_helm
from golden_cases import cases, load_case
from launcher.k8s_types import has_control_character
from launcher.render import render
from launcher.spec import JobSpec
from launcher.values import chart_values, documented_yaml

pytestmark = pytest.mark.helm


def chart_objects(spec: JobSpec, tmp_path, values_text: str | None = None) -> tuple[list[dict], list[dict]]:
    path = tmp_path / "values.yaml"
    path.write_text(values_text or documented_yaml(chart_values(spec), ["test"]))
    objects = chart_helm.template(spec.name, "-f", str(path), namespace=spec.cluster.namespace)
    extras = [o for o in objects if chart_helm.is_chart_extra(o)]
    return [o for o in objects if not chart_helm.is_chart_extra(o)], extras


@pytest.mark.parametrize("name", sorted(cases()))
def test_helm_template_equals_llmlaunch_render(name, tmp_path):
    spec = load_case(name)
    objects, extras = chart_objects(spec, tmp_path)
    assert chart_helm.canonical(objects) == chart_helm.canonical(render(spec))
    assert sorted((o["kind"], o["metadata"]["name"]) for o in extras) == [
        ("ConfigMap", f"{spec.name}-dashboard"), ("PrometheusRule", f"{spec.name}-alerts")]


def test_parity_is_not_vacuous(tmp_path):
    """The comparison sees a one-character difference in any part of the job."""
    spec = load_case("pretrain-multinode")
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
        # A mount path takes no control characters, ':' or '..' (launcher.rules refuses them): the rest stays.
        "storage": {"size": "1Gi", "mount_path": "/data/" + ("".join(
            c for c in value if c not in "/.:" and not has_control_character(c)) or "x")},
    })
    base["train"]["data"]["text_field"] = value
    spec = JobSpec.model_validate(base)
    objects, _ = chart_objects(spec, tmp_path)
    assert chart_helm.canonical(objects) == chart_helm.canonical(render(spec))
    job = next(o for o in objects if o["kind"] == "PyTorchJob")
    env = {e["name"]: e for e in job["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]["env"]}
    assert env["USER_NOTE"]["value"] == value
