"""Validate rendered objects the way API servers do, without a server.

- Core kinds (and every pod template, wrapped as a Pod): kubernetes-validate's strict schemas for
  Kubernetes 1.27 to 1.34 (strict = unknown fields are errors).
- Custom resources: the CRD's own openAPIV3Schema (tests/data/crds), closed the way a structural
  schema prunes: an object schema with `properties` admits no other keys, so a field the server
  would silently drop is an error here.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import jsonschema
import kubernetes_validate

from trainer import yaml_io

CRD_DIR = Path(__file__).resolve().parent / "data" / "crds"
K8S_VERSIONS = [f"1.{minor}.0" for minor in range(27, 35)]
CRD_FILES = {
    ("kubeflow.org/v1", "PyTorchJob"): "kubeflow.org_pytorchjobs.yaml",
    ("trainer.kubeflow.org/v1alpha1", "TrainJob"): "trainer.kubeflow.org_trainjobs.yaml",
    ("monitoring.coreos.com/v1", "PodMonitor"): "monitoring.coreos.com_podmonitors.yaml",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "monitoring.coreos.com_prometheusrules.yaml",
}


def _close(schema):
    """openAPIV3Schema -> JSON schema that rejects unknown fields (what pruning would drop)."""
    if isinstance(schema, list):
        return [_close(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _close(v) for k, v in schema.items() if k not in ("description", "default")}
    if "properties" in schema and "additionalProperties" not in schema \
            and not schema.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    if schema.get("x-kubernetes-int-or-string") and "anyOf" not in schema:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if schema.get("nullable") and "type" in schema:
        out["type"] = [schema["type"], "null"]
    return out


@functools.cache
def crd_validator(api_version: str, kind: str) -> jsonschema.Validator:
    crd = yaml_io.load((CRD_DIR / CRD_FILES[(api_version, kind)]).read_text())
    version = api_version.rsplit("/", 1)[1]
    schema = next(v for v in crd["spec"]["versions"] if v["name"] == version)["schema"]["openAPIV3Schema"]
    return jsonschema.Draft202012Validator(_close(schema))


def pod_templates(obj: dict) -> list[tuple[str, dict]]:
    """Each replica's pod template of a PyTorchJob, as a standalone Pod (for schemas and checkov)."""
    if obj["kind"] != "PyTorchJob":
        return []
    pods = []
    for replica, spec in obj["spec"]["pytorchReplicaSpecs"].items():
        template = copy.deepcopy(spec["template"])
        metadata = {"name": f"{obj['metadata']['name']}-{replica.lower()}",
                    "namespace": obj["metadata"]["namespace"], **template.get("metadata", {})}
        pods.append((replica, {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template["spec"]}))
    return pods


def problems(obj: dict) -> list[str]:
    """Every schema violation of one rendered object, as readable lines (empty = valid)."""
    found = []
    key = (obj["apiVersion"], obj["kind"])
    if key in CRD_FILES:
        for error in crd_validator(*key).iter_errors(obj):
            found.append(f"{obj['kind']} CRD schema: {'.'.join(map(str, error.absolute_path))}: {error.message}")
        # The CRD leaves metadata to the server; check it as any object's ObjectMeta.
        core = [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": obj["metadata"]}]
        core += [pod for _, pod in pod_templates(obj)]
    else:
        core = [obj]
    for item in core:
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(item, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                found.append(f"{item['kind']} {item['metadata'].get('name')} (Kubernetes {version}): {e.message}")
    return found
