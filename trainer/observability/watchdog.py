"""A hung rank makes the job fail fast, naming that rank and its node, instead of waiting forever.

The loop calls beat() after every step, eval and checkpoint. A thread per rank watches those beats;
after run.hang_timeout_s without one it tells the others where its main thread is, through the
store every rank already shares (torchrun's TCP store). A rank whose main thread sits in a
collective is waiting for someone; a rank elsewhere, or one that never answers (a frozen process),
is the one holding the group up. The lowest answering rank prints who, then every rank exits, so
torchrun restarts the group (run.max_restarts) or the job fails, instead of waiting forever.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time
import traceback

EXIT_HUNG = 124
COLLECTIVE_CODE = ("torch/distributed/", "deepspeed/comm/")


def main_thread_location() -> tuple[str, bool]:
    """Where the main thread is ("func (file:line), from func (file:line)") and whether it waits in a collective."""
    frame = sys._current_frames().get(threading.main_thread().ident)
    if frame is None:
        return "unknown", False
    stack = traceback.extract_stack(frame)
    waiting = any(any(mark in f.filename for mark in COLLECTIVE_CODE) for f in stack[-4:])
    caller = [f for f in stack if "/trainer/" in f.filename and f.filename != stack[-1].filename]
    shown = [stack[-1], *caller[-1:]]  # the innermost frame, and the trainer code that led there
    return ", from ".join(f"{f.name} ({os.path.basename(f.filename)}:{f.lineno})" for f in shown), waiting


def diagnose(reports: dict[int, dict], infos: dict[int, dict], world_size: int, timeout_s: float) -> str:
    """One line naming the rank(s) holding the group up, from what each rank reported (absent = silent)."""
    silent = [r for r in range(world_size) if r not in reports]
    busy = [r for r, rep in sorted(reports.items()) if not rep["waiting"]]
    culprits = silent + busy
    if not culprits:  # everyone waits in a collective: blame the ranks that are furthest behind
        low = min(rep["step"] for rep in reports.values())
        culprits = [r for r, rep in sorted(reports.items()) if rep["step"] == low]
    parts = []
    for r in sorted(culprits):
        info = infos.get(r, {})
        who = f"rank {r} on node {info.get('node', '?')} (host {info.get('host', '?')}, pid {info.get('pid', '?')})"
        if r in reports:
            rep = reports[r]
            parts.append(f"{who} made no progress for {rep['idle']:.0f} s after step {rep['step']}, "
                         f"in {rep['where']}")
        else:
            parts.append(f"{who} stopped answering (frozen or dead)")
    waiting = [r for r, rep in sorted(reports.items()) if rep["waiting"] and r not in culprits]
    tail = ""
    if waiting:
        tail = f"; {'rank' if len(waiting) == 1 else 'ranks'} {', '.join(map(str, waiting))} " \
               f"{'waits' if len(waiting) == 1 else 'wait'} in a collective"
    return (f"hung: {'; '.join(parts)}{tail}. Stopping every rank (run.hang_timeout_s = {timeout_s:g})")


class Watchdog:
    def __init__(self, rank: int, node: int, world_size: int, timeout_s: float):
        self.rank, self.node, self.world, self.timeout = rank, node, world_size, timeout_s
        self._progress = (time.monotonic(), 0)
        self._stopped = threading.Event()
        restart = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")  # no stale keys from an earlier attempt
        self._prefix = f"llmlaunch/watchdog/{restart}"
        self._store = None

    def start(self, step: int) -> None:
        self.beat(step)
        if self.timeout <= 0:
            return
        try:
            import torch.distributed as dist

            self._store = dist.distributed_c10d._get_default_store()
            info = {"node": self.node, "host": socket.gethostname(), "pid": os.getpid()}
            self._store.set(f"{self._prefix}/info/{self.rank}", json.dumps(info))
        except Exception:  # no shared store: still fail fast, naming only this rank
            self._store = None
        threading.Thread(target=self._watch, name="llmlaunch-watchdog", daemon=True).start()

    def beat(self, step: int) -> None:
        self._progress = (time.monotonic(), step)

    def stop(self) -> None:
        self._stopped.set()

    def _watch(self) -> None:
        interval = min(10.0, max(0.5, self.timeout / 5))
        while not self._stopped.wait(interval):
            since, step = self._progress
            idle = time.monotonic() - since
            if idle >= self.timeout:
                self._fail(idle, step, wait_s=min(60.0, max(5.0, 3 * interval)))

    def _fail(self, idle: float, step: int, wait_s: float) -> None:
        where, waiting = main_thread_location()
        mine = {"step": step, "idle": idle, "where": where, "waiting": waiting}
        reports, infos = {self.rank: mine}, {self.rank: {"node": self.node, "host": socket.gethostname(),
                                                         "pid": os.getpid()}}
        # peers unreachable (store gone, ranks dead): report what this rank knows
        with contextlib.suppress(Exception):
            reports, infos = self._exchange(mine, wait_s)
        if self.rank == min(reports):
            print(f"[llmlaunch] {diagnose(reports, infos, self.world, self.timeout)}", file=sys.stderr, flush=True)
        else:
            time.sleep(1)  # let the reporting rank print before the group goes down
        os._exit(EXIT_HUNG)

    def _exchange(self, mine: dict, wait_s: float) -> tuple[dict[int, dict], dict[int, dict]]:
        store = self._store
        store.set(f"{self._prefix}/hang/{self.rank}", json.dumps(mine))
        reports: dict[int, dict] = {}
        deadline = time.monotonic() + wait_s
        while True:
            for r in range(self.world):
                key = f"{self._prefix}/hang/{r}"
                if r not in reports and store.check([key]):
                    reports[r] = json.loads(store.get(key))
            if len(reports) == self.world or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        infos = {}
        for r in range(self.world):
            key = f"{self._prefix}/info/{r}"
            if store.check([key]):
                infos[r] = json.loads(store.get(key))
        return reports, infos
