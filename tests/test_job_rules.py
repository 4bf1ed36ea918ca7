"""One set of rules for every command (launcher/spec/rules.py), and the input each must refuse with one
line and exit code 2: control characters, out-of-range integers, alias bombs, non-JSON YAML values,
mount paths that hide system directories, labels that would take over llmlaunch's own."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from chart_helm import helm
from launcher.cli import cli
from trainjobs import REPO

TINY = str(REPO / "examples" / "tiny.yaml")
CHART = REPO / "helm" / "llmlaunch"


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def sets(**values) -> list[str]:
    """--set flags whose values are JSON (a YAML string with escapes), so "\\n" arrives as a newline."""
    return [arg for key, value in values.items() for arg in ("--set", f"{key.replace('__', '.')}={json.dumps(value)}")]


def assert_refused(result, fragment: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert fragment in lines[0], (fragment, lines[0])


# Each was accepted by `validate` and refused by `render` (or `values`) before the rules lived in one module.
RENDER_ONLY_RULES = [
    (["--set", "name=1abc"], "name: must be lowercase letters, digits and '-', starting with a letter"),
    (["--set", "train.metrics.port=23456"], "train.metrics.port: 23456 is the PyTorchJob rendezvous port"),
    (["--set", "cluster.api=trainjob", "--set", "train.metrics.port=29400"], "29400 is the TrainJob rendezvous port"),
    (["--set", "train.run.global_batch_size=12"],
     "train.run.global_batch_size: run.global_batch_size 12 does not divide"),
    (["--set", "cluster.elastic={min_nodes: 1, max_nodes: 2}", "--set", "train.run.global_batch_size=8"],
     "cannot be fixed with cluster.elastic"),
    (["--set", "train.precision=fp16"], "train.precision: fp16 needs GPU pods"),
    (["--set", "train.precision=bf16"], "train.precision: bf16 needs GPU pods"),
]


@pytest.mark.parametrize("args, message", RENDER_ONLY_RULES)
@pytest.mark.parametrize("command", ["validate", "render", "values"])
def test_validate_refuses_exactly_what_render_and_values_refuse(command, args, message):
    assert_refused(run(command, TINY, *args), message)


@pytest.mark.parametrize("args, message", RENDER_ONLY_RULES[:3])
def test_train_applies_the_same_job_rules_before_starting_anything(tmp_path, args, message):
    assert_refused(run("train", TINY, "--output-dir", str(tmp_path / "out"), *args), message)
    assert not (tmp_path / "out").exists()


def test_train_keeps_its_topology_from_the_machine_not_the_cluster_section(tmp_path, monkeypatch):
    """A cluster section for CPU pods does not forbid bf16 on a local GPU: only the cluster commands
    check precision against cluster.gpus_per_node (trainer.training.preflight checks the machine)."""
    from launcher.spec.load import load_job

    spec = load_job(TINY, ["train.precision=bf16"], local=True)
    assert spec.train.precision == "bf16"
    assert_refused(run("validate", TINY, "--set", "train.precision=bf16"), "CPU pods")


CONTROL_CHARACTERS = [
    ({"name": "tiny\n"}, "name: "),
    ({"cluster__namespace": "default\n"}, "cluster.namespace: must be a DNS-1123 label"),
    ({"cluster__labels": {"team\n": "a"}}, "cluster.labels: key 'team\\n'"),
    ({"cluster__labels": {"team": "a\n"}}, "cluster.labels: value of 'team'"),
    ({"cluster__annotations": {"x\n": "a"}}, "cluster.annotations: key 'x\\n'"),
    ({"cluster__scheduling__node_selector": {"gpu": "a100\n"}}, "cluster.scheduling.node_selector: value of 'gpu'"),
    ({"cluster__scheduling__queue": "q\n"}, "cluster.scheduling.queue: must be a valid label value"),
    ({"cluster__env": {"FOO\n": "1"}}, "cluster.env: 'FOO\\n' is not an environment variable name"),
    ({"cluster__secrets": [{"env": "HF_TOKEN\n", "secret": "hf", "key": "token"}]}, "cluster.secrets.0.env"),
    ({"cluster__network__nccl": {"NCCL_DEBUG\n": "WARN"}}, "cluster.network.nccl: 'NCCL_DEBUG\\n' is not an NCCL_*"),
    ({"cluster__resources__memory": "16Gi\n"}, "cluster.resources.memory: not a Kubernetes quantity"),
    ({"cluster__resources__gpu_resource": "nvidia.com/gpu\n"}, "cluster.resources.gpu_resource: key"),
    ({"cluster__security__add_capabilities": ["IPC_LOCK\n"]},
     "cluster.security.add_capabilities.0: not a Linux capability"),
    ({"cluster__monitoring__interval": "15s\n"}, "cluster.monitoring.interval: not a Prometheus duration"),
    ({"cluster__image_pull_secrets": ["regcred\n"]}, "cluster.image_pull_secrets.0: must be a DNS-1123 name"),
    ({"cluster__image": "trainer:1\n"}, "cluster.image: an image reference has no whitespace"),
    ({"cluster__image": "trainer:1\x00"}, "cluster.image: an image reference has no whitespace or control"),
    ({"cluster__image": "trainer:1\x1b[2J"}, "cluster.image: an image reference has no whitespace or control"),
]


@pytest.mark.parametrize("values, message", CONTROL_CHARACTERS)
def test_control_characters_are_refused_in_one_line(values, message):
    assert_refused(run("validate", TINY, *sets(**values)), message)


@pytest.mark.parametrize("key, limit", [
    ("cluster.nodes", 2**31 - 1), ("cluster.gpus_per_node", 2**31 - 1), ("cluster.run_policy.backoff_limit", 2**31 - 1),
    ("cluster.run_policy.ttl_seconds_after_finished", 2**31 - 1), ("cluster.network.rdma.count", 2**31 - 1),
    ("cluster.termination_grace_period_seconds", 2**63 - 1), ("cluster.run_policy.active_deadline_seconds", 2**63 - 1),
    ("cluster.security.run_as_user", 2**63 - 1), ("cluster.security.fs_group", 2**63 - 1),
])
def test_integers_beyond_the_api_fields_are_refused(key, limit):
    assert_refused(run("validate", TINY, "--set", f"{key}={limit + 1}"),
                   f"{key}: Input should be less than or equal to {limit}")


def test_integers_of_any_length_are_one_line(tmp_path):
    digits = "9" * 5000
    job = tmp_path / "job.yaml"
    job.write_text(Path(TINY).read_text().replace("nodes: 1", f"nodes: {digits}"))
    assert_refused(run("validate", str(job)), "job.yaml: a value is out of range")
    assert_refused(run("validate", TINY, "--set", f"cluster.nodes={digits}"), "--set cluster.nodes: value out of range")


def test_aliases_of_aliases_fail_fast(tmp_path):
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]  # 10^10 strings
    job = tmp_path / "bomb.yaml"
    job.write_text("\n".join(lines) + "\nname: t\ntrain: {model: {config: *a9}}\n")
    start = time.monotonic()
    assert_refused(run("validate", str(job)), "more than 100000 values once YAML aliases are expanded")
    assert time.monotonic() - start < 5


def test_a_self_referencing_alias_is_refused(tmp_path):
    job = tmp_path / "loop.yaml"
    job.write_text("name: t\ntrain: &t {model: *t}\n")
    assert_refused(run("validate", str(job)), "more than 100000 values")


@pytest.mark.parametrize("yaml_value, message", [
    ("2024-01-01", "cluster.scheduling.affinity.nodeAffinity.since: a date is not a job file value"),
    ("!!binary aGVsbG8=", "cluster.scheduling.affinity.nodeAffinity.since: a binary value"),
    ("!!set {a, b}", "cluster.scheduling.affinity.nodeAffinity.since: a set"),
    (".nan", "cluster.scheduling.affinity.nodeAffinity.since: nan is not a finite number"),
    ("{2024-01-01: x}", "cluster.scheduling.affinity.nodeAffinity.since: key datetime.date(2024, 1, 1) is a date"),
])
def test_non_json_yaml_values_are_one_line_anywhere(tmp_path, yaml_value, message):
    job = tmp_path / "job.yaml"
    job.write_text(Path(TINY).read_text().replace(
        "cluster:\n", f"cluster:\n  scheduling:\n    affinity:\n      nodeAffinity:\n        since: {yaml_value}\n"))
    for command in ("validate", "render"):
        assert_refused(run(command, str(job)), message)


def test_non_json_values_from_set_are_one_line():
    assert_refused(run("validate", TINY, "--set", "cluster.annotations.since=2024-01-01"),
                   "cluster.annotations.since: a date is not a job file value")


@pytest.mark.parametrize("path, message", [
    ("workspace", "must be an absolute path"),
    ("/data:ro", "must be an absolute path without control characters or ':'"),
    ("/workspace/", "must be normalised (write '/workspace')"),
    ("/workspace/../etc", "must be normalised (write '/etc')"),
    ("//workspace", "must be normalised"),
    ("/", "would hide the container's /bin"),
    ("/usr", "would hide the container's /usr"),
    ("/etc", "would hide the container's /etc"),
    ("/etc/llmlaunch", "lies under /etc"),
    ("/proc/self", "lies under /proc"),
    ("/dev/shm", "lies under /dev"),
    ("/tmp", "would hide the container's /tmp"),
])
def test_mount_path_is_a_directory_of_its_own(path, message):
    assert_refused(run("validate", TINY, *sets(cluster__storage__mount_path=path)),
                   f"cluster.storage.mount_path: {message}")


@pytest.mark.parametrize("path", ["/workspace", "/data/llm", "/var/lib/train", "/tmp/data"])
def test_ordinary_mount_paths_are_accepted(path):
    assert run("validate", TINY, *sets(cluster__storage__mount_path=path)).exit_code == 0


@pytest.mark.parametrize("key", ["app.kubernetes.io/managed-by", "app.kubernetes.io/instance", "helm.sh/chart",
                                 "training.kubeflow.org/job-name", "jobset.sigs.k8s.io/jobset-name",
                                 "kueue.x-k8s.io/queue-name"])
@pytest.mark.parametrize("field", ["cluster.labels", "cluster.monitoring.labels"])
def test_no_labels_field_overrides_the_ownership_labels(field, key):
    assert_refused(run("render", TINY, "--set", f"{field}={{{key}: x}}"), f"{field}: key {key!r} is set by llmlaunch")


def test_other_kueue_labels_stay_allowed():
    assert run("validate", TINY, "--set", "cluster.labels={kueue.x-k8s.io/priority-class: high}").exit_code == 0


@pytest.mark.parametrize("values", [
    ["--set", "labels.app\\.kubernetes\\.io/managed-by=x"],
    ["--set", "monitoring.labels.app\\.kubernetes\\.io/instance=x"],
    ["--set", "monitoring.prometheusRule.labels.app\\.kubernetes\\.io/name=x"],
    ["--set", "monitoring.dashboard.labels.app\\.kubernetes\\.io/component=x"],
    ["--set", "monitoring.dashboard.sidecarLabel=app.kubernetes.io/name"],
])
@pytest.mark.helm
def test_the_chart_refuses_the_same_labels(values):
    result = helm("template", "demo", str(CHART), *values, check=False)
    assert result.returncode != 0, result.stderr
    assert "values don't meet the specifications of the schema" in result.stderr, result.stderr


def test_set_is_on_exactly_the_commands_the_readme_names():
    """README: `--set` on validate, train, render, values, submit and estimate (the commands that read a job file)."""
    readme = (REPO / "README.md").read_text()
    line = next(line for line in readme.split("\n- ") if line.startswith("`--set key.path=value`"))
    named = {"validate", "train", "render", "values", "submit", "estimate"}
    assert all(f"`{command}`" in line for command in named)
    with_set = {name for name, command in cli.commands.items() if any(p.name == "overrides" for p in command.params)}
    assert with_set == named
