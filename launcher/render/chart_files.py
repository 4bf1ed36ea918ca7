"""The chart's generated files, and the one list of job scenarios the tests render everywhere.

Written from the Python models so they cannot drift from them (scripts/update-chart.py is the entry):

  helm/llmlaunch/values.yaml              the chart's defaults: examples/tiny.yaml, every key documented
  helm/llmlaunch/values.schema.json       JSON schema of the values (launcher/render/chart_values.py)
  helm/llmlaunch/templates/_defaults.tpl  constants and defaults the chart takes from the Python source
  helm/llmlaunch/ci/<scenario>-values.yaml  each scenario below, as `llmlaunch values` writes it

The same SCENARIOS are the golden manifests (tests/golden/<scenario>.yaml, from `llmlaunch render`) and
the chart's cases (helm lint, template, parity with render, install): one list, so a job shape the chart
is tested with is also snapshotted, and the reverse.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import NamedTuple

from launcher.render.chart_values import defaults_template, values_schema_text
from launcher.render.helm_values import chart_defaults, chart_values, documented_yaml, shell_command
from launcher.spec.job_spec import JobSpec
from launcher.spec.load import load_job
from llmlaunch_data import data_path

CHART = data_path("helm") / "llmlaunch"
EXAMPLES = data_path("examples")

# No image is built for these; any reference does (the cluster commands require one: there is no default).
TEST_IMAGE = "registry.example.com/ml/llmlaunch-trainer:0.1.0"
MONITORING_OFF = {"monitoring": {"podMonitor": False, "prometheusRule": {"enabled": False},
                                 "dashboard": {"enabled": False}}}


class Scenario(NamedTuple):
    example: str  # examples/<example>.yaml
    overrides: list[str]  # --set of the job file
    chart_only: dict = {}  # chart values with no job-file key (the chart's alert rules and dashboard)


SCENARIOS: dict[str, Scenario] = {
    # every example as written (tests check that each examples/*.yaml is one of these)
    "single-node": Scenario("tiny", []),
    "multi-node": Scenario("pretrain-multinode", [f"cluster.image={TEST_IMAGE}"]),
    "tiny-4nodes": Scenario("tiny", ["cluster.nodes=4"]),
    "lora": Scenario("tiny", [
        "cluster.nodes=2", "cluster.gpus_per_node=1", "cluster.storage.size=100Gi", "train.method.kind=lora",
        "train.model.pretrained=models/llama-3.2-1b", "train.model.config=null", "train.precision=bf16",
    ]),
    "trainjob": Scenario("tiny", ["cluster.api=trainjob", "cluster.nodes=2", "cluster.storage.size=10Gi"]),
    "tiny-trainjob": Scenario("tiny", ["cluster.api=trainjob", "cluster.nodes=2", "cluster.storage.size=10Gi",
                                       "cluster.storage.keep=true"]),
    # every pod setting a Trainer v2.3 runtime patch carries (tests/test_trainjob.py compares it with a PyTorchJob's)
    "tiny-trainjob-full": Scenario("tiny", [
        "cluster.api=trainjob", "cluster.nodes=2", "cluster.gpus_per_node=2", "cluster.storage.claim=shared",
        "cluster.service_account=trainer", "cluster.image_pull_secrets=[regcred]", "cluster.env.FOO=bar",
        "cluster.secrets=[{env: HF_TOKEN, secret: hf, key: token}]", "cluster.network.nccl.NCCL_DEBUG=WARN",
        "cluster.network.rdma={count: 1}", "cluster.security.add_capabilities=[SYS_PTRACE]",
        "cluster.scheduling.node_selector.pool=gpu", "cluster.scheduling.tolerations=[{key: gpu, operator: Exists}]",
        "cluster.scheduling.affinity={nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: "
        "{nodeSelectorTerms: [{matchExpressions: [{key: zone, operator: In, values: [a]}]}]}}}",
        "cluster.termination_grace_period_seconds=300", "cluster.run_policy.active_deadline_seconds=86400",
        "cluster.annotations={example.com/team: ml}", "cluster.labels={team: ml}", "cluster.scheduling.queue=team-a",
    ]),
    "elastic": Scenario("tiny", ["cluster.nodes=2", "cluster.elastic={min_nodes: 1, max_nodes: 3}"]),
    "tiny-locked-down": Scenario("tiny", [
        "cluster.network.block_metadata_egress=true",
        "cluster.network.metrics_from={namespace_selector: {team: sre}, pod_selector: {}}",
    ]),
    "monitoring-off": Scenario("tiny", ["train.metrics.enabled=false"], MONITORING_OFF),
    "existing-pvc": Scenario("tiny", ["cluster.nodes=2", "cluster.storage.claim=shared-data"]),
    # a PodDisruptionBudget: down to min_nodes for an elastic PyTorchJob, every node of a TrainJob (JobSet's label)
    "elastic-disruption-budget": Scenario("tiny", ["cluster.nodes=2", "cluster.elastic={min_nodes: 1, max_nodes: 3}",
                                                   "cluster.disruption_budget=true"]),
    "trainjob-disruption-budget": Scenario("tiny", ["cluster.api=trainjob", "cluster.nodes=2",
                                                    "cluster.disruption_budget=true"]),
}


def job_path(name: str) -> Path:
    return EXAMPLES / f"{SCENARIOS[name].example}.yaml"


def load_scenario(name: str) -> JobSpec:
    """The scenario's job as the cluster commands read it (paths as written: they are pod paths)."""
    return load_job(job_path(name), SCENARIOS[name].overrides, resolve_paths=False)


