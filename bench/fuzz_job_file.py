"""Property-based fuzzing of whole job files at scale: what tests/test_cli_fuzz.py asserts on a few
hundred examples, counted over thousands (default 5000 documents).

- documents: the schema-derived job files of tests/job_fuzz.py, each through validate, render and
  values (in-process, click's CliRunner): accepted (exit 0) or refused with one `error:` line per
  problem (exit 2), under 5 s, no crash, nothing written, the three commands agreeing; those with a
  certainly invalid change still in force refused, naming each broken key;
- certainly invalid: a valid job with one change its schema forbids (every such change of the job
  once, then random ones): refused by validate in exactly one line naming the key, exit 2.

Prints one JSON object of counts (and the first faults found); exits 1 if any example broke the
contract.   Usage: python bench/fuzz_job_file.py [--examples 5000] [--seed 0]
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402

from fuzz_checks import check_document, check_invalid  # noqa: E402
from job_fuzz import apply_change, certainly_invalid, documents, invalid_changes  # noqa: E402

KEEP = 10  # faults shown in the report


class Tally:
    def __init__(self) -> None:
        self.counts: collections.Counter = collections.Counter()
        self.faults: list[str] = []
        self.slowest = 0.0

    def add(self, kind: str, outcomes: dict, faults: list[str]) -> None:
        self.counts[f"{kind}_examples"] += 1
        for command, outcome in outcomes.items():
            self.counts[f"{kind}_{command}_exit_{outcome.code}"] += 1
            self.slowest = max(self.slowest, outcome.seconds)
        if faults:
            self.counts[f"{kind}_faulty"] += 1
            self.faults += [f"{kind}: {fault}" for fault in faults][: max(0, KEEP - len(self.faults))]


def run(examples: int, rng_seed: int) -> dict:
    tally = Tally()
    options = dict(deadline=None, database=None, phases=[Phase.generate],  # count every example, no shrinking
                   suppress_health_check=list(HealthCheck))

    @seed(rng_seed)
    @settings(max_examples=examples, **options)
    @given(case=documents())
    def fuzz_documents(case):
        outcomes, faults = check_document(*case)
        tally.add("documents", outcomes, faults)
        tally.counts["documents_certainly_invalid"] += bool(case[1])

    @seed(rng_seed)
    @settings(max_examples=max(1, examples // 5), **options)
    @given(case=certainly_invalid())
    def fuzz_invalid(case):
        outcome, faults = check_invalid(case)
        tally.add("invalid", {"validate": outcome}, faults)

    start = time.perf_counter()
    fuzz_documents()
    # every certainly invalid change once (deterministic), then random ones
    for change in invalid_changes():
        outcome, faults = check_invalid(apply_change(change))
        tally.add("invalid", {"validate": outcome}, faults)
    fuzz_invalid()
    return {
        "examples": tally.counts["documents_examples"] + tally.counts["invalid_examples"],
        "documents": tally.counts["documents_examples"],
        "documents_accepted": tally.counts["documents_validate_exit_0"],
        "documents_refused": tally.counts["documents_validate_exit_2"],
        "documents_certainly_invalid": tally.counts["documents_certainly_invalid"],
        "certainly_invalid": tally.counts["invalid_examples"],
        "certainly_invalid_refused": tally.counts["invalid_validate_exit_2"],
        "distinct_invalid_changes": len(invalid_changes()),
        "faulty": tally.counts["documents_faulty"] + tally.counts["invalid_faulty"],
        "slowest_command_s": round(tally.slowest, 3),
        "wall_s": round(time.perf_counter() - start, 1),
        "per_command": {k: v for k, v in sorted(tally.counts.items()) if "_exit_" in k},
        "faults": tally.faults,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--examples", type=int, default=5000, help="schema-derived documents (and a fifth as many random invalid ones)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    report = run(args.examples, args.seed)
    print(json.dumps(report, indent=1))
    return 1 if report["faulty"] else 0


if __name__ == "__main__":
    sys.exit(main())
