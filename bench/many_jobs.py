"""Wall time of `llmlaunch list` and `llmlaunch status JOB` in a namespace of 30, then 300 llmlaunch jobs.

Starts its own etcd + kube-apiserver 1.20 (tests/fixtures/control_plane.py's running_control_plane, the tests'
own), creates 50 PyTorchJobs of another team, then the llmlaunch jobs as `llmlaunch submit` creates them,
suspended (tests/bulk_jobs.py), and times the CLI as a user runs it: a fresh process, median of N runs,
list and status interleaved. Also `list` in an empty namespace (what any list costs: start-up, discovery).
The apiserver's request counter (GET /metrics) says how many LIST requests one `list` made per kind.
Target (issue: a namespace with hundreds of jobs): list at 300 jobs within 2x of list at 30.
Prints one JSON line.   Usage: python bench/many_jobs.py [--runs 7]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # this checkout's launcher, and the tests' helpers

import bulk_jobs as bulk  # noqa: E402
from launcher.spec.names import jobs_selector  # noqa: E402
from tests.fixtures.control_plane import ControlPlane, running_control_plane  # noqa: E402

SMALL, LARGE, FOREIGN = 30, 300, 50
TARGET_RATIO = 2.0


def cli(plane: ControlPlane, *args: str) -> list[str]:
    return [sys.executable, "-m", "launcher.cli", *args, "--kubeconfig", str(plane.kubeconfig)]


def timed(cmd: list[str]) -> float:
    # As installed: byte-compiled modules, whatever this shell says.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"} | {"PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    # No timeout=: with one, wait() polls in steps of up to 50 ms, which would round every time up.
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def list_as_the_server_saw_it(plane: ControlPlane, ns: str, expected: int) -> dict:
    """What one `llmlaunch list` asked of the apiserver, by the apiserver's own metrics: LIST requests per kind
    and the seconds it spent serving the PyTorchJob list. Checks that it showed the jobs."""
    kinds = ("pytorchjobs", "trainjobs")
    before = {k: bulk.request_count(plane, "LIST", k) for k in kinds}
    served = bulk.request_seconds(plane, "LIST", "pytorchjobs")
    out = subprocess.run(cli(plane, "list", "-n", ns, "-o", "json"), cwd=ROOT, capture_output=True, text=True,
                         check=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    shown = json.loads(out.stdout)
    if len(shown) != expected or any(r["state"] != "Suspended" for r in shown):
        raise SystemExit(f"llmlaunch list showed {len(shown)} jobs, expected {expected} Suspended ones")
    return {"list_requests": {k: bulk.request_count(plane, "LIST", k) - before[k] for k in kinds},
            "apiserver_pytorchjobs_list_s": round(bulk.request_seconds(plane, "LIST", "pytorchjobs") - served, 4)}


def measure(plane: ControlPlane, ns: str, empty_ns: str, count: int, runs: int) -> dict:
    listing, status, empty = (cli(plane, "list", "-n", ns, "-o", "json"),
                              cli(plane, "status", f"job-{count // 2:04d}", "-n", ns, "-o", "json"),
                              cli(plane, "list", "-n", empty_ns, "-o", "json"))
    for cmd in (listing, status, empty):
        timed(cmd)  # warm the page cache and the apiserver
    times: dict[str, list[float]] = {"list": [], "status": [], "empty": []}
    for _ in range(runs):  # interleaved, so a burst of load from elsewhere hits every command alike
        for key, cmd in (("list", listing), ("status", status), ("empty", empty)):
            times[key].append(timed(cmd))
    return {"list_median_s": round(statistics.median(times["list"]), 4),
            "list_min_s": round(min(times["list"]), 4),
            "status_median_s": round(statistics.median(times["status"]), 4),
            "list_empty_namespace_median_s": round(statistics.median(times["empty"]), 4),
            **list_as_the_server_saw_it(plane, ns, count)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="many-jobs-") as tmp, running_control_plane(Path(tmp)) as plane:
        ns, empty_ns = plane.create_namespace("many"), plane.create_namespace("empty")
        bulk.create_foreign(plane, ns, FOREIGN)
        bulk.submit_suspended(plane, ns, bulk.job_names(0, SMALL))
        small = measure(plane, ns, empty_ns, SMALL, args.runs)
        middle = time.perf_counter()
        bulk.submit_suspended(plane, ns, bulk.job_names(SMALL, LARGE))
        submit_s = time.perf_counter() - middle
        large = measure(plane, ns, empty_ns, LARGE, args.runs)
        listed = plane.api("GET", f"{bulk.PYTORCHJOBS.format(ns=ns)}?labelSelector={jobs_selector()}")
        list_bytes = len(json.dumps(listed))  # the JSON the one LIST request returns (as compact JSON)
    ratio = large["list_median_s"] / small["list_median_s"]
    print(json.dumps({
        "bench": "many_jobs",
        "runs": args.runs,
        "foreign_jobs": FOREIGN,
        f"at_{SMALL}": small,
        f"at_{LARGE}": large,
        "list_ratio_300_to_30": round(ratio, 3),
        "status_ratio_300_to_30": round(large["status_median_s"] / small["status_median_s"], 3),
        f"list_response_bytes_at_{LARGE}": list_bytes,
        "target_ratio": TARGET_RATIO,
        "meets_target": ratio <= TARGET_RATIO,
        f"submit_{LARGE - SMALL}_jobs_s": round(submit_s, 1),
        "submit_workers": bulk.WORKERS,
        "cpu_count": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }))


if __name__ == "__main__":
    main()