def _merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def scenario_values(name: str) -> dict:
    """The chart values of a scenario: `llmlaunch values` of its job, with its chart-only settings."""
    return _merge(chart_values(load_scenario(name)), SCENARIOS[name].chart_only)


def expected_files() -> dict[Path, str]:
    tiny = load_job(EXAMPLES / "tiny.yaml", resolve_paths=False)
    files = {
        CHART / "values.yaml": documented_yaml(chart_defaults(tiny), [
            "Default values of the llmlaunch chart: the CPU demo examples/tiny.yaml, named after the release.",
            "Write the values of your own job with `llmlaunch values JOB.yaml [--nodes N ...] -o values.yaml`",
            "and install with `helm install NAME ./helm/llmlaunch -n NAMESPACE -f values.yaml`.",
            "Keys mirror the job file's `cluster` section in camelCase; config.* holds the resolved train.yaml",
            "and ds_config.json. Generated by scripts/update-chart.py: edit the models, not this file.",
        ]),
        CHART / "values.schema.json": values_schema_text(),
        CHART / "templates" / "_defaults.tpl": defaults_template(),
    }
    for name, scenario in SCENARIOS.items():
        words = ["llmlaunch", "values", f"examples/{scenario.example}.yaml"]
        command = shell_command([*words, *(word for s in scenario.overrides for word in ("--set", s))])
        header = [f"CI scenario {name}: {command}" + (" + chart-only settings" if scenario.chart_only else "") + ".",
                  "Generated by scripts/update-chart.py."]
        files[CHART / "ci" / f"{name}-values.yaml"] = documented_yaml(scenario_values(name), header)
    return files


def update(check: bool) -> list[Path]:
    """Write what is out of date (check: only report it) and remove scenario files no scenario makes.
    Returns the paths that were (or, with check, would be) written or removed."""
    stale = []
    expected = expected_files()
    for path, text in expected.items():
        if not path.is_file() or path.read_text() != text:
            stale.append(path)
            if not check:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
    for path in sorted(set((CHART / "ci").glob("*-values.yaml")) - set(expected)):
        stale.append(path)
        if not check:
            path.unlink()
    return stale
