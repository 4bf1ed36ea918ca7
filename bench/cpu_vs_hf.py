"""llmlaunch vs the Hugging Face Trainer on this machine's CPU, side by side in one run; prints one JSON line.

    PYTHONPATH=. python bench/cpu_vs_hf.py [--seeds 1234,7,99,5] [--micro-batch 16] [--packed-micro-batch N]
                                          [--no-unpacked] [--epochs 1.0] [--keep DIR]

Both sides: examples/tiny.yaml's Llama model built from its config with the same seed (same initial
weights), the bundled tokenizer, examples/data/tiny/train.jsonl (3,800 documents of 6-113 tokens),
seq_len 128, 2 processes (torchrun), DeepSpeed ZeRO-2, fp32, AdamW lr 3e-3 (betas 0.9/0.95, weight decay
0.01, clip 1.0), 10% linear warm-up then cosine to 10% of the peak, one pass over the corpus (`--epochs`).
The HF Trainer takes micro batches of 16 documents, each batch padded to its longest. llmlaunch runs:
  packed    its default: whole documents packed into 128-token rows (block-diagonal attention, no padding);
  unpacked  packing off: one document per row, each batch cut to its longest row (rounded up to 8).

Same tokens, same tokens per optimizer step. A packed row holds ~2.8 documents, so 16 packed rows would
carry ~2.8x the tokens of an HF micro batch and the run would take 2.8x fewer optimizer steps at the same
learning rate: a different optimisation problem (8 rows against 8 documents: +20% eval loss), not a
faster trainer. So the packed micro batch defaults to the rows that carry an HF micro batch's useful tokens
(6 here: 6 x 128 vs 16 x ~46), which gives about the same steps (115 vs 119); `--packed-micro-batch` overrides it. The
unpacked run matches HF exactly: same micro batch, steps and tokens per step.

Micro batch size: 16 documents (~740 useful tokens, 6 packed rows = 768 slots) is near the demo job's own
micro batch (examples/tiny.yaml: 8 rows x 128 = 1,024 slots). With 8 documents (~370 tokens) this
0.87M-parameter model's fixed per-operator cost (~28 ms per forward + backward, whatever the batch) is
most of a step, and the ratio measures that rather than the trainers (docs/performance.md has both).

Seeds: at this size single runs differ by +-3% in eval loss from the seed alone (data order and initial
weights), more than the 2% the target allows, so every side runs once per seed (`--seeds`, interleaved so
that load from elsewhere hits all sides alike) and the losses are compared as the mean over seeds.
Every final model is scored by one judge: next-token loss over examples/data/tiny/eval.jsonl, each
document alone. Throughput: useful (predicted, non-padding) tokens per second over steps 2..N, rank 0's
clock; the ratio is the median of the per-seed ratios. Target (issue 7): llmlaunch/HF useful tokens/s
>= 1.5 with mean eval loss <= HF's + 2%. On 2 cores, 4 seeds take ~15 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from side_by_side import ROOT, eval_loss, hf_figures, llmlaunch_figures, run_logged, tokenize_documents, versions  # noqa: E402

DATA = ROOT / "examples" / "data"
SEQ_LEN, MICRO_BATCH, WORLD, LR = 128, 16, 2, 3e-3
OPTIM = {"lr": LR, "weight_decay": 0.01, "betas": [0.9, 0.95]}
ZERO2 = {"zero_optimization": {"stage": 2, "overlap_comm": True, "contiguous_gradients": True,
                               "allgather_bucket_size": 200000000, "reduce_bucket_size": 200000000},
         "train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto",
         "train_batch_size": "auto", "gradient_clipping": "auto",
         "bf16": {"enabled": False}, "fp16": {"enabled": False}, "steps_per_print": 10**9}


def tiny_model() -> dict:
    return yaml.safe_load((ROOT / "examples" / "tiny.yaml").read_text())["train"]["model"]["config"]


def llmlaunch_job(work: Path, name: str, steps: int, packing: bool, micro_batch: int, seed: int) -> dict:
    return {"name": f"bench-{name}", "cluster": {"nodes": 1, "gpus_per_node": 0}, "train": {
        "model": {"config": tiny_model(), "tokenizer": str(DATA / "tokenizer")},
        "data": {"train": str(DATA / "tiny" / "train.jsonl"), "seq_len": SEQ_LEN, "packing": packing,
                 "cache_dir": str(work.parent / "cache")},
        "optim": {**OPTIM, "grad_clip": 1.0},
        "schedule": {"kind": "cosine", "warmup_steps": max(1, round(0.1 * steps)), "min_lr_ratio": 0.1},
        "run": {"output_dir": str(work / name), "max_steps": steps, "micro_batch_size": micro_batch,
                "log_every": 10, "eval_every": 0, "save_every": 0, "seed": seed, "resume": False},
        "deepspeed": {"preset": "zero2"}, "precision": "fp32", "metrics": {"enabled": False},
    }}


def hf_spec(steps: int, seed: int, micro_batch: int) -> dict:
    return {"model": tiny_model(), "tokenizer": str(DATA / "tokenizer"), "train": str(DATA / "tiny" / "train.jsonl"),
            "seq_len": SEQ_LEN, "micro_batch": micro_batch, "lr": LR, "weight_decay": OPTIM["weight_decay"],
            "betas": OPTIM["betas"], "warmup_steps": max(1, round(0.1 * steps)), "min_lr_ratio": 0.1,
            "steps": steps, "seed": seed, "deepspeed": ZERO2, "precision": "fp32", "attn": "sdpa"}


def run_hf(work: Path, spec: dict, judge) -> dict:
    (work / "hf").mkdir(parents=True, exist_ok=True)
    (work / "hf" / "spec.json").write_text(json.dumps(spec))
    threads = {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // WORLD))}  # what `llmlaunch train` sets
    wall = run_logged([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(WORLD),
                       "--master-port", str(free_port()), str(ROOT / "bench" / "hf_trainer_run.py"),
                       "--spec", str(work / "hf" / "spec.json"), "--out", str(work / "hf")],
                      work / "hf.log", env={**threads, "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(ROOT)})
    return {**hf_figures(work / "hf"), "wall_s": round(wall, 1), "eval_loss": judge(work / "hf" / "final")}


def run_llmlaunch(work: Path, job: dict, judge) -> dict:
    name = job["name"].removeprefix("bench-")
    (work / f"{name}.yaml").write_text(yaml.safe_dump(job, sort_keys=False))
    wall = run_logged([sys.executable, "-m", "launcher.cli", "train", str(work / f"{name}.yaml"),
                       "--nproc-per-node", str(WORLD)], work / f"{name}.log",
                      env={"LLMLAUNCH_FORCE_CPU": "1", "PYTHONPATH": str(ROOT)})
    return {**llmlaunch_figures(work / name), "wall_s": round(wall, 1), "eval_loss": judge(work / name / "final")}


def summary(runs: list[dict]) -> dict:
    """One side over the seeds: each seed's figures, the mean and spread of the judged eval loss."""
    losses = [r["eval_loss"] for r in runs]
    return {"eval_loss_mean": round(statistics.mean(losses), 4),
            "eval_loss_sd": round(statistics.stdev(losses), 4) if len(losses) > 1 else None,
            "useful_tokens_per_s_median": round(statistics.median(r["useful_tokens_per_s"] for r in runs), 1),
            "runs": runs}


