"""Resilience with real processes: 2 local "nodes" (torchrun agents, c10d rendezvous as in pods) x 1
DeepSpeed ZeRO-2 rank each, on the CPU. Nodes are killed with SIGKILL, stopped with SIGTERM, shrunk to
one, their checkpoints damaged, a rank hung; each run is compared with an uninterrupted one.

Every start-up costs ~20-30 s here, so the faults are chosen to share runs: one run takes three kills.
"""

from __future__ import annotations

import json
import shutil
import signal
import time
from pathlib import Path

import pytest
import torch

from faults import run_cli
from trainjobs import losses, tiny_job

pytestmark = pytest.mark.distributed

SAVE_EVERY = 4
RUN = {"max_steps": 12, "save_every": SAVE_EVERY, "keep_last": 3, "eval_every": 0, "max_restarts": 4}
NODES = ("--nodes", "2", "--nproc-per-node", "1")
# Restarts replay the same data, init and arithmetic; the tolerances only allow for summation order
# (1 rank accumulating 2 micro batches vs 2 ranks averaging) and metrics.jsonl's 6 decimals.
ATOL, RTOL = 1e-6, 1e-5
LOSS_ATOL = 1e-5


def final_weights(out: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(out / "final" / "model.safetensors")


def assert_same_training(out: Path, ref: Path, steps) -> None:
    ref_losses, got = losses(ref), losses(out)
    for step in steps:
        assert got[step] == pytest.approx(ref_losses[step], abs=LOSS_ATOL), step
    a, b = final_weights(ref), final_weights(out)
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=RTOL, atol=ATOL)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted run every faulty one must reproduce."""
    tmp = tmp_path_factory.mktemp("reference")
    result = run_cli(tmp, str(tiny_job(tmp, run=RUN)), *NODES)
    assert result.returncode == 0, result.log[-4000:]
    assert result.attempts() == [0]
    return tmp / "out"


def test_killing_nodes_loses_at_most_one_checkpoint_interval(tmp_path, reference):
    """kill -9 of a whole node (its torchrun agent and trainer) three times in one run:
    A: node of rank 1 in step 2, before the first checkpoint     -> restart from scratch
    B: node of rank 1 while writing the step-8 checkpoint        -> step-8 never loaded, resume at 4
    C: node 0, the rendezvous store's host (as the master pod), in step 10 -> resume at 8
    """
    failpoints = "step@2:rank=1:stop,checkpoint@8:rank=1:stop,step@10:pod=0:stop"
    result = run_cli(tmp_path, str(tiny_job(tmp_path, run=RUN)), *NODES, failpoints=failpoints)
    assert result.returncode == 0, result.log[-6000:]
    assert [(f["point"], f["step"]) for f in result.faults] == [("step", 2), ("checkpoint", 8), ("step", 10)]
    assert all("killed_agent" in f for f in result.faults) and result.faults[2]["pod"] == 0
    assert result.log.count("is gone (killed by SIGKILL); restarting it") == 3

    resumed = result.attempts()
    assert resumed == [0, 0, 4, 8], resumed
    # Steps done when each fault struck, against the step the next start resumed from.
    done_at_fault = [f["step"] - 1 if f["point"] == "step" else f["step"] for f in result.faults]
    recomputed = [done - start for done, start in zip(done_at_fault, resumed[1:], strict=True)]
    assert recomputed == [1, 4, 1] and max(recomputed) <= SAVE_EVERY

    ckpts = tmp_path / "out" / "checkpoints"
    complete = sorted(p.name for p in ckpts.glob("step-*") if (p / "COMPLETE").is_file())
    assert complete == [f"step-{s:06d}" for s in (4, 8, 12)]
    assert_same_training(tmp_path / "out", reference, range(1, 13))


def test_sigterm_writes_an_emergency_checkpoint_that_the_next_start_resumes(tmp_path, reference):
    job = tiny_job(tmp_path, run=RUN)
    metrics = tmp_path / "out" / "metrics.jsonl"
    sent = {}

    def sigterm_after_step_5(proc):
        if "step" in sent or not metrics.is_file():
            return
        steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines() if line.strip()]
        if steps and steps[-1] >= 5:
            sent["step"], sent["time"] = steps[-1], time.monotonic()
            proc.send_signal(signal.SIGTERM)  # as on Ctrl-C; the launcher passes it to every node

    stopped = run_cli(tmp_path, str(job), *NODES, on_progress=sigterm_after_step_5)
    took = time.monotonic() - sent["time"]
    assert stopped.returncode == 1
    assert "error: stopped by SIGTERM;" in stopped.log and "the same command resumes" in stopped.log
    lines = [line for line in stopped.log.splitlines() if "emergency checkpoint at step" in line]
    assert len(lines) == 1, stopped.log[-4000:]
    step = int(lines[0].rsplit(" ", 1)[1])
    # The ranks stop at the first step boundary after the signal reached one of them: within a step or
    # two of the last logged one (steps take ~0.2 s; a loaded machine may pass up to two more).
    assert sent["step"] <= step <= sent["step"] + 4 and step < RUN["max_steps"]
    emergency = tmp_path / "out" / "checkpoints" / f"step-{step:06d}"
    assert json.loads((emergency / "COMPLETE").read_text())["step"] == step
    assert not (tmp_path / "out" / "final").exists()
    assert took < 60, took

    finished = run_cli(tmp_path, str(job), *NODES)
    assert finished.returncode == 0, finished.log[-4000:]
    assert finished.attempts() == [step]
    assert_same_training(tmp_path / "out", reference, range(1, 13))


def test_two_nodes_resume_on_one_past_a_damaged_latest_checkpoint(tmp_path, reference):
    """Checkpoints of the 2-rank reference, the newest with a truncated shard: the 1-rank run warns,
    falls back to step 4, converts it (DeepSpeed universal checkpoint) and carries on with the same
    samples: grad_accum 2 keeps the global batch (and its split into micro batches) unchanged.
    A stale torch-extensions build lock is left in its way too."""
    out = tmp_path / "out"
    for step in (4, 8):
        shutil.copytree(reference / "checkpoints" / f"step-{step:06d}", out / "checkpoints" / f"step-{step:06d}")
    shard = out / "checkpoints" / "step-000008" / "zero_pp_rank_1_mp_rank_00_optim_states.pt"
    original = shard.stat().st_size
    size = original // 2
    shard.write_bytes(shard.read_bytes()[:size])

    # As left by a rank killed while DeepSpeed JIT-built an op: a start must not wait on it forever.
    extensions = tmp_path / "torch_extensions"
    (extensions / "deepspeed_shm_comm").mkdir(parents=True)
    (extensions / "deepspeed_shm_comm" / "lock").touch()

    job = tiny_job(tmp_path, run={**RUN, "grad_accum": 2})
    result = run_cli(tmp_path, str(job), "--nodes", "1", "--nproc-per-node", "1",
                     env={"TORCH_EXTENSIONS_DIR": str(extensions)}, timeout=300)
    assert result.returncode == 0, result.log[-4000:]
    assert "shm_comm_op built" not in result.log
    assert (f"warning: checkpoint {out / 'checkpoints' / 'step-000008'} is damaged: "
            f"zero_pp_rank_1_mp_rank_00_optim_states.pt has {size} bytes, expected {original}") in result.log
    assert "step-000004 was written by 2 processes, resuming with 1: converting it" in result.log
    assert "32 samples of this epoch consumed -> 8 micro batches per rank" in result.log
    assert result.attempts() == [4]
    assert_same_training(out, reference, range(5, 13))
    # The run wrote its own checkpoints (the damaged step 8 replaced), now for one rank.
    for step in (8, 12):
        meta = json.loads((out / "checkpoints" / f"step-{step:06d}" / "COMPLETE").read_text())
        assert (meta["step"], meta["world_size"], meta["micro_batch_size"]) == (step, 1, 4)


def test_a_hung_rank_fails_the_job_fast_and_is_named(tmp_path):
    job = tiny_job(tmp_path, run={**RUN, "max_restarts": 0, "hang_timeout_s": 5})
    result = run_cli(tmp_path, str(job), *NODES, failpoints="step@3:rank=1:hang")
    assert result.returncode == 1
    [hang] = result.faults
    line = next(line for line in result.log.splitlines() if "[llmlaunch] hung:" in line)
    assert f"rank 1 on node {hang['node']} (host " in line and f"pid {hang['pid']}" in line
    assert "made no progress for" in line and "after step 2" in line and "failpoints.py" in line
    assert "rank 0 waits in a collective" in line
    assert "error: training failed" in result.log
    # Detected within the timeout plus one check interval, and everything down soon after.
    assert time.time() - hang["time"] < 5 + 1 + 30


def test_a_failed_save_is_counted_and_training_goes_on(tmp_path):
    """rank 1's write of the step-4 checkpoint fails (a full volume): no COMPLETE for step 4, the run
    trains on and saves steps 8 and 12; with max_failed_saves 1 the same failure fails the run."""
    job = tiny_job(tmp_path, run={**RUN, "max_restarts": 0})
    result = run_cli(tmp_path, str(job), *NODES, failpoints="checkpoint@4:rank=1:fail")
    assert result.returncode == 0, result.log[-3000:]
    assert [f["rank"] for f in result.faults] == [1]
    assert ("checkpoint step 4 FAILED (1 in a row, at most 3): checkpoint step 4 not saved "
            "(rank 1: [Errno 28] No space left on device (failpoint))") in result.log
    ckpts = tmp_path / "out" / "checkpoints"
    assert sorted(p.name for p in ckpts.glob("step-*") if (p / "COMPLETE").is_file()) == ["step-000008", "step-000012"]
    assert not (ckpts / "step-000004").exists()  # the partial directory is pruned by the next save
    assert (tmp_path / "out" / "final" / "config.json").is_file()

    strict = tiny_job(tmp_path, name="strict", run={**RUN, "max_restarts": 0, "max_failed_saves": 1,
                                                     "output_dir": str(tmp_path / "strict")})
    (tmp_path / "second").mkdir()  # its own failpoint markers: each fires once per directory
    failed = run_cli(tmp_path / "second", str(strict), *NODES, failpoints="checkpoint@4:rank=1:fail")
    assert failed.returncode == 1
    assert "1 checkpoint saves failed in a row (train.run.max_failed_saves 1)" in failed.log
    assert not (tmp_path / "strict" / "final").exists()
