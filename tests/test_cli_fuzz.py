"""Bad input never crashes the CLI (hypothesis, in-process through click's CliRunner):

- whole job files derived from the job file's JSON schema (tests/job_fuzz.py): `validate`, `render` and
  `values` each accept the file (exit 0) or refuse it with `error:` lines (one per problem) and exit 2,
  never a traceback, each in under 5 s, and all three agree (validate passing means render and values
  accept the file);
  a file holding a change its schema certainly forbids is refused (exit 2), each such key named;
- every valid job with one change its schema forbids (all of them, not a sample): refused by validate
  with exactly one line naming the key, exit 2;
- command lines (--set, flags, missing files) to validate / render / train: input that is certainly
  wrong exits 2; nothing is written when the input is refused.

`train` is stopped where it would start the torchrun agents (LocalNodes.run): the input handling is
what is tested here, the real training runs are in test_train_distributed.py and test_resilience.py.
LLMLAUNCH_FUZZ_EXAMPLES scales every test (bench/fuzz_job_file.py runs thousands).
"""

from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path
from unittest import mock

import pytest
import yaml
from hypothesis import HealthCheck, Phase, event, example, given, settings
from hypothesis import strategies as st

from fuzz_checks import check_document, check_invalid, run_cli, write_job
from job_fuzz import BASE, DELETE, UNKNOWN_KEY, documents, full_base
from launcher.local.nodes import LocalNodes

PINNED = Path(__file__).resolve().parent / "golden" / "invalid-changes.txt"
SCALE = float(os.environ.get("LLMLAUNCH_FUZZ_EXAMPLES", 300)) / 300


def fuzz_settings(examples: int):
    return settings(max_examples=max(1, int(examples * SCALE)), deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
                    phases=[Phase.explicit, Phase.generate, Phase.shrink])


@pytest.mark.slow
@fuzz_settings(200)
@example(case=(BASE, ()))
@example(case=(full_base(), ()))
@given(case=documents())
def test_schema_derived_job_files_are_accepted_or_refused_line_by_line(case):
    doc, broken = case
    outcomes, faults = check_document(doc, broken)
    assert faults == [], faults
    event(f"validate exit {outcomes['validate'].code}{' (certainly invalid)' if broken else ''}")


@pytest.mark.slow
def test_every_change_the_schema_forbids_is_refused_in_one_line_naming_the_key():
    """Each of the ~770 single changes, not a sample: a bound, enum or closed section that stops being
    enforced is caught on every run (about 10 ms a change)."""
    from job_fuzz import apply_change, invalid_changes

    faults = [fault for change in invalid_changes() for fault in check_invalid(apply_change(change))[1]]
    assert faults == [], faults[:10]


def shown(value) -> str:
    """A change's value in the pinned list (a bound moved moves it)."""
    if value is DELETE:
        return "deleted"
    return f"a string of {len(value)} characters" if isinstance(value, str) and len(value) > 24 else repr(value)


def test_the_invalid_changes_are_the_pinned_ones():
    """The changes are derived from the schema, so a bound, enum or closed section dropped or moved in the models
    would drop or move its change too and the test above would still pass: the list is pinned in
    tests/golden/invalid-changes.txt. Regenerate after an intended change: LLMLAUNCH_UPDATE_GOLDEN=1."""
    from job_fuzz import invalid_changes

    text = "".join(f"{'.'.join(path)}: {what}: {shown(value)}\n" for path, value, what in invalid_changes())
    if os.environ.get("LLMLAUNCH_UPDATE_GOLDEN") == "1":
        PINNED.write_text(text)
    pinned = PINNED.read_text().splitlines()
    assert [line for line in pinned if line not in text.splitlines()] == [], "the schema no longer forbids these"
    assert text == PINNED.read_text(), f"new changes the schema forbids: regenerate {PINNED} (see the docstring)"


def test_the_invalid_changes_cover_the_whole_schema():
    """Every section's keys are reached, not only those of an example (a check on job_fuzz itself)."""
    from job_fuzz import invalid_changes

    keys = {".".join(path) for path, _, _ in invalid_changes()}
    for key in ["name", "cluster.network.metrics_from.pod_selector", "cluster.run_policy.backoff_limit",
                "cluster.security.run_as_user", "train.run.hang_timeout_s", "train.method.lora.r",
                "train.optim.betas", f"cluster.storage.{UNKNOWN_KEY}", "train.deepspeed.preset"]:
        assert key in keys, key
    assert len(keys) > 120


# ---- command lines --------------------------------------------------------------------------------------

VALID = yaml.safe_dump(BASE, sort_keys=False)
KNOWN_SETS = ["train.optim.lr=1e-4", "train.run.max_steps=2", "cluster.nodes=2", "train.method.kind=lora",
              "train.deepspeed.preset=zero3", "train.run.max_restarts=0", "train.run.hang_timeout_s=60"]
