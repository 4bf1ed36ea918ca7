"""Is the bundled tiny data learnable? Train examples/tiny.yaml's model with plain torch (no DeepSpeed)
on the bundled corpus through trainer.data.splits and print the eval loss curve as JSON.

    python bench/tiny_data_learning.py [--steps 200] [--batch 16] [--format text|chat]
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import torch
import yaml

from trainer.config.train_config import TrainConfig
from trainer.data.splits import build_data, for_attention, load_tokenizer

ROOT = Path(__file__).resolve().parents[1]


def config(data_format: str) -> TrainConfig:
    train = yaml.safe_load((ROOT / "examples" / "tiny.yaml").read_text())["train"]
    train["model"]["tokenizer"] = str(ROOT / "examples" / "data" / "tokenizer")
    tiny = ROOT / "examples" / "data" / "tiny"
    names = ("chat.jsonl", "chat_eval.jsonl") if data_format == "chat" else ("train.jsonl", "eval.jsonl")
    train["data"].update(train=str(tiny / names[0]), eval=str(tiny / names[1]), format=data_format)
    return TrainConfig.model_validate(train)


def eval_loss(model, data) -> float:
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in data.iter_batches(0, rank=0, world_size=1, micro_batch_size=16, seed=0):
            n = int((batch["labels"][:, 1:] != -100).sum())
            total += model(**for_attention(batch, "sdpa", torch.float32)).loss.item() * n
            count += n
    model.train()
    return total / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--format", choices=["text", "chat"], default="text")
    args = parser.parse_args()
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = config(args.format)
    torch.manual_seed(cfg.run.seed)
    tokenizer = load_tokenizer(cfg.model)
    with tempfile.TemporaryDirectory() as cache:
        train = build_data(cfg, tokenizer, split="train", packing=cfg.data.packing, cache_dir=Path(cache))
        evaluation = build_data(cfg, tokenizer, split="eval", packing=cfg.data.packing, cache_dir=Path(cache))
    model_cfg = AutoConfig.for_model(**cfg.model.config)
    model_cfg._attn_implementation = "sdpa"
    model = AutoModelForCausalLM.from_config(model_cfg)
    optim = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay,
                              betas=cfg.optim.betas)
    warmup = cfg.schedule.warmup_steps

    def lr_factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, args.steps - warmup)
        return cfg.schedule.min_lr_ratio + (1 - cfg.schedule.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    sched = torch.optim.lr_scheduler.LambdaLR(optim, lr_factor)
    curve = [{"step": 0, "eval_loss": round(eval_loss(model, evaluation), 4)}]
    per_epoch = train.batches_per_epoch(args.batch, 1)
    start = time.perf_counter()
    step = 0
    while step < args.steps:
        epoch, offset = divmod(step, per_epoch)
        for batch in train.iter_batches(epoch, offset, rank=0, world_size=1, micro_batch_size=args.batch,
                                        seed=cfg.run.seed):
            loss = model(**for_attention(batch, "sdpa", torch.float32)).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
            optim.step()
            sched.step()
            optim.zero_grad(set_to_none=True)
            step += 1
            if step % 50 == 0 or step == args.steps:
                curve.append({"step": step, "train_loss": round(loss.item(), 4),
                              "eval_loss": round(eval_loss(model, evaluation), 4)})
            if step == args.steps:
                break
    print(json.dumps({
        "format": args.format, "steps": args.steps, "micro_batch": args.batch, "seq_len": cfg.data.seq_len,
        "train_sequences": len(train), "eval_sequences": len(evaluation),
        "epochs": round(args.steps * args.batch / len(train), 2),
        "seconds": round(time.perf_counter() - start, 1), "curve": curve,
    }))


if __name__ == "__main__":
    main()
