"""The Helm chart's values, as a pydantic model: the job file's `cluster` section in Helm's camelCase,
plus the job name, the two config files and the chart's own monitoring objects.

The model is built from ClusterSpec's fields (same types, same descriptions), so one definition
feeds `llmlaunch schema`, the chart's values.schema.json and the comments in values.yaml. It is
never used to validate a job (JobSpec does that); it describes what `llmlaunch values` writes.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, Field, create_model
from pydantic.alias_generators import to_camel

from launcher.spec.cluster_sections import MetricsFrom, Monitoring, Section
from launcher.spec.cluster_spec import ClusterSpec
from launcher.spec.k8s_types import Annotations, DnsLabel, ExtraLabelKey, ExtraLabels

# The namespace is the release's (helm install -n), as Helm charts do; everything else carries over.
NOT_VALUES = {"namespace"}
NAME_PATTERN = r"^([a-z]([-a-z0-9]*[a-z0-9])?)?$"


class ConfigFiles(Section):
    """The ConfigMap's two files, computed by `llmlaunch values` from the job's `train` section: the
    chart cannot compute them (DeepSpeed presets, batch sizes for nodes x processes). Regenerate
    them whenever nodes, gpusPerNode or elastic change; the chart refuses a mismatch."""

    train_yaml: str = Field(..., min_length=1, description="The resolved train.yaml the pods run (TrainConfig).")
    ds_config_json: str = Field(..., min_length=2, description="The resolved ds_config.json for this topology.")


class PrometheusRuleValues(Section):
    """Alert rules of monitoring/alerts/llmlaunch-rules.yaml as a PrometheusRule (prometheus-operator).
    They cover every llmlaunch job the Prometheus scrapes: one release per cluster is enough."""

    enabled: bool = Field(True, description="Create the PrometheusRule.")
    labels: ExtraLabels = Field(default_factory=dict, description="Extra labels your Prometheus selects rules by.")


class DashboardValues(Section):
    """monitoring/dashboards/llmlaunch.json in a ConfigMap that Grafana's dashboard sidecar loads.
    The dashboard shows every job (namespace and job variables): one release per cluster is enough."""

    enabled: bool = Field(True, description="Create the dashboard ConfigMap.")
    sidecar_label: ExtraLabelKey = Field(
        "grafana_dashboard", description="Label the Grafana sidecar watches (kube-prometheus-stack: grafana_dashboard)."
    )
    sidecar_label_value: str = Field("1", description="Value of that label.")
    labels: ExtraLabels = Field(default_factory=dict, description="Extra labels on the ConfigMap.")
    annotations: Annotations = Field(
        default_factory=dict, description="Extra annotations, e.g. grafana_folder: Training (sidecar folder)."
    )


class RbacSubject(Section):
    kind: Literal["User", "Group", "ServiceAccount"] = Field(..., description="Who gets the Role.")
    name: str = Field(..., min_length=1, description="User, group or service account name.")
    namespace: DnsLabel | None = Field(None, description="ServiceAccount only: its namespace (default: the release's).")


class RbacValues(Section):
    """The Role a user of the llmlaunch CLI needs in the release's namespace (rbac/role.yaml of the chart),
    and what `llmlaunch list -A` adds cluster-wide (rbac/clusterrole.yaml). Off by default: installing
    RBAC needs more rights than running a job."""

    create: bool = Field(False, description="Create the Role (and a RoleBinding to subjects).")
    subjects: list[RbacSubject] = Field(
        default_factory=list, description="Users, groups or service accounts bound to it."
    )
    all_namespaces: bool = Field(False, description="Also a ClusterRole (+ binding) to list jobs in every namespace.")


class ChartMonitoring(Monitoring):
    """Prometheus scraping of the metrics port, alert rules and the Grafana dashboard."""

    force_operator_kinds: bool = Field(
        False, description="Render PodMonitor and PrometheusRule even when the cluster does not serve "
        "monitoring.coreos.com/v1 (helm template without a cluster; the operator installed alongside)."
    )
    prometheus_rule: PrometheusRuleValues = Field(default_factory=PrometheusRuleValues)
    dashboard: DashboardValues = Field(default_factory=DashboardValues)


def _build_model() -> type[BaseModel]:
    fields: dict[str, Any] = {
        "name": (str, Field("", max_length=40, pattern=NAME_PATTERN,
                            description="Job name, prefix of every object's name; empty = the release name.")),
    }
    for key, info in ClusterSpec.model_fields.items():
        if key not in NOT_VALUES:
            fields[key] = (info.annotation, info)
    fields["monitoring"] = (ChartMonitoring, Field(default_factory=ChartMonitoring))
    fields["config"] = (ConfigFiles, Field(...))
    fields["rbac"] = (RbacValues, Field(default_factory=RbacValues))
    return create_model("ChartValues", __base__=Section, __doc__="Values of the llmlaunch chart.", **fields)


ChartValues = _build_model()


def camel_dump(model: BaseModel) -> dict[str, Any]:
    """A model as values: field names in camelCase; user maps (labels, env, affinity) keep their keys."""
    out = {}
    for key in type(model).model_fields:
        out[to_camel(key)] = _camel_value(getattr(model, key))
    return out


def _camel_value(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return camel_dump(value)
    if isinstance(value, (list, tuple)):
        return [_camel_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _camel_value(v) for k, v in value.items()}
    return value


def _camel_schema(node: Any) -> Any:
    """Rename the properties of every model object in a JSON schema; drop pydantic's titles."""
    if isinstance(node, list):
        return [_camel_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key == "title" and isinstance(value, str):
            continue
        if key == "properties":
            out[key] = {to_camel(name): _camel_schema(prop) for name, prop in value.items()}
        elif key == "required":
            out[key] = [to_camel(name) for name in value]
        elif key == "default":
            out[key] = value  # only scalars, lists of scalars and empty maps have defaults here
        else:
            out[key] = _camel_schema(value)
    return out


def values_schema() -> dict[str, Any]:
    """values.schema.json: Helm checks the merged values against it before rendering anything."""
    schema = _camel_schema(ChartValues.model_json_schema())
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema",
              "title": "Values of the llmlaunch Helm chart (generated by scripts/update-chart.py)", **schema}
    # Helm passes `global` to every chart; a parent chart may set it.
    schema["properties"]["global"] = {"type": "object", "description": "Helm's global values (unused)."}
    return schema


