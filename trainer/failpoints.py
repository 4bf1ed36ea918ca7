"""Fault injection points for the resilience tests; inert unless LLMLAUNCH_FAILPOINTS is set.

    LLMLAUNCH_FAILPOINTS="step@2:rank=1:stop,checkpoint@8:pod=0:stop"  LLMLAUNCH_FAILPOINT_DIR=/some/dir

`name@step:rank=R:action` fires when global rank R reaches point `name` at optimizer step `step`;
`pod=P` instead selects the first rank of node P (PET_NODE_RANK: the pod's index, which unlike the
rendezvous' node rank survives restarts). Once per run: a marker file in LLMLAUNCH_FAILPOINT_DIR
remembers it across restarts and tells the test which process reached it. Then the action:
  stop  freeze the process (SIGSTOP) so that the test kills its node at exactly this moment;
  hang  sleep forever in Python, as a rank stuck in I/O would (its watchdog thread keeps running);
  fail  raise OSError, as a write to a full or vanished volume would.
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from trainer.storage.atomic_files import atomic_write


@dataclass(frozen=True)
class Failpoint:
    name: str
    step: int
    selector: str  # "rank" or "pod"
    value: int
    action: str

    @property
    def marker(self) -> str:
        return f"{self.name}-{self.step}-{self.selector}{self.value}"


def parse(spec: str) -> tuple[Failpoint, ...]:
    points = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        try:
            where, who, action = item.split(":")
            name, step = where.split("@")
            selector, value = who.split("=")
            if selector not in ("rank", "pod") or action not in ("stop", "hang", "fail"):
                raise ValueError
            points.append(Failpoint(name, int(step), selector, int(value), action))
        except ValueError:
            raise ValueError(f"LLMLAUNCH_FAILPOINTS: cannot read {item!r} "
                             "(expected name@step:rank=R:ACTION or name@step:pod=P:ACTION, "
                             "ACTION stop, hang or fail)") from None
    return tuple(points)


ARMED = parse(os.environ.get("LLMLAUNCH_FAILPOINTS", ""))


def failpoint(name: str, step: int) -> None:
    """Called by the trainer at the named point; returns at once when no test armed it."""
    if not ARMED:
        return
    who = {"rank": int(os.environ.get("RANK", 0)), "pod": int(os.environ.get("PET_NODE_RANK", 0))}
    for point in ARMED:
        if (point.name, point.step, point.value) == (name, step, who[point.selector]) and _claim(point):
            _act(point.action)


def _claim(point: Failpoint) -> bool:
    """First arrival only (also across restarts); records who arrived for the test to act on."""
    directory = Path(os.environ["LLMLAUNCH_FAILPOINT_DIR"])
    try:
        os.close(os.open(directory / f"{point.marker}.claim", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    record = {"point": point.name, "step": point.step, "action": point.action, "rank": int(os.environ.get("RANK", 0)),
              "node": int(os.environ.get("GROUP_RANK", 0)), "pod": int(os.environ.get("PET_NODE_RANK", 0)),
              "pid": os.getpid(), "time": time.time()}
    atomic_write(directory / f"{point.marker}.json", json.dumps(record))
    return True


def _act(action: str) -> None:
    if action == "fail":
        raise OSError(28, "No space left on device (failpoint)")
    if action == "stop":
        os.kill(os.getpid(), signal.SIGSTOP)
        return
    while True:  # hang
        time.sleep(1)
