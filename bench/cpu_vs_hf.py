"""llmlaunch vs the Hugging Face Trainer on this machine's CPU, side by side in one run; prints one JSON line.

    PYTHONPATH=. python bench/cpu_vs_hf.py [--epochs 1.0] [--packed-micro-batch 8] [--no-unpacked] [--keep DIR]

Both sides: examples/tiny.yaml's Llama model built from its config with the same seed (same initial
weights), the bundled tokenizer, examples/data/tiny/train.jsonl (3,800 documents of 6-113 tokens),
seq_len 128, micro batch 8, 2 processes (torchrun), DeepSpeed ZeRO-2, fp32, AdamW lr 3e-3 (betas 0.9/0.95,
weight decay 0.01, clip 1.0), 10% linear warm-up then cosine to 10% of the peak. The HF Trainer pads
each batch to its longest document. llmlaunch runs twice:
  packed    its default: documents packed into 128-token rows (block-diagonal attention, no padding);
  unpacked  packing off: one document per row, each batch cut to its longest row (rounded up to 8).

Every run trains on the same tokens: `--epochs` passes over the same documents. Packing puts ~2.8
documents in a row, so a packed step carries ~2.8x the useful tokens of an HF step and the packed run
takes rows / 16 steps where HF and unpacked take documents / 16 (same micro batch of 8 sequences, so
the steps must differ for the tokens to be equal); the warm-up is the same 10% share of each run. The
unpacked run matches HF exactly: same steps, tokens per step, micro batch and learning rate. Fewer,
larger steps at the same learning rate learn less per token early in training, which the packed run's
eval loss shows; that is the optimisation trade of a bigger token batch, not of the trainer.
`--packed-micro-batch 3` gives the packed run about the useful tokens per step of an HF step instead
(3 x 128 vs 8 documents of ~46 tokens), hence about the same number of steps.
Every final model is scored by one judge: next-token loss over examples/data/tiny/eval.jsonl, each
document alone. Throughput: useful (predicted, non-padding) tokens per second over steps 2..N, rank 0's
clock. Target (issue 7): llmlaunch/HF useful tokens/s >= 1.5 with eval loss <= HF's + 2%.
The machine may be shared: the runs are sequential, so load from elsewhere shifts the ratio; run twice.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from side_by_side import (ROOT, eval_loss, hf_figures, llmlaunch_figures, run_logged, tokenize_documents,  # noqa: E402
                          versions)

DATA = ROOT / "examples" / "data"
SEQ_LEN, MICRO_BATCH, WORLD, LR, SEED = 128, 8, 2, 3e-3, 1234
OPTIM = {"lr": LR, "weight_decay": 0.01, "betas": [0.9, 0.95]}
ZERO2 = {"zero_optimization": {"stage": 2, "overlap_comm": True, "contiguous_gradients": True,
                               "allgather_bucket_size": 200000000, "reduce_bucket_size": 200000000},
         "train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto",
         "train_batch_size": "auto", "gradient_clipping": "auto",
         "bf16": {"enabled": False}, "fp16": {"enabled": False}, "steps_per_print": 10**9}


def tiny_model() -> dict:
    return yaml.safe_load((ROOT / "examples" / "tiny.yaml").read_text())["train"]["model"]["config"]


def llmlaunch_job(work: Path, steps: int, packing: bool = True, micro_batch: int = MICRO_BATCH) -> dict:
    name = "packed" if packing else "unpacked"
    return {"name": f"bench-{name}", "cluster": {"nodes": 1, "gpus_per_node": 0}, "train": {
        "model": {"config": tiny_model(), "tokenizer": str(DATA / "tokenizer")},
        "data": {"train": str(DATA / "tiny" / "train.jsonl"), "seq_len": SEQ_LEN, "packing": packing,
                 "cache_dir": str(work / "cache")},
        "optim": {**OPTIM, "grad_clip": 1.0},
        "schedule": {"kind": "cosine", "warmup_steps": max(1, round(0.1 * steps)), "min_lr_ratio": 0.1},
        "run": {"output_dir": str(work / name), "max_steps": steps, "micro_batch_size": micro_batch,
                "log_every": 10, "eval_every": 0, "save_every": 0, "seed": SEED, "resume": False},
        "deepspeed": {"preset": "zero2"}, "precision": "fp32", "metrics": {"enabled": False},
    }}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=float, default=1.0, help="passes over the training documents, each side")
    parser.add_argument("--packed-micro-batch", type=int, default=MICRO_BATCH,
                        help="rows per micro batch of the packed run (default: the HF side's 8)")
    parser.add_argument("--no-unpacked", action="store_true", help="skip the llmlaunch run with packing off")
    parser.add_argument("--keep", type=Path, help="work directory to keep (default: a temporary one)")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="cpu-vs-hf-"))
    work.mkdir(parents=True, exist_ok=True)
    from transformers import AutoTokenizer

    from trainer.config import TrainConfig
    from trainer.data import build_data, load_tokenizer

    # Steps for the same tokens: llmlaunch's packed rows and the HF side's documents, per global batch.
    job = llmlaunch_job(work, steps=1)
    cfg = TrainConfig.model_validate(job["train"])
    packed = build_data(cfg, load_tokenizer(cfg.model), split="train", packing=True, cache_dir=work / "cache")
    tokenizer = AutoTokenizer.from_pretrained(DATA / "tokenizer")
    texts = [json.loads(line)["text"] for line in (DATA / "tiny" / "train.jsonl").read_text().splitlines() if line]
    documents = len([t for t in texts if t])
    llm_steps = round(args.epochs * len(packed) / (args.packed_micro_batch * WORLD))
    hf_steps = round(args.epochs * documents / (MICRO_BATCH * WORLD))

    threads = {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // WORLD))}  # what `llmlaunch train` sets
    spec = {"model": tiny_model(), "tokenizer": str(DATA / "tokenizer"), "train": str(DATA / "tiny" / "train.jsonl"),
            "seq_len": SEQ_LEN, "micro_batch": MICRO_BATCH, "lr": LR, "weight_decay": OPTIM["weight_decay"],
            "betas": OPTIM["betas"], "warmup_steps": max(1, round(0.1 * hf_steps)), "min_lr_ratio": 0.1,
            "steps": hf_steps, "seed": SEED, "deepspeed": ZERO2, "precision": "fp32", "attn": "sdpa"}
    (work / "hf").mkdir(exist_ok=True)
    (work / "hf" / "spec.json").write_text(json.dumps(spec))
    hf_wall = run_logged([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(WORLD),
                          "--master-port", str(free_port()), str(ROOT / "bench" / "hf_trainer_run.py"),
                          "--spec", str(work / "hf" / "spec.json"), "--out", str(work / "hf")],
                         work / "hf.log", env={**threads, "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(ROOT)})

    walls = {}
    runs = [("packed", True, llm_steps, args.packed_micro_batch)] + ([] if args.no_unpacked else
                                                                     [("unpacked", False, hf_steps, MICRO_BATCH)])
    for name, packing, steps, micro_batch in runs:
        job = llmlaunch_job(work, steps, packing, micro_batch)
        (work / f"{name}.yaml").write_text(yaml.safe_dump(job, sort_keys=False))
        walls[name] = run_logged([sys.executable, "-m", "launcher.cli", "train", str(work / f"{name}.yaml"),
                                  "--nproc-per-node", str(WORLD)], work / f"{name}.log",
                                 env={"LLMLAUNCH_FORCE_CPU": "1", "PYTHONPATH": str(ROOT)})

    evals = [json.loads(line)["text"] for line in (DATA / "tiny" / "eval.jsonl").read_text().splitlines() if line]
    eval_docs = tokenize_documents(tokenizer, evals, SEQ_LEN)
    hf = {**hf_figures(work / "hf"), "wall_s": round(hf_wall, 1),
          "eval_loss": round(eval_loss(work / "hf" / "final", eval_docs, tokenizer.pad_token_id), 4)}
    sides, versus = {}, {}
    for name, wall in walls.items():
        figures = {**llmlaunch_figures(work / name), "wall_s": round(wall, 1),
                   "eval_loss": round(eval_loss(work / name / "final", eval_docs, tokenizer.pad_token_id), 4)}
        ratio = figures["useful_tokens_per_s"] / hf["useful_tokens_per_s"]
        loss_gap = (figures["eval_loss"] - hf["eval_loss"]) / hf["eval_loss"]
        sides[f"llmlaunch_{name}"] = figures
        versus[name] = {"tokens_per_s_ratio": round(ratio, 3), "eval_loss_vs_hf_pct": round(100 * loss_gap, 2),
                        "useful_tokens_ratio": round(figures["useful_tokens"] / hf["useful_tokens"], 4),
                        "target_met": bool(ratio >= 1.5 and loss_gap <= 0.02)}
    print(json.dumps({
        "bench": "cpu_vs_hf", "device": f"cpu x{os.cpu_count()}", "versions": versions(),
        "setup": {"model": "examples/tiny.yaml (llama, hidden 128, 4 layers)", "seq_len": SEQ_LEN,
                  "micro_batch": MICRO_BATCH, "packed_micro_batch": args.packed_micro_batch, "processes": WORLD,
                  "zero": 2, "precision": "fp32", "lr": LR,
                  "epochs": args.epochs, "train_documents": documents, "packed_rows": len(packed),
                  "eval_documents": len(eval_docs)},
        "hf_trainer": hf, **sides, "vs_hf": versus, "work_dir": str(work) if args.keep else None,
    }))


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    main()
