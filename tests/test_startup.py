"""launcher/startup.py: the CLI builds its pydantic models without pydantic's plugin loader (and so without
importlib.metadata) when plugins are off, validates exactly as before, and leaves a user's choice alone."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from trainjobs import REPO

VALIDATE = """
import sys
from launcher.cli import cli
try:
    cli(["validate", sys.argv[1]], prog_name="llmlaunch")
except SystemExit as e:
    code = e.code
loader = sys.modules["pydantic.plugin._loader"]
print(code, "importlib.metadata" in sys.modules, getattr(loader, "__file__", None) is not None)
"""


def run_validate(job: str, plugins_setting: str | None) -> tuple[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYDANTIC_DISABLE_PLUGINS"} | {"PYTHONPATH": str(REPO)}
    if plugins_setting is not None:
        env["PYDANTIC_DISABLE_PLUGINS"] = plugins_setting
    out = subprocess.run([sys.executable, "-c", VALIDATE, job], cwd=REPO, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()[-1], out.stderr  # the line the script prints after validate's own


@pytest.mark.parametrize("setting", [None, "__all__", "true"])
def test_plugins_off_skips_the_loader_and_still_validates(setting, tmp_path):
    assert run_validate("examples/tiny.yaml", setting)[0] == "0 False False"
    bad = tmp_path / "bad.yaml"
    bad.write_text((REPO / "examples" / "tiny.yaml").read_text().replace("max_steps: 200", "max_steps: -3"))
    result, stderr = run_validate(str(bad), setting)
    assert result == "2 False False"
    assert "run.max_steps" in stderr


def test_a_user_who_names_plugins_gets_pydantics_loader():
    # Any other value lists plugins to skip: pydantic's own loader must run and look them up.
    assert run_validate("examples/tiny.yaml", "logfire")[0] == "0 True True"


def test_a_name_the_stand_in_lacks_comes_from_pydantics_loader():
    # A later pydantic may ask its loader for more than get_plugins: that must load the real module, not fail.
    code = ("import sys; from launcher import startup; startup.skip_pydantic_plugins()\n"
            "from pydantic.plugin._loader import PYDANTIC_ENTRY_POINT_GROUP\n"
            "print(PYDANTIC_ENTRY_POINT_GROUP, sys.modules['pydantic.plugin._loader'].__file__ is not None)")
    env = {k: v for k, v in os.environ.items() if k != "PYDANTIC_DISABLE_PLUGINS"} | {"PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["pydantic", "True"]
