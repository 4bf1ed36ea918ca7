"""checkov's Kubernetes checks on every example's manifests, with only the documented skips.

checkov runs from its own venv (.tools/checkov-venv, made by scripts/install-test-deps.sh) with
--skip-download, so it works offline. It does not look inside a PyTorchJob, so each replica's pod
template is scanned as a Pod. A TrainJob has no pod template (its runtime owns the pod spec), so for
the TrainJob case only the objects llmlaunch writes in full are scanned.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

import schema_check
from golden_cases import cases, load_case
from launcher.render.manifests import render, to_yaml

ROOT = Path(__file__).resolve().parent.parent
CHECKOV = Path(os.environ.get("LLMLAUNCH_CHECKOV", ROOT / ".tools/checkov-venv/bin/checkov"))
SKIPS = yaml.safe_load((ROOT / "k8s" / "checkov-skips.yaml").read_text())

pytestmark = pytest.mark.tools  # checkov, installed by scripts/install-test-deps.sh


def applies(skip: dict, spec) -> bool:
    c = spec.cluster
    return {"always": True, "rdma": c.network.rdma is not None or bool(c.security.add_capabilities),
            "default-namespace": c.namespace == "default"}[skip["when"]]


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    """One checkov run over every case (a directory each); returns (failed checks, passed count)."""
    if not CHECKOV.is_file():
        pytest.fail(f"{CHECKOV} missing: run scripts/install-test-deps.sh")
    root = tmp_path_factory.mktemp("checkov")
    for name in cases():
        (root / name).mkdir()
        for i, obj in enumerate(render(load_case(name))):
            if obj["kind"] == "PyTorchJob":
                parts = [(obj["kind"], p) for _, p in schema_check.pod_templates(obj)]
            else:
                parts = [("", obj)]
            for j, (_, part) in enumerate(parts):
                if part["kind"] != "TrainJob":
                    (root / name / f"{i:02d}-{j}-{part['kind'].lower()}.yaml").write_text(to_yaml(part))
    out = subprocess.run([str(CHECKOV), "-d", str(root), "--framework", "kubernetes", "--skip-download", "--quiet",
                          "-o", "json"], capture_output=True, text=True, timeout=600)
    report = json.loads(out.stdout)
    report = report[0] if isinstance(report, list) else report
    failed = [(Path(f["file_path"]).parts[1], f["check_id"], f["resource"]) for f in report["results"]["failed_checks"]]
    return failed, report["summary"]["passed"]


def test_only_documented_skips_fail(scan):
    failed, passed = scan
    assert passed > 100  # the scan really ran over pods, policies, claims and config maps
    specs = {name: load_case(name) for name in cases()}
    unexplained = [(case, check, resource) for case, check, resource in failed
                   if not any(s["id"] == check and applies(s, specs[case]) for s in SKIPS)]
    assert unexplained == []


def test_every_skip_is_still_needed(scan):
    failed, _ = scan
    assert {s["id"] for s in SKIPS} == {check for _, check, _ in failed}


def test_pods_pass_the_security_context_checks(scan):
    failed, _ = scan
    must_pass = {"CKV_K8S_20", "CKV_K8S_22", "CKV_K8S_23", "CKV_K8S_28", "CKV_K8S_29", "CKV_K8S_30", "CKV_K8S_31",
                 "CKV_K8S_37", "CKV_K8S_38", "CKV_K8S_40", "CKV_K8S_16", "CKV2_K8S_6"}
    assert must_pass.isdisjoint(check for _, check, _ in failed)
