"""The first-GPU-run check, in one go, one JSON out (started by bench/gpu_check.sh, which installs wheels).

    1. versions of what the trainer uses, the device and its compute capability
    2. bench/gpu_mfu.py: llmlaunch (flex_attention) vs the HF Trainer (bf16, ZeRO-2) with MFU, and LoRA tokens/s
    3. a short fp16 run: the dynamic loss scale and skipped steps from metrics.jsonl
    4. bench/gpu_metrics_probe.py: NVML readings of a loaded GPU, labelled by UUID
    5. bench/packed_attention_check.py: every attention kernel's packed logits = each document alone
Budget: under 6 minutes on an H100/H200. `--cpu-smoke` runs every step on the CPU with tiny models (fp32
instead of fp16, the fake NVML), to check the path, not the figures.

    bash bench/gpu_check.sh [--cpu-smoke] [--out gpu_check.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]  # this checkout's trainer, without an editable install


def last_json(cmd: list[str], env: dict, timeout: float) -> dict:
    """Run a bench script and read the JSON it prints (a failure is recorded, not raised)."""
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    seconds = round(time.monotonic() - start, 1)
    text = proc.stdout.strip()
    try:  # the NVML probe prints indented JSON, the others one line at the end
        result = json.loads(text)
    except ValueError:
        try:
            result = json.loads(text.splitlines()[-1])
        except (IndexError, ValueError):
            return {"ok": False, "exit_code": proc.returncode, "seconds": seconds, "stderr_tail": proc.stderr[-3000:]}
    return {"ok": proc.returncode == 0, "seconds": seconds, **result}


def versions() -> dict:
    import torch

    out = {"python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.version.cuda}
    from importlib.metadata import PackageNotFoundError, version

    for name in ("transformers", "deepspeed", "peft", "pydantic", "datasets", "hjson", "accelerate", "nvidia-ml-py"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:  # the check says which is missing; the rest still runs
            out[name] = "missing"
    if torch.cuda.is_available():
        out["device"] = torch.cuda.get_device_name(0)
        out["capability"] = list(torch.cuda.get_device_capability(0))
    return out


def fp16_run(work: Path, smoke: bool, env: dict) -> dict:
    """A short run in fp16 (fp32 on the CPU smoke): loss scale and skipped steps as the trainer logs them."""
    from types import SimpleNamespace

    from gpu_mfu import MODEL_SMOKE, Profile, llmlaunch_run, write_corpus

    model = MODEL_SMOKE if smoke else {**MODEL_SMOKE, "hidden_size": 512, "intermediate_size": 1408,
                                       "num_hidden_layers": 8, "num_attention_heads": 8, "num_key_value_heads": 8,
                                       "vocab_size": 32000, "max_position_embeddings": 1024}
    profile = Profile(model, 128 if smoke else 1024, 4 if smoke else 8, "fp32" if smoke else "fp16", 300, 2.0, 6,
                      max_steps=6 if smoke else 40, log_every=2 if smoke else 5, budget_s=60)
    corpus = work / "fp16-corpus.jsonl"
    write_corpus(corpus, profile)
    args = SimpleNamespace(compile=False, preset="zero2", attn="sdpa")
    figures = llmlaunch_run(work, "fp16", corpus, profile, args, env, "full")
    records = [json.loads(line) for line in (work / "fp16" / "metrics.jsonl").read_text().splitlines() if line]
    steps = [r for r in records if "loss" in r]
    return {
        "precision": profile.precision,
        "steps": figures["steps"],
        "useful_tokens_per_s": figures["useful_tokens_per_s"],
        "loss_first": steps[0]["loss"],
        "loss_last": steps[-1]["loss"],
        "loss_scale": [r.get("loss_scale") for r in steps],
        "skipped_steps": steps[-1].get("skipped_steps"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="every step on the CPU, tiny models")
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    parser.add_argument("--budget-s", type=float, default=30, help="training seconds per gpu_mfu run")
    args = parser.parse_args()
    start = time.monotonic()

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    if args.cpu_smoke:
        env["DS_ACCELERATOR"] = "cpu"
    py = sys.executable
    smoke = ["--cpu-smoke"] if args.cpu_smoke else []
    report: dict = {"check": "gpu_check", "cpu_smoke": args.cpu_smoke, "versions": versions()}
    attn = [] if args.cpu_smoke else ["--attn", "flex_attention"]  # the packed fast path; no CPU backward
    report["mfu"] = last_json([py, "bench/gpu_mfu.py", *smoke, *attn, "--budget-s", str(args.budget_s)], env, 420)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as work:
        try:
            report["fp16"] = {"ok": True, **fp16_run(Path(work), args.cpu_smoke, env)}
        except (SystemExit, Exception) as e:  # recorded: the other checks still run
            report["fp16"] = {"ok": False, "error": str(e)[-3000:]}
    probe = ["--fake-nvml", "--load-seconds", "0"] if args.cpu_smoke else ["--load-seconds", "4"]
    report["nvml"] = last_json([py, "bench/gpu_metrics_probe.py", *probe], env, 120)
    device = ["--device", "cpu"] if args.cpu_smoke else ["--device", "cuda"]
    report["packed_attention"] = last_json([py, "bench/packed_attention_check.py", *device], env, 300)
    report["ok"] = all(report[k].get("ok") for k in ("mfu", "fp16", "nvml", "packed_attention")) and \
        bool(report["packed_attention"].get("all_equivalent"))
    report["script_s"] = round(time.monotonic() - start, 1)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({"ok": report["ok"], "out": str(args.out), "script_s": report["script_s"]}))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
