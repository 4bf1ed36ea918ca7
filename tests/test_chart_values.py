"""`llmlaunch values` and the chart's generated files (values.yaml, values.schema.json, ci/), without helm.

The schema is checked here with Python's jsonschema (the same file helm reads); tests/test_chart.py
runs the real helm against it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml
from click.testing import CliRunner
from pydantic import BaseModel
from pydantic.alias_generators import to_camel

from golden_cases import cases, load_case
from launcher.cli import cli
from launcher.render import chart_files
from launcher.render.chart_values import ChartValues
from launcher.render.helm_values import _section_model, chart_values, values_file
from launcher.render.manifests import config_files
from launcher.spec.load import load_job

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "llmlaunch"
TINY = str(ROOT / "examples" / "tiny.yaml")
SCHEMA = json.loads((CHART / "values.schema.json").read_text())


def update_chart():
    spec = importlib.util.spec_from_file_location("update_chart", ROOT / "scripts" / "update-chart.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def schema_errors(values: dict) -> list[str]:
    validator = jsonschema.Draft202012Validator(SCHEMA)
    return sorted(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(values))


def test_generated_chart_files_are_up_to_date():
    stale = [str(p.relative_to(ROOT)) for p, text in chart_files.expected_files().items()
             if not p.is_file() or p.read_text() != text]
    assert stale == [], f"out of date (run python scripts/update-chart.py): {stale}"
    ci = {p.name for p in (CHART / "ci").glob("*-values.yaml")}
    assert ci == {f"{n}-values.yaml" for n in chart_files.SCENARIOS}


def test_the_update_script_reports_and_repairs_a_stale_file(tmp_path, monkeypatch):
    module = update_chart()
    chart = tmp_path / "llmlaunch"
    (chart / "ci").mkdir(parents=True)
    (chart / "ci" / "gone-values.yaml").write_text("old scenario\n")
    monkeypatch.setattr(chart_files, "CHART", chart)
    assert module.main(["--check"]) == 1 and not (chart / "values.yaml").exists()
    assert module.main([]) == 0 and module.main(["--check"]) == 0
    assert (chart / "values.schema.json").read_text() == (CHART / "values.schema.json").read_text()
    assert not (chart / "ci" / "gone-values.yaml").exists()


@pytest.mark.parametrize("name", sorted(cases()))
def test_values_of_every_example_pass_the_schema_and_carry_its_config(name):
    spec = load_case(name)
    values = chart_values(spec)
    assert schema_errors(values) == []
    assert values["name"] == spec.name and values["nodes"] == spec.cluster.nodes
    assert values["config"] == {"trainYaml": config_files(spec)["train.yaml"],
                                "dsConfigJson": config_files(spec)["ds_config.json"]}
    assert "namespace" not in values  # the release's namespace (helm install -n)


def test_values_are_the_cluster_section_in_camel_case():
    spec = load_case("multi-node")
    values = chart_values(spec)
    assert values["gpusPerNode"] == 8 and values["resources"]["shmSize"] == "64Gi"
    assert values["storage"] == {"claim": None, "size": "2Ti", "storageClass": "shared-rwx",
                                 "keep": False, "accessMode": "ReadWriteMany", "mountPath": "/workspace"}
    assert values["scheduling"]["tolerations"][0]["tolerationSeconds"] is None
    # User maps keep their keys: labels, NCCL variables, a Kubernetes affinity.
    assert values["network"]["nccl"]["NCCL_IB_HCA"] == "mlx5"
    assert values["monitoring"]["labels"] == {"release": "kube-prometheus-stack"}
    assert "requiredDuringSchedulingIgnoredDuringExecution" in values["scheduling"]["affinity"]["podAntiAffinity"]
    assert values["monitoring"]["dashboard"]["sidecarLabel"] == "grafana_dashboard"


def _field_paths(model: type[BaseModel], data: dict, prefix: tuple = ()):
    for key, info in model.model_fields.items():
        camel = to_camel(key)
        yield prefix + (camel,)
        section = _section_model(info.annotation)
        if section is not None and isinstance(data.get(camel), dict) and data[camel]:
            yield from _field_paths(section, data[camel], prefix + (camel,))


@pytest.mark.parametrize("path", [CHART / "values.yaml", *sorted((CHART / "ci").glob("*.yaml"))], ids=lambda p: p.name)
def test_every_value_has_a_comment_above_it(path):
    lines = path.read_text().splitlines()
    data = yaml.safe_load(path.read_text())
    position = 0
    for key_path in _field_paths(ChartValues, data):
        indent = "  " * (len(key_path) - 1)
        line = next(i for i in range(position, len(lines)) if lines[i].startswith(f"{indent}{key_path[-1]}:"))
        assert lines[line - 1].startswith(f"{indent}# "), f"{'.'.join(key_path)} in {path.name} has no comment"
        position = line + 1


def test_chart_defaults_are_the_tiny_example_named_after_the_release():
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    expected = chart_values(load_case("single-node"), name="")
    expected["network"]["metricsFrom"] = {}  # the chart fills it in (templates/_defaults.tpl): Helm would merge maps
    assert defaults == expected


@pytest.mark.parametrize("change, error", [
    ({"nodes": 0}, "nodes: 0 is less than the minimum of 1"),
    ({"resources": {"cpu": "lots"}}, "resources/cpu: 'lots' is not valid"),
    ({"api": "mpijob"}, "api: 'mpijob' is not one of ['pytorchjob', 'trainjob']"),
    ({"nodez": 2}, ": Additional properties are not allowed ('nodez' was unexpected)"),
    ({"name": "Big"}, "name: 'Big' does not match"),
    ({"labels": {"team": "a b"}}, "labels/team: 'a b' does not match"),
    ({"storage": {"accessMode": "ReadOnlyMany"}}, "storage/accessMode: 'ReadOnlyMany' is not one of"),
    ({"monitoring": {"interval": "soon"}}, "monitoring/interval: 'soon' does not match"),
])
def test_the_schema_rejects_bad_values_naming_them(change, error):
    values = chart_values(load_case("single-node"))
    for key, value in change.items():
        values[key] = {**values[key], **value} if isinstance(value, dict) and key in values else value
    assert any(line.startswith(error) for line in schema_errors(values)), schema_errors(values)


def run(*args):
    return CliRunner().invoke(cli, list(args))


def test_values_prints_the_documented_values_to_stdout():
    result = run("values", TINY, "--nodes", "4", "--gpus-per-node", "2", "--image", "reg.example/t:2", "-n", "ml")
    assert result.exit_code == 0, result.output
    values = yaml.safe_load(result.stdout)
    assert (values["nodes"], values["gpusPerNode"], values["image"]) == (4, 2, "reg.example/t:2")
    assert json.loads(values["config"]["dsConfigJson"])["train_batch_size"] == 8 * 4 * 2
    assert "helm install tiny ./helm/llmlaunch -n ml -f values.yaml" in result.stdout
    assert result.stdout.startswith("# Helm values for job tiny, written by `llmlaunch values ")


def test_values_writes_a_file_with_o(tmp_path):
    out = tmp_path / "v.yaml"
    result = run("values", TINY, "--set", "train.optim.lr=1e-3", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert f"wrote {out}; install it with: helm install tiny ./helm/llmlaunch -n default -f {out}" in result.stdout
    assert yaml.safe_load(yaml.safe_load(out.read_text())["config"]["trainYaml"])["optim"]["lr"] == 1e-3
    spec = load_job(TINY, ["train.optim.lr=1e-3"], resolve_paths=False)
    assert out.read_text() == values_file(spec, [TINY, "--set", "train.optim.lr=1e-3"])


@pytest.mark.parametrize("args, message", [
    (["--set", "cluster.nodes=0"], "error: cluster.nodes: Input should be greater than or equal to 1 (got 0)"),
    (["--set", "train.precision=fp16"], "error: train.precision: fp16 needs GPU pods"),
    (["--set", "train.run.global_batch_size=7", "--nodes", "2"], "error: train.run.global_batch_size:"),
    (["--set", "name=Tiny"], "error: name: must be lowercase"),
    (["--set", "cluster.storage.access_mode=ReadWriteOnce", "--set", "cluster.storage.size=1Gi", "--nodes", "2"],
     "error: cluster.storage.access_mode ReadWriteOnce cannot be shared by 2 pods"),
])
def test_bad_jobs_are_one_line_and_exit_2(args, message):
    result = run("values", TINY, *args)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(message) and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_values_help_and_schema_command():
    assert run("values", "--help").exit_code == 0
    result = run("schema", "--chart-values")
    assert result.exit_code == 0 and json.loads(result.stdout) == SCHEMA


def test_values_imports_no_tensor_library_and_no_kubernetes_client():
    code = ("import sys, json; from launcher.cli import cli\n"
            "cli.main(['values', sys.argv[1], '--nodes', '4'], standalone_mode=False)\n"
            "heavy = sorted({m.split('.')[0] for m in sys.modules} "
            "& {'torch', 'deepspeed', 'transformers', 'peft', 'kubernetes'})\n"
            "print(json.dumps(heavy), file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", code, TINY], capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True)
    assert json.loads(result.stderr.strip().splitlines()[-1]) == []
    assert "trainYaml: |" in result.stdout


def test_chart_targets_this_release_of_llmlaunch():
    import tomllib

    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2" and chart["appVersion"] == version
    assert chart_values(load_case("single-node"))["image"].endswith(f":{version}")
    assert chart["kubeVersion"] == ">=1.20.0-0 <1.35.0-0"  # 1.20: the tests' apiserver; 1.34: newest schemas checked


def test_values_header_is_comment_lines_and_a_pasteable_command():
    """A --set value with a newline must not add YAML to the values file, and the command shown must
    give the shell back exactly the arguments that produced the file."""
    note = "x\nname: injected\n'$(touch pwned)' \\"
    result = run("values", TINY, "--set", f"cluster.annotations.note={note}", "--set", "cluster.env.A=b c")
    assert result.exit_code == 0, result.output
    header = result.stdout.split("\n\n", 1)[0].splitlines()
    assert all(line.startswith("#") for line in header), header
    values = yaml.safe_load(result.stdout)
    assert values["name"] == "tiny" and values["annotations"] == {"note": note}
    shown = header[0].split("`")[1]
    echo_args = "import json, sys; print(json.dumps(sys.argv[1:]))"
    words = subprocess.run(["bash", "-c", f"python3 -c {shlex.quote(echo_args)} {shown.removeprefix('llmlaunch ')}"],
                           capture_output=True, text=True, check=True).stdout
    assert json.loads(words) == ["values", TINY, "--set", f"cluster.annotations.note={note}",
                                 "--set", "cluster.env.A=b c"]