def values_schema_text() -> str:
    return json.dumps(values_schema(), indent=2, sort_keys=True) + "\n"


def chart_constants() -> dict[str, Any]:
    """What the chart's templates must agree on with `llmlaunch render`, each taken from where Python defines it."""
    from launcher.render import pod_values
    from launcher.spec import names, torchrun
    from launcher.spec.cluster_sections import Elastic
    from launcher.spec.job_spec import MAX_NAME
    from launcher.spec.torchrun import TRAIN_CONFIG_IN_POD
    from trainer.config.train_config import RunConfig

    return {
        "pytorchjobPort": torchrun.PYTORCHJOB_PORT, "trainjobPort": torchrun.TRAINJOB_PORT,
        "maxNameLength": MAX_NAME, "configDir": pod_values.CONFIG_DIR, "configPath": TRAIN_CONFIG_IN_POD,
        "defaultMaxRestarts": RunConfig.model_fields["max_restarts"].default,
        "defaultElasticMaxRestarts": Elastic.model_fields["max_restarts"].default,
        "pytorchjobContainer": "pytorch", "trainjobContainer": names.TRAINJOB_REPLICATED_JOB,
    }


def defaults_template() -> str:
    """templates/_defaults.tpl: the defaults and constants the chart applies itself, written from the Python
    models and modules (not by hand), so that the chart and `llmlaunch render` cannot drift apart."""
    metrics_from = json.dumps(camel_dump(MetricsFrom()), sort_keys=True)
    constants = "".join(f'{{{{- define "llmlaunch.const.{key}" -}}}}{value}{{{{- end -}}}}\n'
                        for key, value in chart_constants().items())
    return (
        "{{/* Generated by scripts/update-chart.py from launcher/ and trainer/config/train_config.py: "
        "edit those, not this file. */}}\n\n"
        "{{/* network.metricsFrom's selectors where the values leave one out "
        "(kube-prometheus-stack's Prometheus). */}}\n"
        '{{- define "llmlaunch.defaultMetricsFrom" -}}\n'
        f"{metrics_from}\n"
        "{{- end -}}\n\n"
        "{{/* Constants shared with the Python renderer (launcher.render.chart_values.chart_constants). */}}\n"
        f"{constants}"
    )
