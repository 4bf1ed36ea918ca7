"""The NetworkPolicy around a job's pods, judged by what it lets through (tests/netpol.py applies the
networking.k8s.io/v1 rules): the job's own pods reach every port, the configured scraper only the
metrics port, nobody else anything; the optional egress rules block link-local metadata addresses
and nothing else. The chart's policy is checked the same way (and equal to render's: test_chart_parity)."""

from __future__ import annotations

import json
import subprocess

import pytest

import chart_helm
from golden_cases import TEST_IMAGE
from launcher.render import manifests
from launcher.render.helm_values import chart_values, documented_yaml
from launcher.spec.load import load_job
from netpol import Pod, egress_allowed, ingress_allowed, selects
from test_render import TINY, spec_of
from trainer.config.train_config import ConfigError

JOB = {"app.kubernetes.io/name": "llmlaunch", "app.kubernetes.io/instance": "tiny",
       "app.kubernetes.io/component": "trainer"}
PROMETHEUS = {"app.kubernetes.io/name": "prometheus", "prometheus": "kube-prometheus-stack-prometheus"}
METRICS, RENDEZVOUS = 9400, (23456, 29400, 29500)  # operators' master port, c10d, torchrun's default

OWN_POD = Pod("default", JOB)
SCRAPER = Pod("monitoring", PROMETHEUS)
OTHERS = {
    "pod of the same namespace": Pod("default", {"app": "web"}),
    "another job's trainer": Pod("default", {**JOB, "app.kubernetes.io/instance": "other"}),
    "job labels in another namespace": Pod("team-b", JOB),
    "other pod in monitoring": Pod("monitoring", {"app.kubernetes.io/name": "grafana"}),
    "Prometheus in another namespace": Pod("team-b", PROMETHEUS),
    "outside the cluster": "203.0.113.7",
}


def policy_of(*overrides: str) -> dict:
    return next(o for o in manifests.render(spec_of(*overrides)) if o["kind"] == "NetworkPolicy")


def chart_policy(tmp_path, *overrides: str) -> dict:
    path = tmp_path / "values.yaml"
    path.write_text(documented_yaml(chart_values(spec_of(*overrides)), ["test"]))
    return next(o for o in chart_helm.template("tiny", "-f", str(path), namespace="default")
                if o["kind"] == "NetworkPolicy")


def check_ingress(policy: dict) -> None:
    assert selects(policy, OWN_POD) and not selects(policy, OTHERS["pod of the same namespace"])
    for port in (METRICS, *RENDEZVOUS):
        assert ingress_allowed(policy, OWN_POD, port), port
    assert ingress_allowed(policy, SCRAPER, METRICS)
    for port in RENDEZVOUS:
        assert not ingress_allowed(policy, SCRAPER, port), f"the scraper reaches rendezvous port {port}"
    for what, peer in OTHERS.items():
        for port in (METRICS, *RENDEZVOUS):
            assert not ingress_allowed(policy, peer, port), f"{what} reaches port {port}"


def test_only_the_jobs_pods_reach_rendezvous_ports_and_only_prometheus_the_metrics_port():
    check_ingress(policy_of())
    assert policy_of()["spec"]["policyTypes"] == ["Ingress"]  # egress open by default
    off = policy_of("train.metrics.enabled=false")
    assert not ingress_allowed(off, SCRAPER, METRICS) and ingress_allowed(off, OWN_POD, 29500)


@pytest.mark.helm
def test_the_charts_policy_admits_the_same(tmp_path):
    check_ingress(chart_policy(tmp_path))


