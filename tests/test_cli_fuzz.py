"""Bad input never crashes the CLI (hypothesis): random job files, --set values and arguments given to
validate / render / train end in success or in `error:` lines with exit code 2; never a traceback,
and nothing is written to the output directory when the input is refused.

`train` is stopped where it would start the torchrun agents (LocalNodes.run): the input handling is
what is tested here, the real training runs are in test_train_distributed.py and test_resilience.py.
"""

from __future__ import annotations

import contextlib
import copy
import os
import tempfile
from pathlib import Path
from unittest import mock

import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from launcher.cli import cli
from launcher.local_nodes import LocalNodes
from trainjobs import DATA, TINY_MODEL

BASE = {
    "name": "fuzz",
    "cluster": {"nodes": 1, "gpus_per_node": 0},
    "train": {
        "model": {"config": TINY_MODEL, "tokenizer": str(DATA / "tokenizer")},
        "data": {"train": str(DATA / "tiny" / "train.jsonl"), "seq_len": 64},
        "optim": {"lr": 3e-3},
        "run": {"output_dir": "OUT", "max_steps": 4, "micro_batch_size": 2, "save_every": 2},
        "deepspeed": {"preset": "zero2"},
        "metrics": {"enabled": False},
    },
}


def key_paths(node: dict, prefix: tuple = ()) -> list[tuple]:
    paths = []
    for key, value in node.items():
        paths.append((*prefix, key))
        if isinstance(value, dict):
            paths += key_paths(value, (*prefix, key))
    return paths


PATHS = key_paths(BASE)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=12), st.sampled_from(["zero3", "lora", "auto", "fp16", "-1", "1e-3", "/no/such"]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                      max_leaves=6)
paths = st.sampled_from(PATHS) | st.lists(st.text(min_size=1, max_size=6), min_size=1, max_size=4).map(tuple)


@st.composite
def job_documents(draw) -> str:
    """A job file: the valid base with random keys replaced, deleted or added, or any text at all."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.text(max_size=80))
    doc = copy.deepcopy(BASE)
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 1, 2, 3]))):
        path = draw(paths)
        node = doc
        for part in path[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        if draw(st.booleans()) and path[-1] in node:
            del node[path[-1]]
        else:
            node[path[-1]] = draw(values)
    return yaml.safe_dump(doc, sort_keys=False)


set_values = st.one_of(
    st.sampled_from(["train.optim.lr=1e-4", "train.run.max_steps=2", "cluster.nodes=2", "train.method.kind=lora",
                     "train.deepspeed.preset=zero3", "train.run.max_restarts=0", "train.run.hang_timeout_s=60"]),
    st.tuples(paths, values).map(lambda kv: f"{'.'.join(map(str, kv[0]))}={yaml.safe_dump(kv[1]).strip()}"),
    st.text(max_size=30),
)
counts = st.one_of(st.integers(-2, 3).map(str), st.text(max_size=4))


@st.composite
def invocations(draw) -> tuple[str, list[str]]:
    command = draw(st.sampled_from(sorted({"validate", "train", "render"} & set(cli.commands))))
    args = []
    for value in draw(st.lists(set_values, max_size=3)):
        args += ["--set", value]
    if command == "train":
        for flag in draw(st.lists(st.sampled_from(["--nodes", "--nproc-per-node"]), max_size=2, unique=True)):
            args += [flag, draw(counts)]
    if command == "render":
        for flag in draw(st.lists(st.sampled_from(["--nodes", "--gpus-per-node", "--image", "--namespace"]),
                                  max_size=2, unique=True)):
            args += [flag, draw(counts | st.text(max_size=10))]
    if draw(st.integers(0, 9)) == 0:
        args.insert(draw(st.integers(0, len(args))), draw(st.sampled_from(["--bogus", "-x", "--set", "--", "-"])))
    return command, args


VALID = yaml.safe_dump(BASE, sort_keys=False)


@settings(max_examples=int(os.environ.get("LLMLAUNCH_FUZZ_EXAMPLES", 300)), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@example(document=VALID, invocation=("validate", []), with_file=True)
@example(document=VALID, invocation=("train", ["--nodes", "2", "--set", "train.run.max_restarts=1"]), with_file=True)
@example(document=VALID, invocation=("render", ["--nodes", "2"]), with_file=True)
@given(document=job_documents(), invocation=invocations(), with_file=st.sampled_from([True, True, True, False]))
def test_bad_input_ends_in_one_line_errors_with_exit_2_and_writes_nothing(document, invocation, with_file):
    command, args = invocation
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        out, rendered = tmp / "out", tmp / "rendered"
        job = tmp / "job.yaml"
        job.write_text(document.replace("OUT", str(out)))
        argv = [command, str(job) if with_file else str(tmp / "missing.yaml"), *args]
        if command == "render":
            argv += ["-o", str(rendered)]
        if command == "train":  # wherever the fuzzed job points output_dir, a run writes under tmp
            argv += ["--output-dir", str(out)]
        started = []
        with mock.patch.object(LocalNodes, "run", lambda self: started.append(self) or 0), \
                mock.patch.dict(os.environ, {"LLMLAUNCH_FORCE_CPU": "1"}), contextlib.chdir(tmp):
            result = CliRunner().invoke(cli, argv)
        assert result.exception is None or isinstance(result.exception, SystemExit), (argv, result.output)
        assert "Traceback" not in result.output + result.stderr
        assert result.exit_code in (0, 2), (argv, result.exit_code, result.output)
        event(f"{command} exit {result.exit_code}")
        if result.exit_code == 2:
            lines = result.stderr.splitlines()
            assert lines and all(line.startswith("error: ") for line in lines), (argv, result.stderr)
            assert sorted(os.listdir(tmp)) == ["job.yaml"], argv  # nothing written
            assert not started
        elif command == "train":
            assert len(started) == 1 and (out / "train.yaml").is_file()
