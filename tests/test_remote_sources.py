"""Remote sources without training: the S3 copy against a real S3 server on loopback (moto's server mode),
hub names against an HF cache the test writes (HF_HUB_OFFLINE=1, no network), one-line errors (exit 2
from `llmlaunch train`), and AWS credentials only through cluster.secrets."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from launcher.estimate.model_shape import shape_of
from launcher.render import manifests
from launcher.spec.load import load_job
from remote_fixtures import add_to_hub_cache, moto_server, s3, s3_env
from trainer.checkpoints.mirror import Mirror, MirrorError
from trainer.config.train_config import ConfigError, TrainConfig
from trainer.data.remote_sources import DATA_SUFFIXES, local_source, split_files
from trainer.storage import object_store
from trainjobs import REPO, TINY_MODEL, llmlaunch, tiny_job


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("s3")
    with moto_server(tmp) as endpoint:
        yield endpoint, tmp


@pytest.fixture
def s3_environment(s3_server, monkeypatch):
    endpoint, tmp = s3_server
    for name, value in s3_env(endpoint, tmp).items():
        monkeypatch.setenv(name, value)
    return s3(endpoint, tmp)


@pytest.mark.s3
def test_s3_prefix_is_copied_once_and_then_only_what_changed(tmp_path, s3_environment):
    fs = s3_environment
    fs.mkdir("copy-test")
    fs.pipe("copy-test/corpus/a.jsonl", b'{"text": "one"}\n')
    fs.pipe("copy-test/corpus/sub/b.jsonl", b'{"text": "two"}\n')
    fs.pipe("copy-test/corpus/notes.md", b"not data")
    local = object_store.materialize("s3://copy-test/corpus", "data.train", tmp_path, DATA_SUFFIXES)
    assert local == tmp_path / "s3" / "copy-test" / "corpus"
    copied = sorted(p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file())
    assert copied == ["a.jsonl", "sub/b.jsonl"]
    inodes = {p.name: p.stat().st_ino for p in local.rglob("*.jsonl")}

    again = object_store.materialize("s3://copy-test/corpus", "data.train", tmp_path, DATA_SUFFIXES)  # a restart
    assert {p.name: p.stat().st_ino for p in again.rglob("*.jsonl")} == inodes  # nothing written again

    fs.pipe("copy-test/corpus/sub/b.jsonl", b'{"text": "two, edited"}\n')
    fs.rm("copy-test/corpus/a.jsonl")
    fs.pipe("copy-test/corpus/c.jsonl", b'{"text": "three"}\n')
    object_store.materialize("s3://copy-test/corpus", "data.train", tmp_path, DATA_SUFFIXES)
    assert sorted(p.name for p in local.rglob("*.jsonl")) == ["b.jsonl", "c.jsonl"]  # a.jsonl gone with its object
    assert (local / "sub" / "b.jsonl").read_bytes() == b'{"text": "two, edited"}\n'

    # one object, through the trainer's single entry point
    fs.pipe("copy-test/one.jsonl", b'{"text": "solo"}\n')
    single = local_source("s3://copy-test/one.jsonl", "data.eval", tmp_path)
    assert single == str(tmp_path / "remote" / "s3" / "copy-test" / "one.jsonl")


@pytest.mark.s3
def test_the_mirror_holds_what_the_local_directory_holds_and_pulls_only_complete_checkpoints(tmp_path, s3_environment):
    fs = s3_environment
    fs.mkdir("mirror-test")
    root = tmp_path / "checkpoints"

    def checkpoint(step: int) -> Path:
        folder = root / f"step-{step:06d}"
        (folder / "shards").mkdir(parents=True)
        (folder / "shards" / "w.pt").write_bytes(bytes([step]) * 100)
        (folder / "COMPLETE").write_text(json.dumps({"step": step}))
        return folder

    mirror = Mirror("s3://mirror-test/run")
    assert mirror.pull_newest(tmp_path / "nothing-yet") is None
    mirror.push(root, checkpoint(4))
    mirror.push(root, checkpoint(8))
    fs.pipe("mirror-test/run/step-000012/shards/w.pt", b"cut short")  # an upload that never reached COMPLETE
    assert mirror.complete_steps() == ["step-000004", "step-000008"]
    restored = tmp_path / "restored"
    restored.mkdir()
    pulled = mirror.pull_newest(restored)
    assert pulled == restored / "step-000008" and (pulled / "COMPLETE").is_file()
    assert (pulled / "shards" / "w.pt").read_bytes() == bytes([8]) * 100
    assert sorted(p.name for p in restored.iterdir()) == ["step-000008"]  # no temporary folder left

    shutil.rmtree(root / "step-000004")  # pruned locally
    mirror.push(root, checkpoint(16))
    assert mirror.steps() == ["step-000008", "step-000016"]  # the pruned one and the cut-short upload are gone


def test_split_files_are_found_by_name_as_datasets_finds_them():
    assert split_files(["data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet",
                        "data/validation-00000-of-00001.parquet"]) == {
        "train": ["data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet"],
        "validation": ["data/validation-00000-of-00001.parquet"]}
    assert split_files(["train.jsonl", "test.jsonl"]) == {"train": ["train.jsonl"], "test": ["test.jsonl"]}
    assert split_files(["train/a.jsonl", "dev/b.jsonl"]) == {"train": ["train/a.jsonl"], "validation": ["dev/b.jsonl"]}
    assert split_files(["corpus.jsonl", "more/x.txt"]) == {"train": ["corpus.jsonl", "more/x.txt"]}
    # '*' stays inside a folder: a file under a folder named like a split file is not that split
    assert split_files(["x/train-1/ok.jsonl"]) == {"train": ["x/train-1/ok.jsonl"]}


def test_hub_data_selects_the_split_or_the_path(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    commit = add_to_hub_cache(cache, "dataset", "org/set", {
        "README.md": b"---\n---\n", "data/train-00000-of-00001.jsonl": b'{"text": "a"}\n',
        "data/test-00000-of-00001.jsonl": b'{"text": "b"}\n', "extra/more.jsonl": b'{"text": "c"}\n'})
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))

    def linked(url, split="train"):
        folder = local_source(url, "data.train", tmp_path / "cache", split)
        return sorted(p.relative_to(folder).as_posix() for p in Path(folder).rglob("*.jsonl"))

    assert linked("hf://datasets/org/set") == ["data/train-00000-of-00001.jsonl"]
    assert linked("hf://datasets/org/set", "eval") == ["data/test-00000-of-00001.jsonl"]  # no validation: test
    assert linked("hf://datasets/org/set/extra") == ["extra/more.jsonl"]
    assert linked(f"hf://datasets/org/set@{commit}/data/*.jsonl") == ["data/test-00000-of-00001.jsonl",
                                                                      "data/train-00000-of-00001.jsonl"]
    with pytest.raises(ConfigError, match=r"^data.train: hf://datasets/org/set/nothing: no .* files match 'nothing'"):
        local_source("hf://datasets/org/set/nothing", "data.train", tmp_path / "cache")
    with pytest.raises(ConfigError, match=r"^data.train: hf://datasets/org/gone is not in the Hugging Face cache"):
        local_source("hf://datasets/org/gone", "data.train", tmp_path / "cache")


def test_a_hub_model_id_is_read_from_the_cache_for_its_limits(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    add_to_hub_cache(cache, "model", "org/tiny", {"config.json": json.dumps(TINY_MODEL).encode()})
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    train = json.loads(json.dumps(yaml_train(tmp_path)))
    train["model"] = {"pretrained": "org/tiny"}
    train["data"]["seq_len"] = 256
    with pytest.raises(ValueError,
                       match=r"data.seq_len 256 is above the model's limit \(max_position_embeddings 128\)"):
        TrainConfig.model_validate(train)
    train["data"]["seq_len"] = 64
    shape = shape_of(TrainConfig.model_validate(train))  # llmlaunch estimate sizes it from the cache too
    assert (shape.hidden, shape.layers, shape.vocab) == (64, 2, 512)


def yaml_train(tmp_path) -> dict:
    import yaml

    return yaml.safe_load(tiny_job(tmp_path).read_text())["train"]


def one_error(result: subprocess.CompletedProcess) -> str:
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1, (result.returncode, result.stderr[-3000:])
    return errors[0]


@pytest.mark.s3
@pytest.mark.training
def test_bad_remote_inputs_fail_in_one_line_naming_the_key(tmp_path, s3_server):
    endpoint, s3_tmp = s3_server
    fs = s3(endpoint, s3_tmp)
    fs.mkdir("errors-test")
    fs.pipe("errors-test/train.jsonl", b'{"text": "a"}\n')
    env = {**s3_env(endpoint, s3_tmp), "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "empty-hub")}
    cases = [
        ({"data": {"train": "s3://no-such-bucket-here/x.jsonl"}},
         "error: train.data.train: s3://no-such-bucket-here/x.jsonl: no such bucket 'no-such-bucket-here'"),
        ({"data": {"train": "s3://errors-test/missing.jsonl"}},
         "error: train.data.train: s3://errors-test/missing.jsonl: no such object or prefix"),
        ({"data": {"train": "s3://errors-test/train.jsonl"}, "run": {"checkpoint_mirror": "s3://no-mirror-bucket/run"}},
         "error: train.run.checkpoint_mirror: s3://no-mirror-bucket/run: no such bucket 'no-mirror-bucket'"),
        ({"data": {"train": "hf://datasets/org/not-cached"}},
         "error: train.data.train: hf://datasets/org/not-cached is not in the Hugging Face cache"),
        ({"model": {"pretrained": "org/not-cached-model", "config": None, "tokenizer": None}},
         "error: train.model.pretrained: org/not-cached-model is not in the Hugging Face cache"),
        ({"data": {"train": "gs://bucket/x.jsonl"}},
         "error: train.data.train: gs://bucket/x.jsonl: unsupported URL scheme gs://"),
    ]
    for i, (sections, expected) in enumerate(cases):
        job = tiny_job(tmp_path, name=f"bad{i}", **sections)
        line = one_error(llmlaunch("train", str(job), "--nproc-per-node", "1", env=env, timeout=120))
        assert line.startswith(expected), (line, expected)


def test_remote_urls_stay_as_written_and_the_cli_stays_light(tmp_path):
    job = tiny_job(tmp_path, data={"train": "s3://bkt/corpus", "eval": "hf://datasets/org/set/eval.jsonl"},
                   run={"checkpoint_mirror": "s3://bkt/runs/a"})
    data = load_job(job, local=True).train.data
    assert (data.train, data.eval) == ("s3://bkt/corpus", "hf://datasets/org/set/eval.jsonl")
    # preflight's remote checks, as the CLI runs them, import neither torch nor any HF library
    code = ("import sys; from trainer.data.remote_sources import check_remote; "
            "print(check_remote('hf://datasets/org/none', 'k')); "
            "print(sorted({m.split('.')[0] for m in sys.modules} "
            "& {'torch', 'transformers', 'datasets', 'huggingface_hub', 's3fs'}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60,
                         env={"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "none")})
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == "[]" and "is not in the Hugging Face cache" in out.stdout


@pytest.mark.parametrize("name", ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"])
def test_aws_credentials_pass_only_through_cluster_secrets(name):
    example = REPO / "examples" / "tiny.yaml"
    with pytest.raises(ConfigError) as refused:
        load_job(example, [f"cluster.env.{name}=abc"], resolve_paths=False)
    assert refused.value.problems == [f"cluster.env: {name} looks like a secret; pass it through cluster.secrets "
                                      "(a secretKeyRef)"]
    spec = load_job(example, [f"cluster.secrets=[{{env: {name}, secret: s3-creds, key: k}}]",
                              "cluster.env.AWS_ENDPOINT_URL=http://minio:9000"], resolve_paths=False)
    objs = manifests.render(spec)
    master = objs[-1]["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    env = {e["name"]: e for e in master["containers"][0]["env"]}
    assert env[name]["valueFrom"] == {"secretKeyRef": {"name": "s3-creds", "key": "k", "optional": False}}
    assert "value" not in env[name]
    assert env["AWS_ENDPOINT_URL"]["value"] == "http://minio:9000"


@pytest.mark.s3
def test_an_object_name_leading_outside_the_copy_is_refused_and_nothing_is_written(tmp_path, s3_environment):
    fs = s3_environment
    fs.mkdir("escape-test")
    fs.pipe("escape-test/corpus/a.jsonl", b'{"text": "one"}\n')
    fs.pipe("escape-test/corpus/../../../escaped.jsonl", b'{"text": "out"}\n')
    assert "escape-test/corpus/../../../escaped.jsonl" in fs.find("escape-test/corpus/")  # the server keeps the name
    root = tmp_path / "cache" / "remote"
    with pytest.raises(ValueError) as refused:
        object_store.materialize("s3://escape-test/corpus", "data.train", root, DATA_SUFFIXES)
    assert str(refused.value) == ("data.train: s3://escape-test/corpus: odd object name "
                                  "'escape-test/corpus/../../../escaped.jsonl'; nothing copied")
    assert [p for p in tmp_path.rglob("*.jsonl")] == []


@pytest.mark.s3
def test_a_fresh_run_keeps_the_newer_mirrored_checkpoints(tmp_path, s3_environment):
    s3_environment.mkdir("newer-test")
    mirror = Mirror("s3://newer-test/run")
    old_run, fresh_run = tmp_path / "old", tmp_path / "fresh"
    mirror.push(old_run, _checkpoint(old_run, 300))
    mirror.push(fresh_run, _checkpoint(fresh_run, 100))  # resume: false, same mirror
    assert mirror.complete_steps() == ["step-000100", "step-000300"]
    shutil.rmtree(fresh_run / "step-000100")  # pruned locally: the next push drops it from the mirror too
    mirror.push(fresh_run, _checkpoint(fresh_run, 200))
    assert mirror.complete_steps() == ["step-000200", "step-000300"]


@pytest.mark.s3
def test_a_step_pushed_again_and_cut_short_is_not_complete(tmp_path, s3_environment, monkeypatch):
    s3_environment.mkdir("repush-test")
    mirror = Mirror("s3://repush-test/run")
    step = _checkpoint(tmp_path, 8)
    mirror.push(tmp_path, step)
    (step / "shards" / "w.pt").write_bytes(b"newer weights")
    upload = mirror.fs.put_file

    def connection_lost_at_the_marker(local, remote, *args, **kwargs):  # the real upload, cut before COMPLETE
        if remote.endswith("/COMPLETE"):
            raise ConnectionError("connection reset")
        return upload(local, remote, *args, **kwargs)

    monkeypatch.setattr(mirror.fs, "put_file", connection_lost_at_the_marker)
    with pytest.raises(MirrorError, match="uploading step-000008/COMPLETE"):
        mirror.push(tmp_path, step)
    assert mirror.complete_steps() == []  # the old COMPLETE no longer vouches for the new, partial files


def _checkpoint(root: Path, step: int) -> Path:
    folder = root / f"step-{step:06d}"
    (folder / "shards").mkdir(parents=True)
    (folder / "shards" / "w.pt").write_bytes(step.to_bytes(2, "big") * 50)
    (folder / "COMPLETE").write_text(json.dumps({"step": step}))
    return folder


@pytest.mark.s3
def test_a_bucket_check_says_what_went_wrong(s3_environment, monkeypatch):
    assert object_store.check_bucket("s3://no-bucket-test/run", "k") == [
        "k: s3://no-bucket-test/run: no such bucket 'no-bucket-test'"]
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nobody listens there
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # botocore's retries would only add seconds
    problems = object_store.check_bucket("s3://no-bucket-test/run", "k")
    assert len(problems) == 1 and problems[0].startswith("k: s3://no-bucket-test/run: ")
    assert "no such bucket" not in problems[0] and "127.0.0.1:9" in problems[0], problems


@pytest.mark.parametrize("url,problem", [
    ("s3://AKIA:s3cr3t@bucket/x.jsonl", "s3://***@.../x.jsonl: an s3:// URL holds no credentials"),
    ("s3://AKIA:s3cr3t/x.jsonl", "s3://***@.../x.jsonl: an s3:// URL holds no credentials"),
    ("s3://My_Bucket/x.jsonl", "s3://My_Bucket/x.jsonl: bucket 'My_Bucket' is not an S3 bucket name"),
    ("s3://ab/x.jsonl", "s3://ab/x.jsonl: bucket 'ab' is not an S3 bucket name"),
    ("s3://-bucket/x.jsonl", "bucket '-bucket' is not an S3 bucket name"),
])
def test_a_bucket_name_follows_the_s3_rule_and_a_credential_is_never_echoed(url, problem):
    with pytest.raises(ValueError) as refused:
        object_store.split_url(url)
    assert problem in str(refused.value) and "s3cr3t" not in str(refused.value)
    assert len(str(refused.value).splitlines()) == 1
    assert object_store.split_url("s3://my.bucket-1/a/b.jsonl") == ("my.bucket-1", "a/b.jsonl")


@pytest.mark.s3
def test_a_local_error_while_restoring_takes_the_path_every_rank_hears(tmp_path, s3_environment):
    """An OSError on rank 0 becomes the broadcast failure (here in a 1-process gloo group), not a rank-0 exit
    that would leave the other ranks waiting in the broadcast."""
    import socket

    import torch.distributed as dist

    from trainer.checkpoints.mirror import restore

    s3_environment.mkdir("restore-test")
    mirror = Mirror("s3://restore-test/run")
    mirror.push(tmp_path / "old", _checkpoint(tmp_path / "old", 4))
    not_a_folder = tmp_path / "output-is-a-file"
    not_a_folder.write_text("")  # the pull cannot create its folder there: an OSError
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        with pytest.raises(RuntimeError, match=r"^train.run.checkpoint_mirror: .*output-is-a-file"):
            restore(mirror, not_a_folder, 0)
    finally:
        dist.destroy_process_group()
