"""The CLI's contract on one fuzzed input, checked without asserting (so bench/fuzz_job_file.py can count
what tests/test_cli_fuzz.py asserts): run in-process through click's CliRunner, accepted (exit 0) or
refused (exit 2) with one `error:` line per problem, in under 5 s, never a crash, nothing written, and
validate, render and values agreeing on each file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import tempfile
import time
from pathlib import Path

from trainer import yaml_io

NO_IMAGE = ("error: cluster.image is not set: build the trainer image from the repository's Dockerfile, push it "
            "(docker build -t REGISTRY/llmlaunch-trainer:0.1.0 . && docker push REGISTRY/llmlaunch-trainer:0.1.0; "
            "docs/cluster.md) and set cluster.image or pass --image")


@dataclasses.dataclass
class Outcome:
    code: int
    lines: list[str]  # stderr
    seconds: float
    crash: str | None  # an exception click did not turn into an exit code, or a traceback printed

    def faults(self, limit_s: float = 5.0) -> list[str]:
        """What breaks the CLI's contract: accepted (0) or refused (2) with `error:` lines, fast, no crash."""
        found = [f"crash: {self.crash}"] if self.crash else []
        if self.code not in (0, 2):
            found.append(f"exit code {self.code}")
        one_per_problem = self.lines and all(line.startswith("error: ") and len(line) > 7 for line in self.lines)
        if self.code == 2 and not one_per_problem:
            found.append(f"refused without one error: line per problem: {self.lines[:3]}")
        if self.seconds >= limit_s:
            found.append(f"took {self.seconds:.1f} s")
        return found


def names_key(line: str, key: str) -> bool:
    """Whether an error line is about `key` (or an item of it): `error: KEY: ...` or `error: KEY.1: ...`."""
    return line.startswith((f"error: {key}: ", f"error: {key}."))


def holds_non_finite(value) -> bool:
    if isinstance(value, dict):
        return any(holds_non_finite(v) for v in value.values())
    if isinstance(value, list):
        return any(holds_non_finite(v) for v in value)
    return isinstance(value, float) and not math.isfinite(value)


def run_cli(argv: list[str], cwd: Path) -> Outcome:
    from click.testing import CliRunner

    from launcher.cli import cli

    start = time.perf_counter()
    with contextlib.chdir(cwd):
        result = CliRunner().invoke(cli, argv)
    seconds = time.perf_counter() - start
    crash = None
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        crash = f"{type(result.exception).__name__}: {result.exception}"
    elif "Traceback" in result.output + result.stderr:
        crash = "a traceback was printed"
    return Outcome(result.exit_code, result.stderr.splitlines(), seconds, crash)


def write_job(doc: dict | str, directory: Path) -> Path:
    path = directory / "job.yaml"
    # libyaml's dumper: 5x faster; the same data as safe_dump's text (not always the same text: '': null)
    text = doc if isinstance(doc, str) else yaml_io.dump(doc, sort_keys=False, allow_unicode=False)
    path.write_text(text.replace("OUT", str(directory / "out")))
    return path


def check_document(doc: dict | str, broken: tuple[str, ...] = ()) -> tuple[dict[str, Outcome], list[str]]:
    """validate, render and values on one job file: their outcomes, and what breaks the contract
    (a fault of one command, a file written, render / values disagreeing with validate, or a file with
    `broken` keys, each one the schema certainly forbids, accepted or refused without naming one of them)."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        job = write_job(doc, tmp)
        outcomes = {command: run_cli([command, str(job)], tmp) for command in ("validate", "render", "values")}
        faults = [f"{command}: {fault}" for command, outcome in outcomes.items() for fault in outcome.faults()]
        if sorted(os.listdir(tmp)) != ["job.yaml"]:
            faults.append(f"wrote {sorted(os.listdir(tmp))}")
    valid = outcomes["validate"].code
    for command in ("render", "values"):
        got = outcomes[command]
        # validate accepts a job without an image (train needs none) and says so; the others need one
        if got.code != valid and not (valid == 0 and got.lines == [NO_IMAGE]):
            faults.append(f"{command} exit {got.code} but validate exit {valid}: {got.lines[:2]}")
    if broken and valid != 2:
        faults.append(f"certainly invalid ({', '.join(broken)}) but validate exit {valid}")
    elif valid == 2 and not (isinstance(doc, dict) and holds_non_finite(doc)):
        # (a non-finite number is refused before the schema is read, in one line about it alone)
        lines = outcomes["validate"].lines
        faults += [f"{key} is broken but no error line names it: {lines[:3]}" for key in broken
                   if not any(names_key(line, key) for line in lines)]
    return outcomes, faults


def check_invalid(case: tuple[dict, str, str]) -> tuple[Outcome, list[str]]:
    """validate on a job with one change its schema forbids: refused (2) in one line naming the key."""
    doc, key, what = case
    with tempfile.TemporaryDirectory() as tmp:
        outcome = run_cli(["validate", str(write_job(doc, Path(tmp)))], Path(tmp))
    faults = outcome.faults()
    if outcome.code != 2:
        faults.append(f"{key} ({what}): accepted")
    elif len(outcome.lines) != 1 or not names_key(outcome.lines[0], key):
        faults.append(f"{key} ({what}): not one line naming the key: {outcome.lines[:3]}")
    return outcome, faults
