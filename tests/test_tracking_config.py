"""train.tracking through the CLI: credentials refused (one line naming the key, exit 2), the section carried to the
pods in the ConfigMap like the rest of `train` while credentials come from Secrets, and the launcher never
importing a tracker package."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml
from click.testing import CliRunner

from launcher.cli import cli
from trainer.observability.trackers import flatten, scalars
from trainjobs import REPO, tiny_job

MLFLOW = {"tracking_uri": "http://mlflow.ml:5000", "experiment": "llm"}


def run(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


MLFLOW_ENV = "set MLFLOW_TRACKING_TOKEN"


@pytest.mark.parametrize("tracking,fragment", [
    ({"mlflow": {**MLFLOW, "token": "s3cr3t"}}, f"train.tracking.mlflow: token looks like a credential; {MLFLOW_ENV}"),
    ({"mlflow": {**MLFLOW, "password": "s3cr3t"}}, "train.tracking.mlflow: password looks like a credential"),
    ({"mlflow": {**MLFLOW, "username": "s3cr3t"}}, "train.tracking.mlflow: username looks like a credential"),
    ({"mlflow": {**MLFLOW, "tracking_uri": "https://bob:s3cr3t@mlflow.ml"}},
     "train.tracking.mlflow: tracking_uri holds a credential"),
    ({"mlflow": {**MLFLOW, "tracking_uri": "https://mlflow.ml/?access_token=s3cr3t"}},
     "tracking_uri holds a credential"),
    ({"wandb": {"project": "p", "api_key": "s3cr3t"}},
     "train.tracking.wandb: api_key looks like a credential; set WANDB_API_KEY"),
    ({"wandb_api_key": "s3cr3t"}, "train.tracking: wandb_api_key looks like a credential"),
])
def test_a_credential_in_the_tracking_section_is_refused_in_one_line(tmp_path, tracking, fragment):
    result = run("validate", str(tiny_job(tmp_path, tracking=tracking)))
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], lines
    assert "s3cr3t" not in result.stderr and "cluster.secrets" in lines[0]  # never echoed back


@pytest.mark.parametrize("tracking,fragment", [
    ({"wandb": {"project": "p", "mode": "shared"}},
     "train.tracking.wandb.mode: Input should be 'online' or 'offline'"),
    ({"mlflow": {"experiment": "x"}}, "train.tracking.mlflow.tracking_uri: required key is missing"),
    ({"tensorbaord": True}, "train.tracking.tensorbaord: unknown key"),
])
def test_other_tracking_mistakes_name_the_key(tmp_path, tracking, fragment):
    result = run("validate", str(tiny_job(tmp_path, tracking=tracking)))
    assert result.exit_code == 2 and fragment in result.stderr, result.output


def test_render_carries_tracking_in_the_configmap_and_credentials_only_as_secret_refs(tmp_path):
    """Through the real CLI in a fresh interpreter, which must import none of the tracker packages."""
    tracking = {"tensorboard": True, "mlflow": {**MLFLOW, "log_model": True},
                "wandb": {"project": "p", "entity": "team"}}
    job = tiny_job(tmp_path, tracking=tracking)
    spec = yaml.safe_load(job.read_text())
    spec["cluster"] = {"image": "registry.example/llmlaunch-trainer:0.1.0", "secrets": [
        {"env": "MLFLOW_TRACKING_TOKEN", "secret": "mlflow", "key": "token"},
        {"env": "WANDB_API_KEY", "secret": "wandb", "key": "api-key"}]}
    job.write_text(yaml.safe_dump(spec))
    code = ("import json, sys\nfrom launcher.cli import cli\n"
            "try:\n    cli.main(['render', sys.argv[1]], standalone_mode=False)\nfinally:\n    sys.stdout.flush()\n"
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & {'mlflow', 'wandb', 'tensorboard', "
            "'tensorboardX', 'torch'})), file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", code, str(job)], capture_output=True, text=True, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, check=True)
    assert json.loads(result.stderr.strip().splitlines()[-1]) == []
    objects = list(yaml.safe_load_all(result.stdout))
    config_map = next(o for o in objects if o["kind"] == "ConfigMap")
    assert yaml.safe_load(config_map["data"]["train.yaml"])["tracking"] == {
        "tensorboard": True, "mlflow": {**MLFLOW, "run_name": None, "log_model": True},
        "wandb": {"project": "p", "entity": "team", "mode": "online"}}
    job_object = next(o for o in objects if o["kind"] == "PyTorchJob")
    container = job_object["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("valueFrom") for e in container["env"]}
    assert env["MLFLOW_TRACKING_TOKEN"] == {"secretKeyRef": {"name": "mlflow", "key": "token", "optional": False}}
    assert env["WANDB_API_KEY"] == {"secretKeyRef": {"name": "wandb", "key": "api-key", "optional": False}}


def test_a_record_becomes_the_same_scalars_and_a_section_dotted_params():
    record = {"step": 5, "time": 1.5, "loss": 2.25, "lr": 1e-4, "grad_norm": None, "tokens": 4096, "epoch": 0,
              "mfu": 0.31}
    assert scalars(record) == {"loss": 2.25, "lr": 1e-4, "tokens": 4096.0, "epoch": 0.0, "mfu": 0.31}
    assert flatten({"run": {"max_steps": 8, "output_dir": "out"}, "optim": {"betas": [0.9, 0.95]},
                    "model": {"config": None}, "deepspeed": {"overrides": {}}, "x": "y" * 7000}) == {
        "run.max_steps": "8", "run.output_dir": "out", "optim.betas": "[0.9, 0.95]", "model.config": "null",
        "deepspeed.overrides": "{}", "x": "y" * 6000}


@pytest.mark.parametrize("sections,fragment", [
    ({"data": {"train": "s3://AKIA:s3cr3t@bucket/x.jsonl"}}, "train.data.train: s3://***@.../x.jsonl: an s3:// URL "
     "holds no credentials"),
    ({"run": {"checkpoint_mirror": "s3://AKIA:s3cr3t@bucket/run"}}, "train.run.checkpoint_mirror: s3://***@.../run"),
    ({"data": {"train": "s3://Bad_Bucket/x.jsonl"}}, "bucket 'Bad_Bucket' is not an S3 bucket name"),
])
def test_an_s3_url_with_a_credential_or_a_bad_bucket_is_refused_in_one_line(tmp_path, sections, fragment):
    result = run("validate", str(tiny_job(tmp_path, **sections)))
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], lines
    assert "s3cr3t" not in result.output + result.stderr  # never echoed back