@pytest.mark.helm
def test_the_charts_own_defaults_admit_kube_prometheus_stack_and_a_set_selector_replaces_one():
    """values.yaml leaves metricsFrom empty (Helm would merge a user's selector into a default one);
    the chart fills in what is left out from the same defaults as the job file."""
    args = ("--set", f"image={TEST_IMAGE}")
    default = next(o for o in chart_helm.template("tiny", *args) if o["kind"] == "NetworkPolicy")
    assert default["spec"]["ingress"][1]["from"] == policy_of()["spec"]["ingress"][1]["from"]
    check_ingress(default)
    mine = next(o for o in chart_helm.template("tiny", *args, "--set", "network.metricsFrom.namespaceSelector.team=sre")
                if o["kind"] == "NetworkPolicy")
    assert mine["spec"]["ingress"][1]["from"] == [
        {"namespaceSelector": {"matchLabels": {"team": "sre"}},
         "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}]


def test_metrics_from_selects_the_scraper():
    mine = Pod("observability", {"app": "vmagent"}, {"team": "sre"})
    policy = policy_of("cluster.network.metrics_from={namespace_selector: {team: sre}, pod_selector: {app: vmagent}}")
    assert ingress_allowed(policy, mine, METRICS) and not ingress_allowed(policy, mine, 29500)
    assert not ingress_allowed(policy, SCRAPER, METRICS)
    assert not ingress_allowed(policy, Pod("observability", {"app": "other"}, {"team": "sre"}), METRICS)
    # {} selects every namespace (the pod selector still applies)
    anywhere = policy_of("cluster.network.metrics_from.namespace_selector={}")
    assert ingress_allowed(anywhere, OTHERS["Prometheus in another namespace"], METRICS)
    assert not ingress_allowed(anywhere, OTHERS["pod of the same namespace"], METRICS)


@pytest.mark.parametrize("chart", [False, pytest.param(True, marks=pytest.mark.helm)], ids=["render", "chart"])
def test_block_metadata_egress_blocks_link_local_and_nothing_else(chart, tmp_path):
    setting = "cluster.network.block_metadata_egress=true"
    policy = chart_policy(tmp_path, setting) if chart else policy_of(setting)
    check_ingress(policy)
    for address, port in [("169.254.169.254", 80), ("169.254.169.254", 443), ("169.254.170.2", 80)]:
        assert not egress_allowed(policy, address, port), address
    allowed = [("8.8.8.8", 443, "TCP"), ("10.96.0.1", 443, "TCP"), ("2001:db8::1", 443, "TCP"),
               ("169.254.20.10", 53, "UDP"), ("169.254.20.10", 53, "TCP"),  # NodeLocal DNSCache
               (Pod("kube-system", {"k8s-app": "kube-dns"}), 53, "UDP"), (OWN_POD, 29500, "TCP"),
               (Pod("storage", {"app": "minio"}, ip="10.0.3.4"), 9000, "TCP")]
    for destination, port, protocol in allowed:
        assert egress_allowed(policy, destination, port, protocol), (destination, port, protocol)


def test_a_bad_selector_is_one_line_naming_the_key():
    with pytest.raises(ConfigError) as info:
        load_job(TINY, ["cluster.network.metrics_from.pod_selector={'bad key!': x}"], resolve_paths=False)
    assert len(str(info.value).splitlines()) == 1
    assert "cluster.network.metrics_from.pod_selector" in str(info.value)


@pytest.mark.cluster
def test_the_api_server_accepts_the_locked_down_policy_and_stores_what_it_admits(control_plane):
    """The real kube-apiserver validates more than the OpenAPI schema (CIDRs, `except` inside `cidr`)."""
    from test_render_kubectl import kubectl

    namespace = control_plane.create_namespace("netpol")
    spec = load_job(TINY, [f"cluster.namespace={namespace}", "cluster.network.block_metadata_egress=true"],
                    resolve_paths=False)
    policy = next(o for o in manifests.render(spec) if o["kind"] == "NetworkPolicy")
    created = subprocess.run(
        [kubectl(), "--kubeconfig", str(control_plane.kubeconfig), "create", "--dry-run=server",
         "-o", "json", "-f", "-"],
        input=manifests.to_yaml_stream([policy]), capture_output=True, text=True, timeout=120)
    assert created.returncode == 0, created.stderr
    stored = json.loads(created.stdout)
    assert stored["spec"] == policy["spec"]
