"""Bad input through the real CLI: one line per problem naming the key, exit code 2, nothing written."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from launcher.cli import cli
from trainjobs import REPO, tiny_job


def run(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def assert_usage_error(result, *fragments):
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert lines and all(line.startswith("error: ") for line in lines), result.stderr
    assert "Traceback" not in result.output + result.stderr
    for fragment in fragments:
        assert any(fragment in line for line in lines), (fragment, lines)


def test_validate_ok(tmp_path):
    result = run("validate", str(tiny_job(tmp_path)))
    assert result.exit_code == 0 and ": ok (t, method full, preset zero2)" in result.stdout


def test_missing_job_file(tmp_path):
    assert_usage_error(run("validate", str(tmp_path / "nope.yaml")), "cannot read job file")


def test_not_yaml(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    assert_usage_error(run("validate", str(bad)), "not valid YAML")


def test_job_file_not_utf8(tmp_path):
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(tiny_job(tmp_path).read_bytes() + "# café\n".encode("latin-1"))
    assert_usage_error(run("validate", str(bad)), f"{bad}: not UTF-8 text (byte ")


def test_set_value_with_non_utf8_bytes_is_kept(tmp_path):
    """A path holding bytes that are not UTF-8 reaches Python as lone surrogates; libyaml cannot read
    those, PyYAML's own reader can: the value is taken as it was before libyaml."""
    out = "/tmp/run-\udcff"
    result = run("validate", str(tiny_job(tmp_path)), "--set", f"train.run.output_dir={out}")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    "sections,fragment",
    [
        ({"data": {"train": "/nonexistent/train.jsonl"}},
         "train.data.train: no such file or folder /nonexistent/train.jsonl"),
        ({"data": {"seq_len": 1024}}, "data.seq_len 1024 is above the model's limit"),
        ({"deepspeed": {"preset": "zero7"}}, "train.deepspeed.preset: unknown preset 'zero7'"),
        ({"precision": "fp16"}, "train.precision: fp16 needs a GPU"),
        ({"run": {"global_batch_size": 6}}, "train.run.global_batch_size 6 does not divide into 2 processes"),
        ({"method": {"kind": "lora", "lora": {"merge_on_export": True}}},
         "method.lora.merge_on_export needs model.pretrained"),
    ],
)
def test_train_refuses_bad_input_before_any_process_starts(tmp_path, monkeypatch, sections, fragment):
    monkeypatch.setenv("LLMLAUNCH_FORCE_CPU", "1")
    job = tiny_job(tmp_path, **sections)
    result = run("train", str(job), "--nproc-per-node", "2")
    assert_usage_error(result, fragment)
    assert not (tmp_path / "out").exists()  # nothing written on error


def test_train_refuses_empty_dataset(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMLAUNCH_FORCE_CPU", "1")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    result = run("train", str(tiny_job(tmp_path, data={"train": str(empty)})))
    assert_usage_error(result, "train.data.train: dataset", "is empty")


def test_debug_shows_the_traceback(tmp_path):
    result = CliRunner().invoke(cli, ["--debug", "validate", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2 and "Traceback" in result.stderr


def test_every_command_has_help():
    for name in cli.commands:
        result = run(name, "--help")
        assert result.exit_code == 0 and "Usage:" in result.stdout, name


def test_every_example_validates():
    examples = sorted((REPO / "examples").glob("*.yaml"))
    assert examples
    for example in examples:
        result = run("validate", str(example))
        assert result.exit_code == 0, (example.name, result.stderr)


def test_schema_is_json_schema_of_the_job_file():
    import json

    schema = json.loads(run("schema").stdout)
    assert set(schema["properties"]) == {"name", "cluster", "train"}
    assert "TrainConfig" in schema["$defs"]
