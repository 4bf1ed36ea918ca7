"""GPU throughput and MFU on one H100/H200: llmlaunch vs the HF Trainer, plus LoRA; prints one JSON line.

Never part of CI. A ~374M-parameter Llama-style model built from a config (hidden 1024, 24 layers,
16 heads, intermediate 2816, vocab 32000, seq 2048, bf16) trains on a generated JSONL corpus of
variable-length documents (bundled tiny documents strung together, ~60 to ~3,700 tokens each):
  1. llmlaunch, full training (packing, SDPA with the block-diagonal mask, fused AdamW, DeepSpeed ZeRO-2),
  2. the HF Trainer, full training, usual recipe (truncate to seq_len, pad per batch; DeepSpeed ZeRO-2
     when deepspeed imports, else plain),
  3. llmlaunch, LoRA (r 16 on q/k/v/o) on the same model: tokens/s.
Each run trains at most --budget-s seconds after its first step (llmlaunch gets SIGTERM, the HF
Trainer stops itself); the defaults keep training under 3 minutes and the script inside 8.
MFU = useful tokens/s x (6 N + 12 L H Q T) / peak, N = matmul weights, T = sum L^2 / sum L of the packed
training documents (observability/mfu.py; the HF side is credited the same T), peak from its table
(989.4 TFLOP/s dense bf16 for H100 SXM / H200).

    python bench/gpu_mfu.py [--wheels .whl] [--budget-s 60] [--micro-batch 8] [--compile] [--attn flex_attention]
    python bench/gpu_mfu.py --cpu-smoke     # the same code path on the CPU, tiny model, ~3 minutes

The machine's image lacks deepspeed, pydantic and datasets: copy /work/shared/gpu-wheels/*.whl into
.whl/ (git-ignored; carry it) and they are installed under the work directory when missing.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

# Runnable from a clean checkout (no editable install, any working directory): the repository root first,
# so `trainer` is this checkout's, then bench/ for side_by_side.
sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]
from side_by_side import ROOT, hf_figures, llmlaunch_figures, versions  # noqa: E402

DATA = ROOT / "examples" / "data"
MODEL_350M = {"model_type": "llama", "vocab_size": 32000, "hidden_size": 1024, "intermediate_size": 2816,
              "num_hidden_layers": 24, "num_attention_heads": 16, "num_key_value_heads": 16,
              "max_position_embeddings": 2048, "tie_word_embeddings": False}
MODEL_SMOKE = {"model_type": "llama", "vocab_size": 512, "hidden_size": 64, "intermediate_size": 128,
               "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4,
               "max_position_embeddings": 128, "tie_word_embeddings": False}
LORA = {"r": 16, "alpha": 32, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}
OPTIM = {"lr": 3e-4, "weight_decay": 0.1, "betas": [0.9, 0.95]}


@dataclass
class Profile:
    model: dict
    seq_len: int
    micro_batch: int
    precision: str
    documents: int  # generated corpus
    mean_parts: float  # tiny documents per generated one (mean of an exponential draw)
    max_parts: int
    max_steps: int  # a cap besides the time budget
    log_every: int
    budget_s: float


def write_corpus(path: Path, profile: Profile, seed: int = 0) -> None:
    tiny = [json.loads(line)["text"] for line in (DATA / "tiny" / "train.jsonl").read_text().splitlines() if line]
    rng = random.Random(seed)
    with open(path, "w") as handle:
        for _ in range(profile.documents):
            parts = min(profile.max_parts, 1 + int(rng.expovariate(1 / profile.mean_parts)))
            handle.write(json.dumps({"text": " ".join(rng.choice(tiny) for _ in range(parts))}) + "\n")


def ensure_packages(wheels: Path, site: Path) -> str | None:
    """Install the carried wheels when deepspeed / pydantic / datasets are missing; returns the site dir."""
    missing = [name for name in ("deepspeed", "pydantic", "datasets") if importlib.util.find_spec(name) is None]
    if not missing:
        return None
    found = sorted(wheels.glob("*.whl")) if wheels.is_dir() else []
    if not found:
        sys.exit(f"--wheels {wheels}: {', '.join(missing)} missing and no wheels there (see the module docstring)")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target", str(site),
                    *map(str, found)], check=True)
    sys.path.insert(0, str(site))
    return str(site)


def run_with_budget(cmd: list[str], log: Path, env: dict, started: Path | None, budget_s: float,
                    hard_timeout_s: float) -> float:
    """Run a training process; SIGTERM it `budget_s` after `started` appears (its first logged step).
    Returns the wall seconds of the whole process."""
    begin = time.monotonic()
    first = stopped = None
    with open(log, "w") as handle:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT)
        while proc.poll() is None:
            time.sleep(0.5)
            now = time.monotonic()
            if started is not None and first is None and started.exists() and started.stat().st_size:
                first = now
            if first is not None and stopped is None and now - first > budget_s:
                proc.send_signal(signal.SIGTERM)  # the trainer finishes its step, checkpoints and exits
                stopped = now
            if now - begin > hard_timeout_s:
                proc.kill()
                proc.wait()
                sys.exit(f"{cmd[1:4]} ran past {hard_timeout_s:.0f}s; see {log}")
    if proc.returncode != 0 and not (stopped and proc.returncode in (-signal.SIGTERM, 128 + signal.SIGTERM)):
        sys.exit(f"{' '.join(cmd[1:4])} failed with exit code {proc.returncode}; its log ({log}) ends:\n"
                 + log.read_text()[-4000:])
    return time.monotonic() - begin


def llmlaunch_run(work: Path, name: str, corpus: Path, profile: Profile, args, env: dict, method: str) -> dict:
    from trainer.config.train_config import TrainConfig

    out = work / name
    train = {
        "model": {"config": profile.model, "tokenizer": str(DATA / "tokenizer"), "compile": args.compile,
                  "attn_implementation": args.attn},
        "data": {"train": str(corpus), "seq_len": profile.seq_len, "packing": True, "cache_dir": str(work / "cache")},
        "method": {"kind": method, "lora": {**LORA, "dropout": 0.0}},
        "optim": {"lr": OPTIM["lr"], "weight_decay": OPTIM["weight_decay"], "betas": OPTIM["betas"]},
        "schedule": {"kind": "cosine", "warmup_steps": 20},
        "run": {"output_dir": str(out), "max_steps": profile.max_steps, "micro_batch_size": profile.micro_batch,
                "log_every": profile.log_every, "eval_every": 0, "save_every": 0, "seed": 1234, "resume": False},
        "deepspeed": {"preset": args.preset}, "precision": profile.precision, "metrics": {"enabled": False},
    }
    config = work / f"{name}.yaml"
    config.write_text(TrainConfig.model_validate(train).to_yaml())
    # One process, no torchrun: SIGTERM goes straight to the trainer (its emergency-checkpoint path).
    rank_env = {**env, "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(free_port())}
    wall = run_with_budget([sys.executable, "-m", "trainer", "--config", str(config)], work / f"{name}.log",
                           rank_env, out / "metrics.jsonl", profile.budget_s, hard_timeout_s=profile.budget_s + 240)
    return {**llmlaunch_figures(out), "wall_s": round(wall, 1)}


def hf_run(work: Path, corpus: Path, profile: Profile, args, env: dict) -> dict:
    has_deepspeed = importlib.util.find_spec("deepspeed") is not None
    zero2 = {"zero_optimization": {"stage": 2, "overlap_comm": True, "contiguous_gradients": True,
                                   "allgather_bucket_size": 200000000, "reduce_bucket_size": 200000000},
             "train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto",
             "train_batch_size": "auto", "gradient_clipping": "auto", "bf16": {"enabled": "auto"},
             "steps_per_print": 10**9}
    spec = {"model": profile.model, "tokenizer": str(DATA / "tokenizer"), "train": str(corpus),
            "seq_len": profile.seq_len, "micro_batch": profile.micro_batch, "lr": OPTIM["lr"],
            "weight_decay": OPTIM["weight_decay"], "betas": OPTIM["betas"], "warmup_steps": 20, "min_lr_ratio": 0.1,
            "steps": profile.max_steps, "seed": 1234, "deepspeed": zero2 if has_deepspeed else None,
            "precision": profile.precision, "attn": "sdpa", "max_seconds": profile.budget_s, "save": False}
    out = work / "hf"
    out.mkdir(exist_ok=True)
    (out / "spec.json").write_text(json.dumps(spec))
    wall = run_with_budget([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "1", "--master-port",
                            str(free_port()), str(ROOT / "bench" / "hf_trainer_run.py"), "--spec",
                            str(out / "spec.json"), "--out", str(out)], work / "hf.log", env, None, profile.budget_s,
                           hard_timeout_s=profile.budget_s + 240)
    return {**hf_figures(out), "wall_s": round(wall, 1), "deepspeed": has_deepspeed}


def data_attention_length(cache: Path) -> float:
    """sum L^2 / sum L over the packed training documents llmlaunch cached (trainer/data/token_data.py)."""
    from trainer.data.token_data import TokenData

    for meta in sorted(cache.glob("*/meta.json")):
        if json.loads(meta.read_text()).get("packed"):
            return TokenData.load(meta.parent, shuffle=False).attention_length
    raise FileNotFoundError(f"no packed token cache under {cache}")


def model_size(arch: dict, attention_len: float) -> dict:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from trainer.observability.mfu import flops_per_token, matmul_params

    config = AutoConfig.for_model(**arch)
    with torch.device("meta"):
        total = sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters())
    return {"parameters": total, "matmul_parameters": matmul_params(config),
            "attention_length": round(attention_len, 1), "flops_per_token": flops_per_token(config, attention_len)}


def device_name(smoke: bool) -> str:
    if smoke:
        return "cpu"
    import pynvml

    pynvml.nvmlInit()
    name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(0))
    return name.decode() if isinstance(name, bytes) else name


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    script_start = time.monotonic()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny model on the CPU: checks the code path only")
    parser.add_argument("--wheels", type=Path, default=ROOT / ".whl", help="wheels for missing packages")
    parser.add_argument("--budget-s", type=float, help="training seconds per run after its first step")
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--preset", default="zero2", help="DeepSpeed preset for llmlaunch (the HF side uses ZeRO-2)")
    parser.add_argument("--compile", action="store_true", help="llmlaunch with model.compile (torch.compile)")
    parser.add_argument(
        "--attn",
        default="sdpa",
        choices=["sdpa", "flex_attention"],
        help="llmlaunch's packed attention (the HF side pads and uses sdpa); flex_attention needs a GPU",
    )
    parser.add_argument("--keep", type=Path, help="work directory to keep")
    args = parser.parse_args()
    if args.cpu_smoke:
        profile = Profile(
            MODEL_SMOKE, 128, 4, "fp32", 400, 2.0, 6, max_steps=6, log_every=2, budget_s=args.budget_s or 60
        )
    else:
        profile = Profile(MODEL_350M, 2048, args.micro_batch, "bf16", 9000, 15.0, 80, max_steps=2000, log_every=25,
                          budget_s=args.budget_s or 55)
    work = args.keep or Path(tempfile.mkdtemp(prefix="gpu-mfu-"))
    work.mkdir(parents=True, exist_ok=True)
    site = ensure_packages(args.wheels, work / "site")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [site, str(ROOT), os.environ.get("PYTHONPATH")]))}
    if args.cpu_smoke:
        env["DS_ACCELERATOR"] = "cpu"
        if Path("/dev/nvidia0").exists():  # hide a GPU only where there is one (it changes DeepSpeed's op builds)
            env["CUDA_VISIBLE_DEVICES"] = ""
    from trainer.observability.mfu import peak_flops

    corpus = work / "corpus.jsonl"
    write_corpus(corpus, profile)
    name = device_name(args.cpu_smoke)
    peak = peak_flops(name, "bf16") or 989e12  # the CPU smoke borrows the H100 figure: its MFU means nothing
    runs = {"llmlaunch": llmlaunch_run(work, "full", corpus, profile, args, env, "full"),
            "hf_trainer": hf_run(work, corpus, profile, args, env)}
    size = model_size(profile.model, data_attention_length(work / "cache"))
    lora = llmlaunch_run(work, "lora", corpus, profile, args, env, "lora")
    for figures in runs.values():
        figures["mfu"] = round(figures["useful_tokens_per_s"] * size["flops_per_token"] / peak, 4)
    llm, hf = runs["llmlaunch"], runs["hf_trainer"]
    print(json.dumps({
        "bench": "gpu_mfu", "device": name, "cpu_smoke": args.cpu_smoke, "versions": versions(),
        "model": {**size, "config": profile.model, "seq_len": profile.seq_len, "micro_batch": profile.micro_batch,
                  "precision": profile.precision, "compile": args.compile, "preset": args.preset,
                  "attn": args.attn},
        "peak_tflops": round(peak / 1e12, 1), **runs,
        "lora": {"useful_tokens_per_s": lora["useful_tokens_per_s"], "step_s": lora["step_s"], "steps": lora["steps"],
                 "lora": LORA},
        "llmlaunch_vs_hf": round(llm["useful_tokens_per_s"] / hf["useful_tokens_per_s"], 3),
        "target_mfu_met": llm["mfu"] >= 0.40 if not args.cpu_smoke else None,
        "script_s": round(time.monotonic() - script_start, 1), "work_dir": str(work) if args.keep else None,
    }))


if __name__ == "__main__":
    main()
