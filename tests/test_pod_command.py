"""The pods' torchrun command, run for real: two 'pods' on loopback rendezvous through c10d.

The kubelet's $(MASTER_ADDR)/$(MASTER_PORT) expansion is done here by hand (no kubelet runs in the
tests), and `-m trainer` is served by a stand-in module that only reports its rank and does one
gloo all-reduce: the thing under test is the rendezvous the command sets up, not the trainer.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from launcher.render import pod_values
from launcher.spec.load import load_job

pytestmark = pytest.mark.distributed

STAND_IN = '''
import json, os, sys
import torch, torch.distributed as dist
dist.init_process_group("gloo")
t = torch.ones(1) * (dist.get_rank() + 1)
dist.all_reduce(t)
with open(os.path.join(os.environ["OUT"], f"rank{dist.get_rank()}.json"), "w") as f:
    json.dump({"rank": dist.get_rank(), "world": dist.get_world_size(), "sum": t.item(), "argv": sys.argv[1:]}, f)
dist.destroy_process_group()
'''


def test_two_pods_rendezvous_with_the_rendered_command(tmp_path):
    tiny = Path(__file__).resolve().parent.parent / "examples" / "tiny.yaml"
    spec = load_job(tiny, ["cluster.nodes=2"], resolve_paths=False)
    command = pod_values.command(spec)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    expanded = [a.replace("$(MASTER_ADDR)", "127.0.0.1").replace("$(MASTER_PORT)", str(port)) for a in command]
    assert expanded[0] == "torchrun"
    (tmp_path / "trainer").mkdir()
    (tmp_path / "trainer" / "__main__.py").write_text(STAND_IN)
    (tmp_path / "trainer" / "__init__.py").write_text("")
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "OUT": str(tmp_path)}
    pods = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", *expanded[1:]], env=env, cwd=tmp_path,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    try:
        outputs = [p.communicate(timeout=240)[0] for p in pods]
    finally:
        for p in pods:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in pods] == [0, 0], outputs
    results = sorted((json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)), key=lambda r: r["rank"])
    assert [(r["rank"], r["world"], r["sum"]) for r in results] == [(0, 2, 3.0), (1, 2, 3.0)]
    assert results[0]["argv"] == ["--config", "/etc/llmlaunch/train.yaml"]