text_docs = st.text(max_size=80).filter(lambda t: "train" not in t)  # no job without its required train key
counts = st.one_of(st.integers(-2, 3).map(str), st.text(max_size=4))


@st.composite
def invocations(draw) -> tuple[str, list[str], bool]:
    """(command, arguments, certainly wrong): flags and --set values, some of them certainly wrong."""
    command = draw(st.sampled_from(["validate", "train", "render"]))
    args, wrong = [], False
    for _ in range(draw(st.integers(0, 2))):
        value = draw(st.sampled_from(KNOWN_SETS) | st.text(max_size=30))
        wrong |= "=" not in value  # KEY.PATH=VALUE
        args += ["--set", value]
    flags = {"train": ["--nodes", "--nproc-per-node"], "render": ["--nodes", "--gpus-per-node", "--namespace"]}
    for flag in draw(st.lists(st.sampled_from(flags.get(command, ["--nodes"])), max_size=2, unique=True)):
        value = draw(counts)
        wrong |= command == "validate" or flag in ("--nodes", "--nproc-per-node", "--gpus-per-node") and not (
            value.strip().isdigit() and (int(value) >= 1 or flag == "--gpus-per-node"))
        args += [flag, value]
    if draw(st.integers(0, 5)) == 0:  # an unknown option (or, after --, an extra argument)
        args.insert(draw(st.integers(0, len(args))), draw(st.sampled_from(["--bogus", "-x"])))
        wrong = True
    return command, args, wrong


@fuzz_settings(100)
@example(document=VALID, invocation=("validate", [], False), with_file=True)
@example(document=VALID, invocation=("train", ["--nodes", "2", "--set", "train.run.max_restarts=1"], False),
         with_file=True)
@example(document=VALID, invocation=("render", ["--nodes", "2"], False), with_file=True)
@example(document=VALID, invocation=("validate", ["--set", "cluster.nodes"], True), with_file=True)
@given(document=st.one_of(st.just(VALID), st.just(VALID), text_docs), invocation=invocations(),
       with_file=st.sampled_from([True] * 3 + [False]))
def test_command_lines_that_are_wrong_exit_2_and_write_nothing(document, invocation, with_file):
    command, args, wrong = invocation
    wrong |= document != VALID or not with_file
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        out, rendered = tmp / "out", tmp / "rendered"
        job = write_job(document, tmp)
        argv = [command, str(job) if with_file else str(tmp / "missing.yaml"), *args]
        if command == "render":
            argv += ["-o", str(rendered)]
        if command == "train":  # wherever the fuzzed job points output_dir, a run writes under tmp
            argv += ["--output-dir", str(out)]
        started = []
        with mock.patch.object(LocalNodes, "run", lambda self: started.append(self) or 0), \
                mock.patch.dict(os.environ, {"LLMLAUNCH_FORCE_CPU": "1"}):
            outcome = run_cli(argv, tmp)
        assert outcome.faults() == [], (argv, outcome)
        code = outcome.code
        event(f"{command} exit {code}{' (wrong input)' if wrong else ''}")
        if wrong:
            assert code == 2, (argv, "accepted")
        if code == 2:
            assert sorted(os.listdir(tmp)) == ["job.yaml"], argv  # nothing written
            assert not started
        elif command == "train":
            assert len(started) == 1 and (out / "train.yaml").is_file()


def test_the_base_job_is_valid_and_each_wrong_change_is_caught():
    """The properties above are not vacuous: the base passes every command; one wrong value does not."""
    def codes(doc):
        outcomes, faults = check_document(doc)
        assert faults == []
        return {command: outcome.code for command, outcome in outcomes.items()}

    assert codes(copy.deepcopy(BASE)) == {"validate": 0, "render": 0, "values": 0}
    broken = full_base()
    broken["cluster"]["nodes"] = "fuzz?"
    assert codes(broken) == {"validate": 2, "render": 2, "values": 2}
    base = full_base()
    assert check_invalid((base, "cluster.nodes", "nothing"))[1] == ["cluster.nodes (nothing): accepted"]


def test_what_the_fuzzing_found_stays_fixed():
    """true is no number (pydantic reads it as 1), a union key fails in one line, not one per member, and a
    path with a NUL character (bench/fuzz_job_file.py: validate crashed resolving it) is refused."""
    for key, value in [("cluster.nodes", True), ("cluster.security.run_as_user", False), ("train.optim.lr", True),
                       ("train.run.max_steps", True), ("train.method.lora.target_modules", 7),
                       ("train.data.train", "data\x00.jsonl"), ("train.data.eval", "e\x00"),
                       ("train.data.cache_dir", "c\x00"), ("train.model.tokenizer", "t\x00"),
                       ("train.run.output_dir", "/o\x00")]:
        doc = full_base()
        *parents, last = key.split(".")
        node = doc
        for part in parents:
            node = node[part]
        node[last] = value
        assert check_invalid((doc, key, "found by fuzzing"))[1] == [], key
