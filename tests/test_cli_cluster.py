"""Cluster commands through click's CliRunner, for everything that needs no API server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from launcher.cli import cli

ROOT = Path(__file__).resolve().parent.parent
TINY = str(ROOT / "examples" / "tiny.yaml")
MULTINODE = str(Path(TINY).parent / "pretrain-multinode.yaml")  # names no image: users build their own
COMMANDS = ["init", "render", "submit", "status", "list", "logs", "delete", "schema"]


def run(*args: str, env: dict | None = None):
    return CliRunner().invoke(cli, list(args), env=env)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    result = run(command, "--help")
    assert result.exit_code == 0 and "Usage: cli " + command in result.output.replace("llmlaunch", "cli")


def test_render_prints_a_yaml_stream_with_the_flags_applied():
    result = run("render", TINY, "--nodes", "4", "--gpus-per-node", "2", "--image", "reg.example/t:2", "-n", "ml")
    assert result.exit_code == 0, result.output
    objs = list(yaml.safe_load_all(result.stdout))
    job = objs[-1]
    assert job["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 3 and job["spec"]["nprocPerNode"] == "2"
    assert {o["metadata"]["namespace"] for o in objs} == {"ml"}
    master = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    assert master["containers"][0]["image"] == "reg.example/t:2"


def test_render_to_a_directory_writes_one_file_per_object(tmp_path):
    result = run("render", TINY, "-o", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["00-configmap-tiny-config.yaml", "01-networkpolicy-tiny.yaml", "02-podmonitor-tiny.yaml",
                     "03-pytorchjob-tiny.yaml"]
    assert yaml.safe_load((tmp_path / "out" / files[3]).read_text())["kind"] == "PyTorchJob"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["render", "missing.yaml"], "error: missing.yaml: cannot read job file"),
        (["render", TINY, "--set", "cluster.nodes=0"],
         "error: cluster.nodes: Input should be greater than or equal to 1"),
        (["render", TINY, "-n", "Bad_NS"], "error: cluster.namespace: must be a DNS-1123 label"),
        (["render", TINY, "--image", "a b"], "error: cluster.image: an image reference has no whitespace"),
        (["render", TINY, "--set", "train.precision=fp16"], "error: train.precision: fp16 needs GPU pods"),
        (["submit", TINY, "--set", "cluster.env.API_TOKEN=x"], "error: cluster.env: API_TOKEN looks like a secret"),
        # no default image: every cluster command says how to build one instead of naming one that does not exist
        *(([command, MULTINODE], "error: cluster.image is not set: build the trainer image from the repository's "
           "Dockerfile, push it") for command in ("render", "values", "submit")),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message):
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(message) and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_debug_shows_the_traceback():
    result = run("--debug", "render", TINY, "--set", "cluster.nodes=0")
    assert result.exit_code == 2 and "Traceback" in result.stderr


def test_client_dry_run_lists_the_objects_without_a_cluster(tmp_path):
    result = run("submit", TINY, "--dry-run", "client", "--kubeconfig", str(tmp_path / "none"))
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["configmap/tiny-config created (dry run)",
                                          "networkpolicy/tiny created (dry run)",
                                          "podmonitor/tiny created (dry run)", "pytorchjob/tiny created (dry run)"]


def test_no_kubeconfig_is_a_one_line_cluster_error(tmp_path):
    result = run("submit", TINY, env={"KUBECONFIG": str(tmp_path / "nope"), "HOME": str(tmp_path)})
    assert result.exit_code == 1
    assert result.stderr == f"error: no kubeconfig at {tmp_path / 'nope'}: set KUBECONFIG or pass --kubeconfig\n"


def test_unreachable_cluster_names_the_address(tmp_path):
    from launcher.local.ports import free_port
    from tests.fixtures.control_plane import kubeconfig_text

    port = free_port()  # nothing listens there
    config = tmp_path / "kubeconfig"
    config.write_text(kubeconfig_text(f"https://127.0.0.1:{port}", "t"))
    for args in (["submit", TINY], ["status", "tiny"], ["list"], ["delete", "tiny"], ["logs", "tiny"]):
        result = run(*args, "--kubeconfig", str(config))
        assert result.exit_code == 1, (args, result.output)
        assert result.stderr.startswith(f"error: cannot reach the cluster at https://127.0.0.1:{port}: ")
        assert "Connection refused" in result.stderr and len(result.stderr.splitlines()) == 1


def test_unknown_context_is_a_cluster_error(tmp_path):
    from tests.fixtures.control_plane import kubeconfig_text

    config = tmp_path / "kubeconfig"
    config.write_text(kubeconfig_text("https://127.0.0.1:1", "t"))
    result = run("list", "--kubeconfig", str(config), "--context", "prod")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: kubeconfig {config}: ") and "prod" in result.stderr


def test_init_writes_an_example_that_validates(tmp_path):
    target = tmp_path / "job.yaml"
    result = run("init", str(target), "--example", "pretrain-multinode")
    assert result.exit_code == 0, result.output
    assert target.read_text() == (ROOT / "examples" / "pretrain-multinode.yaml").read_text()
    assert run("validate", str(target)).exit_code == 0
    again = run("init", str(target))
    assert again.exit_code == 2 and "already exists (use --force" in again.stderr
    assert run("init", str(target), "--force").exit_code == 0
    listed = run("init", "--list")
    assert {"tiny", "pretrain-multinode"} <= set(listed.stdout.split())
    bad = run("init", str(tmp_path / "x.yaml"), "--example", "nope")
    assert bad.exit_code == 2 and bad.stderr.startswith("error: --example: no example 'nope'")


def test_render_imports_no_tensor_library_and_no_kubernetes_client():
    code = ("import sys; from launcher.cli import cli\n"
            "try:\n    cli.main(['render', sys.argv[1], '--nodes', '4'], standalone_mode=False)\n"
            "finally:\n    sys.stdout.flush()\n"
            "heavy = sorted({m.split('.')[0] for m in sys.modules} "
            "& {'torch', 'deepspeed', 'transformers', 'peft', 'kubernetes'})\n"
            "print(json.dumps(heavy), file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", "import json\n" + code, TINY], capture_output=True, text=True,
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True)
    assert json.loads(result.stderr.strip().splitlines()[-1]) == []
    assert "kind: PyTorchJob" in result.stdout


def test_shell_completion_completes_commands_and_options():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "_LLMLAUNCH_COMPLETE": "bash_complete",
           "COMP_WORDS": "llmlaunch sub", "COMP_CWORD": "1"}
    out = subprocess.run([sys.executable, "-m", "launcher.cli"], capture_output=True, text=True, env=env, cwd=ROOT)
    assert out.stdout.split() == ["plain,submit"]
    env.update(COMP_WORDS="llmlaunch submit job.yaml --dry-run ", COMP_CWORD="4")
    out = subprocess.run([sys.executable, "-m", "launcher.cli"], capture_output=True, text=True, env=env, cwd=ROOT)
    assert out.stdout.split() == ["plain,none", "plain,client", "plain,server"]
