"""The Hugging Face Trainer side of the benchmarks, as people usually write it (started by torchrun).

Tokenize each document (+ EOS, as llmlaunch does, so both train on the same tokens) with truncation to
seq_len, DataCollatorForLanguageModeling(mlm=False) pads each batch to its longest document, no packing;
transformers Trainer with DeepSpeed through TrainingArguments(deepspeed=...). Only instrumentation is
added: the collator counts the tokens the loss predicts, a callback times every optimizer step (no device
synchronisation: the step ends when the Trainer says so, as for llmlaunch). Each rank writes
<out>/hf-rank<r>.json: {"step_end": [perf_counter at the end of each step], "tokens": [per batch]};
rank 0 saves the final model to <out>/final.

    torchrun --nproc-per-node 2 bench/hf_trainer_run.py --spec spec.json --out DIR
spec.json: {"model": {...AutoConfig.for_model kwargs incl. model_type}, "tokenizer": dir, "train": jsonl,
  "seq_len", "micro_batch", "lr", "weight_decay", "betas", "warmup_steps", "min_lr_ratio", "steps",
  "seed", "deepspeed": {...} | null, "precision": "fp32" | "bf16", "lora": {r, alpha, target_modules} | null,
  "attn": "sdpa", "max_seconds": float | null, "save": bool}
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch


class CountingCollator:
    """DataCollatorForLanguageModeling plus a count of each batch's predicted tokens (labels[:, 1:])."""

    def __init__(self, inner):
        self.inner, self.tokens = inner, []

    def __call__(self, features):
        batch = self.inner(features)
        self.tokens.append(int((batch["labels"][:, 1:] != -100).sum()))
        return batch


def make_callback(spec: dict, step_end: list):
    from transformers import TrainerCallback

    class Timing(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            step_end.append(time.perf_counter())
            if spec.get("max_seconds") and step_end[-1] - self.start > spec["max_seconds"]:
                control.should_training_stop = True  # one process only: ranks would disagree
            return control

    return Timing()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    spec = json.loads(args.spec.read_text())
    from datasets import load_dataset
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForLanguageModeling,
        Trainer,
        TrainingArguments,
    )
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    rank = int(os.environ.get("RANK", 0))
    tokenizer = AutoTokenizer.from_pretrained(spec["tokenizer"])
    raw = load_dataset("json", data_files=spec["train"], split="train")
    eos = tokenizer.eos_token

    def tokenize(batch):
        return tokenizer([t + eos for t in batch["text"]], truncation=True, max_length=spec["seq_len"])

    train = raw.map(tokenize, batched=True, remove_columns=raw.column_names)
    arch = dict(spec["model"])
    torch.manual_seed(spec["seed"])  # the same initial weights as llmlaunch's (seeded before from_config)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(arch.pop("model_type"), **arch),
                                             attn_implementation=spec.get("attn", "sdpa"))
    model.config.use_cache = False
    if spec.get("lora"):
        from peft import LoraConfig, TaskType, get_peft_model

        lora = spec["lora"]
        model = get_peft_model(model, LoraConfig(task_type=TaskType.CAUSAL_LM, r=lora["r"], lora_alpha=lora["alpha"],
                                                 lora_dropout=0.0, target_modules=lora["target_modules"]))
    cpu = not torch.cuda.is_available()
    bf16 = spec["precision"] == "bf16"
    training_args = TrainingArguments(
        output_dir=str(args.out / "hf-trainer"), per_device_train_batch_size=spec["micro_batch"],
        learning_rate=spec["lr"], weight_decay=spec["weight_decay"], adam_beta1=spec["betas"][0],
        adam_beta2=spec["betas"][1], max_grad_norm=1.0, max_steps=spec["steps"], warmup_steps=spec["warmup_steps"],
        lr_scheduler_type="cosine_with_min_lr", lr_scheduler_kwargs={"min_lr_rate": spec["min_lr_ratio"]},
        logging_steps=max(1, spec["steps"] // 10), save_strategy="no", report_to="none", seed=spec["seed"],
        use_cpu=cpu, bf16=bf16, optim="adamw_torch" if cpu else "adamw_torch_fused", disable_tqdm=True,
        deepspeed=spec.get("deepspeed"),
    )
    collator = CountingCollator(DataCollatorForLanguageModeling(tokenizer, mlm=False))
    step_end: list[float] = []
    trainer = Trainer(model=model, args=training_args, train_dataset=train, data_collator=collator,
                      callbacks=[make_callback(spec, step_end)])
    result = trainer.train()
    steps = len(step_end)
    record = {"rank": rank, "step_end": step_end, "tokens": collator.tokens[:steps],
              "train_runtime": result.metrics.get("train_runtime"), "train_loss": result.training_loss}
    if torch.cuda.is_available():
        record["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    (args.out / f"hf-rank{rank}.json").write_text(json.dumps(record))
    if spec.get("save", True):
        trainer.save_model(str(args.out / "final"))
        if rank == 0:
            tokenizer.save_pretrained(str(args.out / "final"))


if __name__ == "__main__":
    main()
