"""Local 'nodes': one torchrun agent per node on this machine, watched and restarted like pods.

In a cluster the kubelet restarts a training pod whose container died (restartPolicy OnFailure) and
the new agent rejoins the rendezvous. LocalNodes does the same for a local node, so a multi-node run
survives the loss of a node here as it would in the cluster. Each node runs in its own session, so a
terminal's Ctrl-C reaches only the launcher, which passes SIGTERM on to every agent as the kubelet does
on pod deletion; the trainers then agree on an emergency checkpoint.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

STOP_GRACE_S = 60  # how long the other nodes get to stop after one failed for good


@dataclass
class Node:
    index: int
    command: list[str]
    env: dict[str, str]
    proc: subprocess.Popen | None = None
    code: int | None = None  # exit code once finished for good

    def start(self) -> None:
        self.proc = subprocess.Popen(self.command, env=self.env, start_new_session=True, preexec_fn=_end_with_parent)
        self.code = None


def _end_with_parent() -> None:
    """In the child before exec (Linux): SIGTERM it when the launcher dies, even by SIGKILL, so that
    no node outlives the command that started it."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def kill_tree(pid: int, sig: int = signal.SIGKILL) -> None:
    """Signal a process and all its descendants (torchrun starts its workers in sessions of their own)."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.send_signal(sig)


@dataclass
class LocalNodes:
    """Runs the nodes to completion. A node that dies (killed, or failing after another node was lost,
    as the rendezvous host's death takes its peers down) is restarted while `restarts` last."""

    nodes: list[Node]
    restarts: int
    poll_s: float = 0.2
    restarts_used: int = 0
    stopped_by: str | None = None  # the signal that asked the run to stop, if any
    _lost_node: bool = False
    _failure: int | None = None  # exit code of the node that failed for good
    _signals: list[int] = field(default_factory=list)

    def log(self, message: str) -> None:
        print(f"[llmlaunch] {message}", file=sys.stderr, flush=True)

    def run(self) -> int:
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            for node in self.nodes:
                node.start()
            return self._watch()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            for node in self.nodes:  # never leave processes behind (e.g. after an exception here)
                if node.proc is not None and node.proc.poll() is None:
                    kill_tree(node.proc.pid)
                    node.proc.wait()

    def _watch(self) -> int:
        told = False
        while True:
            if self._signals and not told:
                told = True
                self.log(f"{self.stopped_by}: asking the trainers to write an emergency checkpoint and stop "
                         f"(again to kill them now)")
            for node in self.nodes:
                if node.code is None and node.proc.poll() is not None:
                    self._on_exit(node, node.proc.returncode)
            if all(node.code is not None for node in self.nodes):
                if self._failure is not None:
                    return self._failure
                return next((node.code for node in self.nodes if node.code != 0), 0)
            time.sleep(self.poll_s)

    def _on_signal(self, signum: int, frame) -> None:
        """Passed on at once (no printing here: the main thread may be inside a print)."""
        self._signals.append(signum)
        live = [n for n in self.nodes if n.proc is not None and n.code is None and n.proc.poll() is None]
        if len(self._signals) == 1:
            self.stopped_by = signal.Signals(signum).name
            for node in live:
                node.proc.send_signal(signal.SIGTERM)  # the agent passes it on to its workers
        else:
            for node in live:
                kill_tree(node.proc.pid)

    def _on_exit(self, node: Node, code: int) -> None:
        if code == 0:
            node.code = 0
            return
        lost = code < 0
        if self.stopped_by is None and (lost or self._lost_node) and self.restarts_used < self.restarts:
            self._lost_node = True
            self.restarts_used += 1
            self.log(f"node {node.index} is gone ({describe_exit(code)}); restarting it "
                     f"(restart {self.restarts_used} of {self.restarts})")
            node.start()
            return
        node.code = code
        if self.stopped_by is None and self._failure is None:
            self._failure = code
            self.log(f"node {node.index} failed ({describe_exit(code)}); stopping the other nodes")
            self._stop_others(node)

    def _stop_others(self, failed: Node) -> None:
        """A node failed for good: the others cannot finish without it, so they stop too."""
        for node in self.nodes:
            if node is not failed and node.code is None and node.proc.poll() is None:
                node.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for node in self.nodes:
            if node is failed or node.code is not None:
                continue
            try:
                node.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                kill_tree(node.proc.pid)
                node.proc.wait()
            node.code = node.proc.returncode
