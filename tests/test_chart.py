"""The chart with the real helm binary: lint, every CI scenario rendered and schema-checked, the
monitoring objects (from monitoring/, behind switches and the operator's API), values refused at
install time, and the packaged archive."""

from __future__ import annotations

import json
import tarfile

import pytest
import yaml

import chart_helm
import schema_check
from chart_helm import CHART, ROOT, helm, stderr_of, template
from launcher.render.chart_files import load_scenario

pytestmark = pytest.mark.helm
CI = sorted(p.name.removesuffix("-values.yaml") for p in (CHART / "ci").glob("*-values.yaml"))
RULES = ROOT / "monitoring" / "alerts" / "llmlaunch-rules.yaml"
DASHBOARD = ROOT / "monitoring" / "dashboards" / "llmlaunch.json"


def ci_values(name: str) -> str:
    return str(CHART / "ci" / f"{name}-values.yaml")


def by_kind(objects: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for obj in objects:
        out.setdefault(obj["kind"], []).append(obj)
    return out


def test_lint_strict_with_the_defaults_and_every_scenario():
    for args in [[], *(["-f", ci_values(name)] for name in CI)]:
        result = helm("lint", "--strict", str(CHART), *args)
        assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout, result.stdout
        assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout


def test_every_ci_scenario_is_covered():
    assert {"single-node", "multi-node", "lora", "trainjob", "monitoring-off", "existing-pvc"} <= set(CI)


@pytest.mark.parametrize("name", CI)
def test_scenario_objects_pass_the_kubernetes_and_crd_schemas(name):
    """(Their equality with `llmlaunch render`: tests/test_chart_parity.py, for the same scenarios.)"""
    objects = template("run", "-f", ci_values(name), namespace=load_scenario(name).cluster.namespace)
    for obj in objects:
        assert schema_check.problems(obj) == [], f"{name}: {obj['kind']} {obj['metadata']['name']}"


def test_scenarios_differ_where_they_should():
    kinds = {name: by_kind(template("run", "-f", ci_values(name))) for name in CI}
    master = kinds["single-node"]["PyTorchJob"][0]["spec"]["pytorchReplicaSpecs"]
    assert list(master) == ["Master"]
    multi = kinds["multi-node"]["PyTorchJob"][0]["spec"]["pytorchReplicaSpecs"]
    assert multi["Worker"]["replicas"] == 3
    limits = multi["Worker"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == 8 and limits["rdma/ib"] == 1
    assert kinds["multi-node"]["PersistentVolumeClaim"][0]["spec"]["storageClassName"] == "shared-rwx"
    lora_config = kinds["lora"]["ConfigMap"][0]["data"]
    assert yaml.safe_load(lora_config["train.yaml"])["method"]["kind"] == "lora"
    assert json.loads(lora_config["ds_config.json"])["bf16"] == {"enabled": True}
    train_job = kinds["trainjob"]["TrainJob"][0]
    assert train_job["spec"]["trainer"]["numNodes"] == 2 and "PyTorchJob" not in kinds["trainjob"]
    assert kinds["trainjob"]["PodMonitor"][0]["spec"]["podMetricsEndpoints"][0]["portNumber"] == 9400
    elastic = kinds["elastic"]["PyTorchJob"][0]["spec"]
    assert elastic["elasticPolicy"]["maxReplicas"] == 3 and list(elastic["pytorchReplicaSpecs"]) == ["Worker"]
    off = kinds["monitoring-off"]
    assert set(off) == {"ConfigMap", "NetworkPolicy", "PyTorchJob"} and len(off["ConfigMap"]) == 1
    pod = off["PyTorchJob"][0]["spec"]["pytorchReplicaSpecs"]["Master"]["template"]
    assert "annotations" not in pod["metadata"]
    assert [p["name"] for p in pod["spec"]["containers"][0]["ports"]] == ["pytorchjob-port"]
    existing = kinds["existing-pvc"]
    assert "PersistentVolumeClaim" not in existing
    volumes = existing["PyTorchJob"][0]["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["volumes"]
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "shared-data"}} in volumes


def test_operator_kinds_only_where_the_cluster_serves_them_or_when_forced():
    plain = by_kind(template("run", operator=False))
    assert "PodMonitor" not in plain and "PrometheusRule" not in plain
    assert [c["metadata"]["name"] for c in plain["ConfigMap"]] == ["run-config", "run-dashboard"]
    forced = by_kind(template("run", "--set", "monitoring.forceOperatorKinds=true", operator=False))
    assert len(forced["PodMonitor"]) == 1 and len(forced["PrometheusRule"]) == 1
    switched_off = by_kind(template("run", "--set",
                                    "monitoring.podMonitor=false,monitoring.prometheusRule.enabled=false,"
                                    "monitoring.dashboard.enabled=false"))
    assert set(switched_off) == {"ConfigMap", "NetworkPolicy", "PyTorchJob"}


def test_alert_rules_and_dashboard_are_monitorings_files():
    """One source of truth: the chart links to monitoring/ and ships its content unchanged."""
    for link, target in [(CHART / "alerts" / RULES.name, RULES), (CHART / "dashboards" / DASHBOARD.name, DASHBOARD)]:
        assert link.is_symlink() and link.resolve() == target.resolve()
    objects = by_kind(template("run", "--set", "monitoring.prometheusRule.labels.release=prom,"
                                      "monitoring.dashboard.annotations.grafana_folder=Training"))
    rule = objects["PrometheusRule"][0]
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]
    assert rule["metadata"]["labels"]["release"] == "prom" and rule["metadata"]["name"] == "run-alerts"
    dashboard = next(c for c in objects["ConfigMap"] if c["metadata"]["name"] == "run-dashboard")
    assert dashboard["data"] == {"llmlaunch.json": DASHBOARD.read_text()}
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["metadata"]["annotations"] == {"grafana_folder": "Training"}
    relabelled = by_kind(template("run", "--set", "monitoring.dashboard.sidecarLabel=team.example/dashboards,"
                                          "monitoring.dashboard.sidecarLabelValue=yes"))
    labels = next(c for c in relabelled["ConfigMap"] if c["metadata"]["name"] == "run-dashboard")["metadata"]["labels"]
    assert labels["team.example/dashboards"] == "yes" and "grafana_dashboard" not in labels


