"""Running one side of a benchmark (llmlaunch or the HF Trainer) and reading its figures back.

Both sides are timed the same way: from the end of optimizer step 1 (start-up, first-step allocations
and any compilation excluded) to the end of the last step, on rank 0, and "useful" tokens are the
tokens the loss predicts (no padding, not the first token of a sequence), summed over ranks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def run_logged(cmd: list[str], log: Path, env: dict | None = None, timeout: float = 1800) -> float:
    """Run a command with its output in `log`; returns its wall seconds; fails with the log's tail."""
    start = time.perf_counter()
    with open(log, "w") as handle:
        code = subprocess.run(cmd, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=handle,
                              stderr=subprocess.STDOUT, timeout=timeout).returncode
    if code != 0:
        tail = log.read_text()[-4000:]
        sys.exit(f"{' '.join(cmd[:4])} ... failed with exit code {code}; its log ({log}) ends:\n{tail}")
    return time.perf_counter() - start


def llmlaunch_figures(out: Path) -> dict:
    """Throughput of a llmlaunch run from its metrics.jsonl (every log step after step 1)."""
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    records = [r for r in records if "tokens_per_s" in r]
    if len(records) < 2 or records[0]["step"] != 1:
        raise ValueError(f"{out}/metrics.jsonl needs step 1 and a later log step to time the run")
    seconds = tokens = 0.0
    for before, after in zip(records, records[1:], strict=False):
        delta = after["tokens"] - before["tokens"]
        seconds += delta / after["tokens_per_s"]
        tokens += delta
    steps = records[-1]["step"] - 1
    return {
        "steps": records[-1]["step"], "useful_tokens": records[-1]["tokens"],
        "useful_tokens_per_s": round(tokens / seconds, 1), "step_s": round(seconds / steps, 4),
        "data_wait_s": round(sum(r.get("data_wait_s", 0.0) for r in records), 3),
        "final_train_loss": records[-1]["loss"],
    }


def hf_figures(out: Path) -> dict:
    """Throughput of a HF Trainer run from the files bench/hf_trainer_run.py wrote (one per rank)."""
    ranks = sorted(out.glob("hf-rank*.json"))
    if not ranks:
        raise ValueError(f"no hf-rank*.json in {out}: the HF Trainer run wrote no timings")
    per_rank = [json.loads(p.read_text()) for p in ranks]
    main = next(r for r in per_rank if r["rank"] == 0)
    ends, steps = main["step_end"], len(main["step_end"])
    if steps < 2:
        raise ValueError("the HF Trainer run made fewer than 2 steps")
    after_first = sum(sum(r["tokens"][1:steps]) for r in per_rank)
    seconds = ends[-1] - ends[0]
    figures = {
        "steps": steps, "useful_tokens": sum(sum(r["tokens"][:steps]) for r in per_rank),
        "useful_tokens_per_s": round(after_first / seconds, 1), "step_s": round(seconds / (steps - 1), 4),
        "mean_train_loss": round(main["train_loss"], 6),  # the Trainer's average over the whole run
    }
    if "peak_memory_gib" in main:
        figures["peak_memory_gib"] = round(main["peak_memory_gib"], 2)
    return figures


def tokenize_documents(tokenizer, texts: list[str], seq_len: int) -> list[list[int]]:
    """Each document + EOS, truncated to seq_len: the same ids both sides train on."""
    encoded = tokenizer([t + tokenizer.eos_token for t in texts if t], truncation=True, max_length=seq_len)
    return encoded["input_ids"]


@torch.no_grad()
def eval_loss(model_dir: Path, documents: list[list[int]], pad_id: int, batch: int = 16) -> float:
    """Token-weighted next-token loss of a saved model over documents, each alone (padded, 2D mask):
    one judge for both sides, independent of how either trained or evaluated."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa").eval()
    total, count = 0.0, 0
    for start in range(0, len(documents), batch):
        chunk = documents[start : start + batch]
        width = max(len(d) for d in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, doc in enumerate(chunk):
            ids[row, : len(doc)] = torch.tensor(doc)
            mask[row, : len(doc)] = 1
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        labels = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
        total += torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                                   ignore_index=-100, reduction="sum").item()
        count += int((labels != -100).sum())
    return total / count


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": sys.version.split()[0]}
    for name in ("torch", "transformers", "deepspeed", "peft"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found
