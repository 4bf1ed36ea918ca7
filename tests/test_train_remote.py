"""Remote sources with real processes (2 DeepSpeed ranks on the CPU, as tests/test_resilience.py):
a model and a data set named on the hub, read offline from an HF cache the test writes; data from an S3
server on loopback and checkpoints mirrored to it. Each run is compared with one uninterrupted run on the
same model and data as local files: the same losses and final weights, step for step."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from faults import run_cli
from remote_fixtures import add_to_hub_cache, folder_files, moto_server, s3, s3_env
from test_resilience import assert_same_training
from trainjobs import DATA, save_tiny_pretrained, tiny_job

pytestmark = [pytest.mark.distributed, pytest.mark.s3]

RUN = {"max_steps": 12, "save_every": 4, "keep_last": 3, "eval_every": 0, "max_restarts": 0}
PROCS = ("--nproc-per-node", "2")
MODEL_ID, DATA_ID = "llmlaunch-test/tiny-llama", "llmlaunch-test/tiny-facts"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_pretrained(tmp_path_factory.mktemp("model") / "tiny-llama")


def pretrained(name: str) -> dict:
    return {"pretrained": name, "config": None, "tokenizer": None}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, model_dir):
    """Uninterrupted: the model directory and the bundled jsonl files, given as local paths."""
    tmp = tmp_path_factory.mktemp("reference")
    result = run_cli(tmp, str(tiny_job(tmp, model=pretrained(str(model_dir)), run=RUN)), *PROCS)
    assert result.returncode == 0, result.log[-4000:]
    return tmp / "out"


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory, model_dir):
    """The model and a data set (train and validation splits, named as the hub's parquet converter names
    them, but jsonl) in an HF cache of the test's own."""
    cache = tmp_path_factory.mktemp("hf") / "hub"
    add_to_hub_cache(cache, "model", MODEL_ID, folder_files(model_dir))
    add_to_hub_cache(cache, "dataset", DATA_ID, {
        "README.md": b"---\nlicense: apache-2.0\n---\n",
        "data/train-00000-of-00001.jsonl": (DATA / "tiny" / "train.jsonl").read_bytes(),
        "data/validation-00000-of-00001.jsonl": (DATA / "tiny" / "eval.jsonl").read_bytes(),
    })
    return cache


def test_hub_model_and_data_offline_train_and_resume(tmp_path, reference, hub_cache):
    """`model.pretrained: org/name` and `hf://datasets/org/name` (train split for data.train, validation
    for data.eval) with HF_HUB_OFFLINE=1; a node killed in step 7 restarts from step 4 with the same losses."""
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(hub_cache), "HF_HOME": str(tmp_path / "hf-home")}
    job = tiny_job(tmp_path, model=pretrained(MODEL_ID), run={**RUN, "max_restarts": 1},
                   data={"train": f"hf://datasets/{DATA_ID}", "eval": f"hf://datasets/{DATA_ID}"})
    result = run_cli(tmp_path, str(job), *PROCS, failpoints="step@7:rank=0:stop", env=env)
    assert result.returncode == 0, result.log[-6000:]
    assert result.attempts() == [0, 4]
    assert "data.train: hf://datasets/llmlaunch-test/tiny-facts at" in result.log and "split-train" in result.log
    assert "split-validation" in result.log
    assert_same_training(tmp_path / "out", reference, range(1, 13))


def test_s3_data_and_a_mirror_resume_after_the_output_directory_is_lost(tmp_path, reference, model_dir):
    """Training data under an s3:// prefix (two objects), eval data one s3:// object, checkpoints mirrored.
    The node dies in step 7 (the step-4 checkpoint is mirrored), the whole output directory is deleted,
    and the next start resumes from the mirror alone, ending as the uninterrupted run did."""
    with moto_server(tmp_path) as endpoint:
        env = s3_env(endpoint, tmp_path)
        fs = s3(endpoint, tmp_path)
        fs.mkdir("llmlaunch-data")
        fs.mkdir("llmlaunch-ckpt")
        lines = (DATA / "tiny" / "train.jsonl").read_bytes().splitlines(keepends=True)
        fs.pipe("llmlaunch-data/tiny/train/part-0.jsonl", b"".join(lines[:2000]))
        fs.pipe("llmlaunch-data/tiny/train/part-1.jsonl", b"".join(lines[2000:]))
        fs.pipe("llmlaunch-data/tiny/eval.jsonl", (DATA / "tiny" / "eval.jsonl").read_bytes())
        job = tiny_job(tmp_path, model=pretrained(str(model_dir)),
                       data={"train": "s3://llmlaunch-data/tiny/train", "eval": "s3://llmlaunch-data/tiny/eval.jsonl"},
                       run={**RUN, "keep_last": 2, "checkpoint_mirror": "s3://llmlaunch-ckpt/runs/t"})

        killed = run_cli(tmp_path, str(job), *PROCS, failpoints="step@7:rank=0:stop", env=env)
        assert killed.returncode != 0 and killed.attempts() == [0]
        assert "data.train: s3://llmlaunch-data/tiny/train ->" in killed.log
        # Both ranks copy under one lock: rank 0 logs 2 of 2, or 0 of 2 when rank 1 was first.
        assert re.search(r"\((2|0) of 2 objects downloaded, 0 removed\)", killed.log)
        assert "checkpoint step-000004 mirrored to s3://llmlaunch-ckpt/runs/t" in killed.log
        assert sorted(p.rsplit("/", 1)[-1] for p in fs.ls("llmlaunch-ckpt/runs/t")) == ["step-000004"]
        marker = json.loads(fs.cat("llmlaunch-ckpt/runs/t/step-000004/COMPLETE"))
        step_dir = "llmlaunch-ckpt/runs/t/step-000004"
        mirrored = {p.removeprefix(f"{step_dir}/") for p in fs.find(step_dir)}
        assert mirrored == set(marker["files"]) | {"COMPLETE"}

        shutil.rmtree(tmp_path / "out")
        (tmp_path / "second").mkdir()  # a failpoint directory of its own: the first run's marker stays behind
        resumed = run_cli(tmp_path / "second", str(job), *PROCS, env=env)
        assert resumed.returncode == 0, resumed.log[-6000:]
        assert "no local checkpoint; pulled step-000004 from the mirror s3://llmlaunch-ckpt/runs/t" in resumed.log
        assert resumed.attempts() == [4]
        assert_same_training(tmp_path / "out", reference, range(5, 13))
        # pruned as the local directory is: keep_last 2 of 4, 8, 12
        assert sorted(p.rsplit("/", 1)[-1] for p in fs.ls("llmlaunch-ckpt/runs/t")) == [
            "step-000008", "step-000012"]
        assert fs.exists("llmlaunch-ckpt/runs/t/step-000012/COMPLETE")
