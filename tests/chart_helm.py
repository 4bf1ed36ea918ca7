"""Running the real helm binary on helm/llmlaunch, and comparing its objects with `llmlaunch render`'s.

helm comes from PATH or .tools/bin (scripts/install-test-deps.sh installs it); a missing helm fails
the tests that need it, never skips them.
"""

from __future__ import annotations

import copy
import functools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "llmlaunch"
OPERATOR_API = "monitoring.coreos.com/v1"
# Labels only a Helm release carries; llmlaunch render writes managed-by llmlaunch instead of Helm.
HELM_ONLY_LABELS = ("helm.sh/chart", "app.kubernetes.io/version")


@functools.cache
def helm_binary() -> str:
    found = shutil.which("helm") or next((str(p) for p in [ROOT / ".tools" / "bin" / "helm"] if p.is_file()), None)
    if found is None:
        pytest.fail("helm not found on PATH or in .tools/bin: run scripts/install-test-deps.sh")
    return found


@functools.cache
def _helm_home() -> str:
    """Helm's config, cache and data under a private directory: tests never touch ~/.config/helm."""
    return tempfile.mkdtemp(prefix="llmlaunch-helm-")


def helm(*args: str, kubeconfig: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    home = _helm_home()
    env = {**os.environ, "HELM_CONFIG_HOME": f"{home}/config", "HELM_CACHE_HOME": f"{home}/cache",
           "HELM_DATA_HOME": f"{home}/data"}
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    result = subprocess.run([helm_binary(), *args], capture_output=True, text=True, env=env, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({result.returncode}):\n{stderr_of(result)}")
    return result


def stderr_of(result: subprocess.CompletedProcess) -> str:
    """helm's stderr without its notes about the chart's links into monitoring/ (expected, see docs/helm.md)."""
    return "\n".join(line for line in result.stderr.splitlines() if "found symbolic link in path" not in line)


def write_values(values: dict, directory: Path, name: str = "values.yaml") -> Path:
    path = directory / name
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return path


def template(release: str, *args: str, namespace: str = "default", chart: Path | str = CHART,
             operator: bool = True) -> list[dict]:
    """`helm template` -> the objects; operator=True lets the chart see the Prometheus operator's API."""
    extra = ["--api-versions", OPERATOR_API] if operator else []
    result = helm("template", release, str(chart), "-n", namespace, *extra, *args)
    return [obj for obj in yaml.safe_load_all(result.stdout) if obj]


def is_chart_extra(obj: dict) -> bool:
    """Objects only the chart creates: the alert rules and the dashboard (llmlaunch render does not)."""
    component = obj["metadata"]["labels"].get("app.kubernetes.io/component")
    return obj["kind"] == "PrometheusRule" or (obj["kind"] == "ConfigMap" and component == "dashboard")


def _as_render_labels(labels: dict) -> None:
    for key in HELM_ONLY_LABELS:
        labels.pop(key, None)
    if labels.get("app.kubernetes.io/managed-by") == "Helm":
        labels["app.kubernetes.io/managed-by"] = "llmlaunch"


def canonical(objects: list[dict]) -> list[dict]:
    """Objects in a fixed order with Helm's release labels mapped to render's (nothing else changes)."""
    out = []
    for obj in copy.deepcopy(objects):
        _as_render_labels(obj["metadata"].get("labels", {}))
        for replica in (obj.get("spec", {}).get("pytorchReplicaSpecs") or {}).values():
            _as_render_labels(replica["template"]["metadata"]["labels"])
        for patch in obj.get("spec", {}).get("runtimePatches") or []:  # a TrainJob's pod labels
            for job in patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]:
                _as_render_labels(job["template"]["spec"]["template"]["metadata"]["labels"])
        out.append(obj)
    return sorted(out, key=lambda o: (o["apiVersion"], o["kind"], o["metadata"]["name"]))