def versus(side: list[dict], hf: list[dict]) -> dict:
    ratios = [s["useful_tokens_per_s"] / h["useful_tokens_per_s"] for s, h in zip(side, hf, strict=True)]
    gaps = [(s["eval_loss"] - h["eval_loss"]) / h["eval_loss"] for s, h in zip(side, hf, strict=True)]
    ratio = statistics.median(ratios)
    hf_mean = statistics.mean(h["eval_loss"] for h in hf)
    gap = (statistics.mean(s["eval_loss"] for s in side) - hf_mean) / hf_mean
    return {
        "tokens_per_s_ratio": round(ratio, 3),
        "per_seed_ratio": [round(r, 3) for r in ratios],
        "eval_loss_vs_hf_pct": round(100 * gap, 2),
        "per_seed_eval_loss_vs_hf_pct": [round(100 * g, 2) for g in gaps],
        "useful_tokens_ratio": round(sum(s["useful_tokens"] for s in side) / sum(h["useful_tokens"] for h in hf), 4),
        "target_met": bool(ratio >= 1.5 and gap <= 0.02),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1234,7,99,5", help="comma-separated; every side runs once per seed")
    parser.add_argument("--micro-batch", type=int, default=MICRO_BATCH,
                        help="documents per micro batch of the HF Trainer and the unpacked run")
    parser.add_argument(
        "--packed-micro-batch",
        type=int,
        help="rows per micro batch of the packed run (default: the rows holding an HF micro batch's tokens)",
    )
    parser.add_argument("--no-unpacked", action="store_true", help="skip the llmlaunch run with packing off")
    parser.add_argument("--epochs", type=float, default=1.0, help="passes over the training documents, each side")
    parser.add_argument("--keep", type=Path, help="work directory to keep (default: a temporary one)")
    args = parser.parse_args()
    try:
        seeds = [int(seed) for seed in args.seeds.split(",")]
    except ValueError:
        parser.error(f"--seeds must be comma-separated integers, not {args.seeds!r}")
    work = args.keep or Path(tempfile.mkdtemp(prefix="cpu-vs-hf-"))
    work.mkdir(parents=True, exist_ok=True)
    from transformers import AutoTokenizer

    from trainer.config.train_config import TrainConfig
    from trainer.data.splits import build_data, load_tokenizer

    tokenizer = AutoTokenizer.from_pretrained(DATA / "tokenizer")
    texts = [json.loads(line)["text"] for line in (DATA / "tiny" / "train.jsonl").read_text().splitlines() if line]
    train_docs = tokenize_documents(tokenizer, texts, SEQ_LEN)
    micro_batch = args.micro_batch
    if micro_batch < 1:
        parser.error(f"--micro-batch must be at least 1, not {micro_batch}")
    cfg = TrainConfig.model_validate(llmlaunch_job(work / "plan", "packed", 1, True, micro_batch, seeds[0])["train"])
    packed = build_data(cfg, load_tokenizer(cfg.model), split="train", packing=True, cache_dir=work / "cache")
    # Useful tokens of an HF micro batch (its documents, first token unpredicted) in packed rows' worth.
    hf_micro_tokens = micro_batch * sum(len(d) - 1 for d in train_docs) / len(train_docs)
    packed_micro = args.packed_micro_batch or max(1, round(hf_micro_tokens / (packed.num_targets / len(packed))))
    hf_steps = round(args.epochs * len(train_docs) / (micro_batch * WORLD))
    packed_steps = round(args.epochs * len(packed) / (packed_micro * WORLD))

    evals = [json.loads(line)["text"] for line in (DATA / "tiny" / "eval.jsonl").read_text().splitlines() if line]
    eval_docs = tokenize_documents(tokenizer, evals, SEQ_LEN)

    def judge(model_dir: Path) -> float:
        return round(eval_loss(model_dir, eval_docs, tokenizer.pad_token_id), 4)

    runs: dict[str, list[dict]] = {"hf_trainer": [], "llmlaunch_packed": [], "llmlaunch_unpacked": []}
    for seed in seeds:  # interleaved: a busy spell elsewhere slows every side of one seed, not one side
        seed_dir = work / f"seed-{seed}"
        runs["hf_trainer"].append({"seed": seed, **run_hf(seed_dir, hf_spec(hf_steps, seed, micro_batch), judge)})
        job = llmlaunch_job(seed_dir, "packed", packed_steps, True, packed_micro, seed)
        runs["llmlaunch_packed"].append({"seed": seed, **run_llmlaunch(seed_dir, job, judge)})
        if not args.no_unpacked:
            job = llmlaunch_job(seed_dir, "unpacked", hf_steps, False, micro_batch, seed)
            runs["llmlaunch_unpacked"].append({"seed": seed, **run_llmlaunch(seed_dir, job, judge)})
    runs = {side: side_runs for side, side_runs in runs.items() if side_runs}
    print(json.dumps({
        "bench": "cpu_vs_hf", "device": f"cpu x{os.cpu_count()}", "versions": versions(),
        "setup": {"model": "examples/tiny.yaml (llama, hidden 128, 4 layers)", "seq_len": SEQ_LEN,
                  "micro_batch": micro_batch, "packed_micro_batch": packed_micro, "processes": WORLD,
                  "zero": 2, "precision": "fp32", "lr": LR, "epochs": args.epochs, "seeds": seeds,
                  "train_documents": len(train_docs), "packed_rows": len(packed), "eval_documents": len(eval_docs)},
        **{side: summary(side_runs) for side, side_runs in runs.items()},
        "vs_hf": {side.removeprefix("llmlaunch_"): versus(side_runs, runs["hf_trainer"])
                  for side, side_runs in runs.items() if side != "hf_trainer"},
        "work_dir": str(work) if args.keep else None,
    }))


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    main()
