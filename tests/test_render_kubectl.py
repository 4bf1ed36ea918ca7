"""`llmlaunch render | kubectl apply -f -` keeps every string a string: the real kubectl (a YAML 1.1
reader with Go's number syntax) against the real kube-apiserver (tests/fixtures/control_plane.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from launcher.cli import cli
from launcher.render.manifests import GO_YAML_NON_STRING, to_yaml

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parent.parent
# Strings PyYAML writes unquoted but kubectl would read as bool / number (each was one on main).
TRICKY = ["y", "n", "Y", "N", "1e5", "0o17", "0x1F", "0b101", "1_000", "+1", ".5", "1.", "-.inf", "~"]


def kubectl() -> str:
    local = ROOT / ".tools" / "bin" / "kubectl"
    found = shutil.which("kubectl") or (str(local) if local.is_file() else None)
    if found is None:
        pytest.fail("kubectl not found on PATH or in .tools/bin: run scripts/install-test-deps.sh")
    return found


def tricky_job(tmp_path: Path, namespace: str) -> Path:
    job = yaml.safe_load((ROOT / "examples" / "tiny.yaml").read_text())
    job["cluster"].update({
        "namespace": namespace,
        "env": {f"V{i}": value for i, value in enumerate(TRICKY)},
        "labels": {"team": "y", "tier": "0o17"},
        "annotations": {f"example.com/v{i}": value for i, value in enumerate(TRICKY)},
    })
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job, sort_keys=False))  # PyYAML quotes them here as YAML 1.1 strings
    return path


def json_stream(text: str) -> list[dict]:
    """kubectl -o json prints one JSON document per object, back to back."""
    decoder, out, at = json.JSONDecoder(), [], 0
    while text[at:].strip():
        obj, end = decoder.raw_decode(text, at + len(text[at:]) - len(text[at:].lstrip()))
        out.append(obj)
        at = end
    return out


def test_the_quoting_rule_covers_every_tricky_string_and_leaves_plain_ones():
    assert all(GO_YAML_NON_STRING.fullmatch(s) for s in TRICKY)
    assert not any(GO_YAML_NON_STRING.fullmatch(s) for s in ["16Gi", "500m", "yesterday", "x1e5", "0x", "plain"])
    for text in TRICKY:
        assert to_yaml({"k": text}) in (f"k: '{text}'\n", f"k: \"{text}\"\n"), to_yaml({"k": text})


def test_kubectl_reads_every_rendered_string_as_a_string(control_plane, tmp_path):
    ns = control_plane.create_namespace("quote")
    result = CliRunner().invoke(cli, ["render", str(tricky_job(tmp_path, ns))], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    created = subprocess.run(
        [kubectl(), "--kubeconfig", str(control_plane.kubeconfig), "create", "--dry-run=server",
         "-o", "json", "-f", "-"],
        input=result.stdout, capture_output=True, text=True, timeout=120)
    assert created.returncode == 0, created.stderr
    objects = {o["kind"]: o for o in json_stream(created.stdout)}
    job = objects["PyTorchJob"]
    pod = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert [env[f"V{i}"] for i in range(len(TRICKY))] == TRICKY
    for obj in (job, objects["ConfigMap"], pod):
        meta = obj["metadata"]
        assert [meta["annotations"][f"example.com/v{i}"] for i in range(len(TRICKY))] == TRICKY
        assert meta["labels"]["team"] == "y" and meta["labels"]["tier"] == "0o17"
