"""The parts behind resilience, each on its own and fast: checkpoint manifests, data position
rescaling, the hang diagnosis and watchdog, failpoints, the torchrun command lines and the local
node supervisor (with real processes)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from launcher.local.nodes import LocalNodes, Node
from launcher.spec.torchrun import agent_env, expand, local_torchrun, operator_env, pod_torchrun
from trainer.checkpoints.manifest import checkpoint_files, describe, problems, share
from trainer.failpoints import parse
from trainer.observability.watchdog import diagnose
from trainjobs import REPO

PY = sys.executable


# ---- checkpoint manifests ----------------------------------------------------------------------------


@pytest.fixture
def ckpt(tmp_path) -> Path:
    d = tmp_path / "step-000004"
    (d / "universal" / "zero").mkdir(parents=True)
    (d / "a.pt").write_bytes(b"a" * 1000)
    (d / "b.pt").write_bytes(b"b" * 10)
    (d / "sub").mkdir()
    (d / "sub" / "c.pt").write_bytes(b"c" * 5)
    (d / "COMPLETE").write_text("{}")
    (d / ".loop-rank0.pt.tmp").write_bytes(b"half")
    (d / "universal" / "zero" / "w.pt").write_bytes(b"converted later")
    return d


def test_manifest_lists_the_checkpoint_files_only(ckpt):
    names = checkpoint_files(ckpt)
    assert names == ["a.pt", "b.pt", "sub/c.pt"]
    assert sorted(share(names, 0, 2) + share(names, 1, 2)) == names  # every file hashed once
    files = describe(ckpt, names)
    assert files["b.pt"] == [10, hashlib.sha256(b"b" * 10).hexdigest()]
    assert problems(ckpt, files, names) == []


def test_manifest_finds_truncated_missing_and_altered_shards(ckpt):
    names = checkpoint_files(ckpt)
    files = describe(ckpt, names)
    (ckpt / "a.pt").write_bytes(b"a" * 400)  # truncated
    (ckpt / "b.pt").unlink()  # missing
    (ckpt / "sub" / "c.pt").write_bytes(b"x" * 5)  # same size, other bytes
    assert problems(ckpt, files, names) == [
        "a.pt has 400 bytes, expected 1000", "b.pt is missing", "sub/c.pt does not match its SHA-256"]


# ---- data position across world sizes ------------------------------------------------------------------


@pytest.mark.parametrize("position,then,world,batch,expected", [
    (4, {"world_size": 2, "micro_batch_size": 4}, 1, 4, 8),   # 2 -> 1 node: 32 samples -> 8 batches of 4
    (8, {"world_size": 1, "micro_batch_size": 4}, 2, 4, 4),   # 1 -> 2
    (4, {"world_size": 2, "micro_batch_size": 4}, 3, 4, 2),   # 32 samples, batches of 12: 8 seen again
    (4, {"world_size": 2, "micro_batch_size": 4}, 1, 8, 4),   # micro batch changed too
    (3, {"world_size": 2}, 1, 4, 6),                           # older marker: same micro batch assumed
])
def test_data_position_is_carried_over_in_samples(position, then, world, batch, expected, capsys):
    from trainer.checkpoints.resume import rescale_position

    assert rescale_position(position, then, world, batch) == expected
    if (position * then["world_size"] * then.get("micro_batch_size", batch)) % (world * batch):
        assert "will be seen again" in capsys.readouterr().err


def test_each_rendezvous_says_why_it_happened(tmp_path):
    from trainer.checkpoints.resume import Found, rendezvous_reason

    def found(world):
        return Found(tmp_path / "step-000030", {"step": 30, "world_size": world}, universal=False)

    torchrun = {"GROUP_WORLD_SIZE": "3", "LOCAL_WORLD_SIZE": "1", "TORCHELASTIC_MAX_RESTARTS": "3"}
    assert rendezvous_reason({**torchrun, "GROUP_WORLD_SIZE": "4"}, 4, None) == \
        "rendezvous: 4 node(s) x 1 = world size 4; first rendezvous of this run (no checkpoint)"
    assert rendezvous_reason({**torchrun, "TORCHELASTIC_RESTART_COUNT": "1"}, 3, found(4)) == (
        "rendezvous: 3 node(s) x 1 = world size 3; a node left: step-000030 was written by 4 processes "
        "(1 of 3 restarts after a failure used on this node)")
    # a node joining is a membership change: torchrun does not count it as a restart
    assert rendezvous_reason({**torchrun, "GROUP_WORLD_SIZE": "4", "TORCHELASTIC_RESTART_COUNT": "1"}, 4, found(3)) \
        .startswith("rendezvous: 4 node(s) x 1 = world size 4; a node joined: step-000030 was written by 3 processes")
    assert rendezvous_reason({**torchrun, "TORCHELASTIC_RESTART_COUNT": "2"}, 3, found(3)).endswith(
        "the same world as step-000030: the group was restarted (2 of 3 restarts after a failure used on this node)")
    assert rendezvous_reason({}, 1, None) == \
        "rendezvous: 1 node(s) x 1 = world size 1; first rendezvous of this run (no checkpoint)"


# ---- hang diagnosis and watchdog -------------------------------------------------------------------


INFOS = {r: {"node": r // 2, "host": f"pod-{r // 2}", "pid": 100 + r} for r in range(4)}


def report(step, waiting, where="all_reduce (distributed_c10d.py:2800)"):
    return {"step": step, "idle": 31.0, "where": where, "waiting": waiting}


def test_diagnosis_names_the_rank_that_is_not_in_a_collective():
    reports = {0: report(7, True), 1: report(7, True), 2: report(7, False, "read (data.py:12)"), 3: report(7, True)}
    line = diagnose(reports, INFOS, 4, 30)
    assert line.startswith("hung: rank 2 on node 1 (host pod-1, pid 102) made no progress for 31 s after step 7, "
                           "in read (data.py:12); ranks 0, 1, 3 wait in a collective.")
    assert line.endswith("(run.hang_timeout_s = 30)")


def test_diagnosis_names_a_rank_that_does_not_answer():
    reports = {0: report(7, True), 2: report(7, True), 3: report(7, True)}
    line = diagnose(reports, INFOS, 4, 30)
    assert "rank 1 on node 0 (host pod-0, pid 101) stopped answering (frozen or dead)" in line
    assert "rank 2" not in line.split(";")[0]


def test_diagnosis_when_every_rank_waits_blames_the_ones_behind():
    reports = {0: report(7, True), 1: report(6, True), 2: report(7, True), 3: report(7, True)}
    assert diagnose(reports, INFOS, 4, 30).startswith("hung: rank 1 on node 0")


def test_watchdog_ends_a_process_whose_loop_stopped():
    """A real process: the main thread stops beating, the watchdog thread reports and exits it."""
    code = ("import time; from trainer.observability.watchdog import Watchdog; w = Watchdog(0, 0, 1, 1.0); w.start(3); "
            "[w.beat(s) or time.sleep(0.2) for s in range(4, 9)]; time.sleep(120)")
    start = time.monotonic()
    result = subprocess.run([PY, "-c", code], cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 124, result.stderr
    assert "hung: rank 0 on node 0" in result.stderr and "after step 8, in <module> (<string>:1)" in result.stderr
    assert time.monotonic() - start < 30


# ---- failpoints ----------------------------------------------------------------------------------


def test_failpoint_specs_are_checked():
    markers = [p.marker for p in parse("step@2:rank=1:stop, checkpoint@8:pod=0:hang")]
    assert markers == ["step-2-rank1", "checkpoint-8-pod0"]
    for bad in ("step@2:node=1:stop", "step@2:rank=1:explode", "step:rank=1:stop", "step@2:rank=x:stop"):
        with pytest.raises(ValueError):
            parse(bad)


def test_a_failpoint_freezes_its_rank_once_per_run(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO), RANK="1", GROUP_RANK="1", LLMLAUNCH_FAILPOINT_DIR=str(tmp_path),
               LLMLAUNCH_FAILPOINTS="checkpoint@8:rank=1:stop")
    code = ("from trainer.failpoints import failpoint; failpoint('checkpoint', 7); failpoint('step', 8); "
            "failpoint('checkpoint', 8); print('passed')")
    first = subprocess.Popen([PY, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
    marker = tmp_path / "checkpoint-8-rank1.json"
    deadline = time.monotonic() + 30
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    record = json.loads(marker.read_text())
    assert (record["pid"], record["rank"], record["node"], record["step"]) == (first.pid, 1, 1, 8)
    time.sleep(0.2)
    assert psutil.Process(first.pid).status() == psutil.STATUS_STOPPED
    first.kill()
    first.wait()
    again = subprocess.run([PY, "-c", code], env=env, capture_output=True, text=True, timeout=30)
    assert again.stdout.strip() == "passed"  # a restarted rank passes the point


# ---- torchrun command lines ------------------------------------------------------------------------


def test_a_local_node_runs_the_pods_command_expanded_with_the_operators_variables(monkeypatch):
    env = operator_env(nnodes=2, node_rank=1, nproc_per_node=4, master_addr="127.0.0.1", master_port=29999)
    local = local_torchrun(PY, "/run/train.yaml", env, nnodes=2, nproc_per_node=4, max_restarts=3)
    pod = pod_torchrun(2, 4, max_restarts=3)
    assert local[:3] == [PY, "-m", "torch.distributed.run"] and pod[0] == "torchrun"
    assert local[3:-1] == [expand(arg, env) for arg in pod[1:-1]]
    assert "--rdzv-endpoint=127.0.0.1:29999" in local and "--rdzv-endpoint=$(MASTER_ADDR):$(MASTER_PORT)" in pod
    assert local[-1] == "/run/train.yaml" and pod[-1] == "/etc/llmlaunch/train.yaml"
    # torchrun itself reads the command the same way, PET_* variables included.
    from torch.distributed.run import get_args_parser

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    args = get_args_parser().parse_args(local[3:])
    assert (args.nnodes, args.nproc_per_node, args.rdzv_backend, args.rdzv_endpoint, args.max_restarts,
            args.node_rank) == ("2", "4", "c10d", "127.0.0.1:29999", 3, 1)
    assert agent_env(90) == {"TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1", "TORCH_ELASTIC_SHUTDOWN_TIMEOUT": "90"}


def test_expand_leaves_unknown_variables_as_the_kubelet_does():
    assert expand("$(A):$(B)-$(C)", {"A": "x", "B": "1"}) == "x:1-$(C)"


# ---- the local node supervisor, with real processes --------------------------------------------------


def node(index: int, script: str, *args: str) -> Node:
    return Node(index, [PY, "-c", script, *args], dict(os.environ))


DIES_ONCE = "import os, sys, pathlib; m = pathlib.Path(sys.argv[1]); m.exists() or (m.touch(), os.kill(os.getpid(), 9))"
SLEEPS = "import time, sys; time.sleep(float(sys.argv[1]))"


def test_a_killed_node_is_restarted(tmp_path):
    group = LocalNodes([node(0, SLEEPS, "1"), node(1, DIES_ONCE, str(tmp_path / "m"))], restarts=2, poll_s=0.05)
    assert group.run() == 0
    assert group.restarts_used == 1


def test_restarts_are_bounded(tmp_path):
    always = "import os; os.kill(os.getpid(), 9)"
    group = LocalNodes([node(0, SLEEPS, "30"), node(1, always)], restarts=2, poll_s=0.05)
    start = time.monotonic()
    assert group.run() == -9
    assert group.restarts_used == 2 and time.monotonic() - start < 20


def test_a_failing_node_stops_the_others_without_restarts():
    group = LocalNodes([node(0, SLEEPS, "60"), node(1, "import sys; sys.exit(3)")], restarts=3, poll_s=0.05)
    start = time.monotonic()
    assert group.run() == 3
    assert group.restarts_used == 0 and time.monotonic() - start < 20


def test_sigterm_to_the_launcher_reaches_every_node(tmp_path):
    trap = ("import signal, sys, time, pathlib; out = pathlib.Path(sys.argv[1]); "
            "signal.signal(signal.SIGTERM, lambda *a: (out.write_text('checkpoint'), sys.exit(0))); "
            "pathlib.Path(str(out) + '.up').touch(); time.sleep(60)")
    nodes = [node(i, trap, str(tmp_path / f"node{i}")) for i in range(2)]
    group = LocalNodes(nodes, restarts=3, poll_s=0.05)
    previous = signal.getsignal(signal.SIGTERM)

    def signal_when_up():
        while not all((tmp_path / f"node{i}.up").exists() for i in range(2)):
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=signal_when_up, daemon=True).start()
    assert group.run() == 0
    assert group.stopped_by == "SIGTERM"
    assert [(tmp_path / f"node{i}").read_text() for i in range(2)] == ["checkpoint", "checkpoint"]
    assert signal.getsignal(signal.SIGTERM) is previous  # the launcher's own handler is gone again