def test_the_disruption_budget_is_policy_v1_unless_the_cluster_is_older_than_1_21():
    """The same object in the version the cluster serves: a cluster's discovery lists policy/v1/PodDisruptionBudget
    from 1.21 on; without a cluster (helm template), the Kubernetes version decides. The tests' apiserver is 1.20:
    tests/test_chart_server_dry_run.py sends the policy/v1beta1 one there."""
    def pdb(*args: str, scenario: str = "elastic-disruption-budget") -> dict:
        [obj] = by_kind(template("run", "-f", ci_values(scenario), *args))["PodDisruptionBudget"]
        return obj

    current = pdb()
    assert current["apiVersion"] == "policy/v1"
    assert current["spec"] == {"minAvailable": 1, "selector": {"matchLabels": {
        "app.kubernetes.io/component": "trainer", "app.kubernetes.io/instance": "tiny",
        "app.kubernetes.io/name": "llmlaunch"}}}
    old = pdb("--kube-version", "1.20.2")
    assert old["apiVersion"] == "policy/v1beta1" and {**old, "apiVersion": "policy/v1"} == current
    assert pdb("--kube-version", "1.20.2", "--api-versions", "policy/v1/PodDisruptionBudget") == current
    assert pdb("--kube-version", "1.21.0")["apiVersion"] == "policy/v1"
    assert pdb(scenario="trainjob-disruption-budget")["spec"] == {  # every node; JobSet's label on the pods
        "minAvailable": 2, "selector": {"matchLabels": {"jobset.sigs.k8s.io/jobset-name": "tiny"}}}
    off = template("run", "-f", ci_values("elastic-disruption-budget"), "--set", "disruptionBudget=false")
    assert "PodDisruptionBudget" not in by_kind(off)


