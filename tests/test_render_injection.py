"""No string in a job file can add, remove or change YAML structure in the manifests."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from launcher.render import manifests
from launcher.spec.job_spec import JobSpec
from launcher.spec.k8s_types import has_control_character

TINY = yaml.safe_load((Path(__file__).resolve().parent.parent / "examples" / "tiny.yaml").read_text())
NASTY = st.sampled_from(['"', "'", "\\", "\n", "\r\n", ": ", "- ", "#", "{", "}", "[", "]", "---", "...", "&a", "*a",
                         "!!python/object", "\x85", "\u2028", "\t", "%", "@", "`", "|", ">", "\x00", "\U0001f600"])
TEXT = st.lists(st.one_of(NASTY, st.text(max_size=5)), max_size=8).map("".join)


def shape(node):
    """The structure of an object with every scalar replaced by its type."""
    if isinstance(node, dict):
        return {k: shape(v) for k, v in node.items()}
    if isinstance(node, list):
        return [shape(v) for v in node]
    return type(node).__name__


def job_with(value: str, image: str) -> JobSpec:
    data = copy.deepcopy(TINY)
    data["cluster"].update({
        "nodes": 2,
        "image": image,
        "env": {"USER_NOTE": value},
        "annotations": {"example.com/note": value},
        "secrets": [{"env": "HF_TOKEN", "secret": "hf", "key": value or "k"}],
        "network": {"nccl": {"NCCL_DEBUG": value}},
        "scheduling": {"tolerations": [{"key": "gpu", "operator": "Equal", "value": value}]},
        # A mount path takes no control characters, ':' or '..' (launcher.spec.rules refuses them): the rest stays.
        "storage": {"size": "1Gi", "mount_path": "/data/" + ("".join(c for c in value if c not in "/.:" and
                                                                   not has_control_character(c)) or "x")},
    })
    data["train"]["data"]["text_field"] = value
    return JobSpec.model_validate(data)


def rendered(spec: JobSpec) -> list[dict]:
    """Parse the raw template output (not the re-dumped stream) so the templates themselves are tested."""
    return [yaml.safe_load(doc) for doc in manifests.documents(spec)]


BASELINE = rendered(job_with("plain", "ghcr.io/x/trainer:1"))


@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=TEXT, image=st.text(min_size=1, max_size=20).filter(
    lambda s: not any(c.isspace() for c in s) and not has_control_character(s)))
def test_user_strings_land_verbatim_and_change_no_structure(value, image):
    spec = job_with(value, image)
    objs = rendered(spec)
    assert [shape(o) for o in objs] == [shape(o) for o in BASELINE]
    job = objs[-1]
    pod = job["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]
    container = pod["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert container["image"] == image
    assert env["USER_NOTE"]["value"] == value and env["NCCL_DEBUG"]["value"] == value
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"]["key"] == (value or "k")
    assert pod["metadata"]["annotations"]["example.com/note"] == value
    assert job["metadata"]["annotations"]["example.com/note"] == value
    assert pod["spec"]["tolerations"][0]["value"] == value
    assert yaml.safe_load(objs[0]["data"]["train.yaml"])["data"]["text_field"] == value
    # The stream users see (re-dumped with literal blocks) parses back to the same objects.
    assert list(yaml.safe_load_all(manifests.to_yaml_stream(objs))) == objs
