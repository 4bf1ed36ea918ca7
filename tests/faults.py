"""Fault injection for the resilience tests: run `llmlaunch train` and kill -9 local "nodes" at the
moments trainer/failpoints.py freezes a rank (mid-step, while writing a checkpoint, ...)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from trainjobs import REPO


@dataclass
class FaultRun:
    returncode: int
    log: str
    faults: list[dict] = field(default_factory=list)  # failpoint records, with the node killed for each
    seconds: float = 0.0

    def attempts(self) -> list[int]:
        """The step each trainer start resumed from (0: from scratch), in order."""
        starts, pending = [], 0
        for line in self.log.splitlines():
            if m := re.search(r"\[llmlaunch\] resuming from .* \(step (\d+)\)", line):
                pending = int(m.group(1))
            elif "[llmlaunch] full training," in line:
                starts.append(pending)
                pending = 0
        return starts


def kill_node(worker_pid: int) -> int:
    """kill -9 a local node: the torchrun agent that started `worker_pid`, and everything under it,
    at once, as a node that loses power takes all of its processes down. Returns the agent's pid."""
    agent = psutil.Process(worker_pid).parent()
    procs = [agent, *agent.children(recursive=True)]
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.send_signal(signal.SIGKILL)
    return agent.pid


def run_cli(tmp: Path, *args: str, failpoints: str = "", timeout: float = 600, on_progress=None,
            env: dict | None = None) -> FaultRun:
    """Run `llmlaunch train ...`; kill the node of every rank that reaches an armed `stop` failpoint.

    on_progress(proc, out_dir) is polled while the run goes (e.g. to send SIGTERM at some step).
    """
    points = tmp / "failpoints"
    points.mkdir(exist_ok=True)
    full_env = dict(os.environ, PYTHONPATH=str(REPO), LLMLAUNCH_FORCE_CPU="1", LLMLAUNCH_FAILPOINTS=failpoints,
               LLMLAUNCH_FAILPOINT_DIR=str(points), **(env or {}))
    log_path = tmp / f"run-{time.monotonic_ns()}.log"
    start = time.monotonic()
    faults: dict[str, dict] = {}
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "launcher.cli", "train", *args], cwd=REPO, env=full_env,
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            while proc.poll() is None:
                if time.monotonic() - start > timeout:
                    raise TimeoutError(f"llmlaunch train did not finish in {timeout} s; log: {log_path}")
                for marker in sorted(points.glob("*.json")):
                    if marker.name not in faults:
                        record = json.loads(marker.read_text())
                        if record["action"] == "stop":
                            record["killed_agent"] = kill_node(record["pid"])
                        faults[marker.name] = record
                if on_progress is not None:
                    on_progress(proc)
                time.sleep(0.05)
        finally:
            if proc.poll() is None:  # timed out: take the launcher and every node down with it
                for child in psutil.Process(proc.pid).children(recursive=True):
                    with contextlib.suppress(psutil.NoSuchProcess):
                        child.kill()
                proc.kill()
                proc.wait()
    ordered = sorted(faults.values(), key=lambda r: r["time"])
    return FaultRun(proc.returncode, log_path.read_text(), ordered, time.monotonic() - start)
