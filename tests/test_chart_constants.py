"""The chart's constants (ports, name length, config path, container names, default restarts) come from the
Python source through the generated templates/_defaults.tpl, never typed into the templates a second time."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from chart_helm import CHART, ROOT, template
from launcher.render.chart_values import chart_constants, defaults_template
from launcher.spec import torchrun

pytestmark = pytest.mark.helm

CHANGED = {"pytorchjobPort": 23999, "trainjobPort": 29999, "maxNameLength": 12, "configDir": "/etc/elsewhere",
           "configPath": "/etc/elsewhere/train.yaml", "pytorchjobContainer": "trainer-x", "trainjobContainer": "nodex",
           "defaultMaxRestarts": 7, "defaultElasticMaxRestarts": 8}


def test_generated_file_holds_the_python_values(monkeypatch):
    assert chart_constants()["pytorchjobPort"] == torchrun.PYTORCHJOB_PORT
    monkeypatch.setattr(torchrun, "PYTORCHJOB_PORT", 24000)
    assert '"llmlaunch.const.pytorchjobPort" -}}24000{{' in defaults_template()


def test_templates_use_the_constants_not_literals(tmp_path):
    """A chart copy whose generated constants all differ renders the new values everywhere the old ones were."""
    chart = tmp_path / "llmlaunch"
    shutil.copytree(CHART, chart)
    generated = chart / "templates" / "_defaults.tpl"
    text = generated.read_text()
    for key, value in CHANGED.items():
        text, count = re.subn(rf'("llmlaunch\.const\.{key}" -}}}})[^{{]*', rf"\g<1>{value}", text)
        assert count == 1, key
    generated.write_text(text)
    ci = ROOT / "helm" / "llmlaunch" / "ci"
    written = json.dumps(template("run", "-f", str(ci / "single-node-values.yaml"), chart=chart) +
                         template("run", "-f", str(ci / "trainjob-values.yaml"), chart=chart))
    for old in ("23456", "/etc/llmlaunch", '"pytorch"', '"node"'):
        assert old not in written, old
    for new in ('"containerPort": 23999', '"/etc/elsewhere/train.yaml"', '"mountPath": "/etc/elsewhere"',
                '"name": "trainer-x"', '"name": "nodex"'):
        assert new in written, new
    # trainYaml without run.max_restarts: the chart's default for it is the generated one
    values = (ci / "single-node-values.yaml").read_text().replace("      max_restarts: 3\n", "")
    (tmp_path / "v.yaml").write_text(values)
    job = next(o for o in template("run", "-f", str(tmp_path / "v.yaml"), chart=chart) if o["kind"] == "PyTorchJob")
    master = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    assert "--max-restarts=7" in master["containers"][0]["command"]