@pytest.mark.parametrize("args, message", [
    (["--set", "nodes=0"], "- at '/nodes': minimum: got 0, want 1"),
    (["--set", "resources.memory=lots"], "- at '/resources/memory': 'anyOf' failed"),
    (["--set", "api=mpijob"], "- at '/api': value must be one of 'pytorchjob', 'trainjob'"),
    (["--set", "nodez=2"], "- at '': additional properties 'nodez' not allowed"),
    (["--set", "storage.accessMode=ReadOnlyMany"], "- at '/storage/accessMode': value must be one of"),
    (["--set", "labels.team=a b"], "- at '/labels/team': 'a b' does not match pattern"),
    (["--set", "monitoring.dashboard.enabled=yes"], "- at '/monitoring/dashboard/enabled': got string, want boolean"),
    # Rules across values, checked by the templates (templates/_validate.tpl):
    (["--set", "nodes=2"],
     "config.dsConfigJson was computed for a world size of 1 (train_batch_size 8), but nodes 2 x 1"),
    (["-f", ci_values("multi-node"), "--set", "gpusPerNode=4"],
     "config.dsConfigJson was computed for a world size of 32 (train_batch_size 1024), but nodes 4 x 4 processes"),
    (["-f", ci_values("lora"), "--set", "gpusPerNode=0"],
     "config.dsConfigJson enables bf16, which CPU pods (gpusPerNode 0)"),
    (["-f", ci_values("elastic"), "--set", "nodes=5"],
     "nodes 5 must lie within elastic.minNodes 1 and elastic.maxNodes 3"),
    (["-f", ci_values("existing-pvc"), "--set", "storage.accessMode=ReadWriteOnce"],
     "storage.accessMode ReadWriteOnce cannot be shared by 2 pods on different nodes"),
    (["--set", "storage.claim=data,storage.size=1Gi"], "storage: set storage.claim (an existing PVC) or storage.size"),
    (["-f", ci_values("existing-pvc"), "--set", "storage.keep=true"], "storage.keep only applies to a created PVC"),
    (["-f", ci_values("trainjob"), "--set", "scheduling.priorityClass=high"],
     "scheduling.priorityClass cannot be set with api trainjob"),
    (["--set", "name=Job_1"], "- at '/name': 'Job_1' does not match pattern"),
    (["--set", "image=null"], "image is not set: build the trainer image from the repository's Dockerfile, push it"),
])
def test_bad_values_fail_at_install_time_naming_the_value(args, message):
    result = helm("template", "run", str(CHART), *args, check=False)
    assert result.returncode != 0
    assert message in stderr_of(result), stderr_of(result)


def test_a_bad_release_name_is_refused_with_the_fix():
    result = helm("template", "7up", str(CHART), check=False)
    assert result.returncode != 0 and 'name: "7up" must start with a letter' in stderr_of(result)
    assert [o["metadata"]["name"] for o in template("7up", "--set", "name=seven-up")][0].startswith("seven-up")


def test_package_is_a_self_contained_archive(tmp_path):
    result = helm("package", str(CHART), "-d", str(tmp_path))
    archive = tmp_path / "llmlaunch-0.1.0.tgz"
    assert archive.is_file() and str(archive) in result.stdout
    with tarfile.open(archive) as tar:
        members = {m.name: m for m in tar.getmembers()}
        for name in ("Chart.yaml", "values.yaml", "values.schema.json", "templates/NOTES.txt",
                     "ci/multi-node-values.yaml"):
            assert f"llmlaunch/{name}" in members, name
        # The links into monitoring/ are resolved: the archive holds the files themselves.
        for name, source in [("dashboards/llmlaunch.json", DASHBOARD), ("alerts/llmlaunch-rules.yaml", RULES)]:
            member = members[f"llmlaunch/{name}"]
            assert member.isfile() and tar.extractfile(member).read() == source.read_bytes()
    from_dir = template("run", "-f", ci_values("multi-node"))
    from_archive = template("run", "-f", ci_values("multi-node"), chart=archive)
    assert from_archive == from_dir
    assert "0 chart(s) failed" in helm("lint", "--strict", str(archive)).stdout


@pytest.mark.parametrize("written", [1, None])
def test_torchrun_restarts_follow_train_run_max_restarts(tmp_path, written):
    # The pods' torchrun restarts the group as often as train.yaml says; a trainYaml written by hand
    # without the key gets TrainConfig's default, as `llmlaunch render` would give it.
    from trainer.config.train_config import RunConfig

    values = yaml.safe_load((CHART / "values.yaml").read_text())
    train = yaml.safe_load(values["config"]["trainYaml"])
    train["run"].pop("max_restarts")
    if written is not None:
        train["run"]["max_restarts"] = written
    values_file = chart_helm.write_values({"config": {"trainYaml": yaml.safe_dump(train)}}, tmp_path)
    job = by_kind(template("run", "-f", str(values_file)))["PyTorchJob"][0]
    command = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["command"]
    expected = RunConfig.model_fields["max_restarts"].default if written is None else written
    assert f"--max-restarts={expected}" in command
