"""Packed attention on the device: every kernel gives each document's own logits, and how fast each runs.

Three packed rows of several documents (a micro batch > 1) through a small Llama, once per kernel
(sdpa with the block mask, eager, flex_attention's BlockMask; flash_attention_2 one row at a time when
flash_attn imports), compared with each document run alone, in fp32 (TF32 off). Then forward + backward
time per kernel on a [8, 2048] packed batch in bf16 (CUDA), or forward time of a [2, 256] one in fp32
(CPU smoke: torch has no flex_attention backward on the CPU). Prints
one JSON object. Used by bench/gpu_check.py; `--device cpu` checks the same path here.

    python bench/packed_attention_check.py [--device cuda|cpu]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's trainer, no install needed

import numpy as np  # noqa: E402
import torch  # noqa: E402

from trainer.data.row_layout import ArrayRows  # noqa: E402
from trainer.data.token_data import TokenData, for_attention, pack_documents  # noqa: E402


def llama(attn: str, device: str, dtype, layers: int = 2, hidden: int = 128, vocab: int = 1000):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                      num_attention_heads=hidden // 32, num_key_value_heads=hidden // 64,
                      max_position_embeddings=4096, attn_implementation=attn)
    return LlamaForCausalLM(cfg).to(device=device, dtype=dtype)


def packed_batch(lengths: list[int], seq_len: int, vocab: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    docs = [(rng.integers(3, vocab, n).astype(np.int32), np.ones(n, bool)) for n in lengths]
    data = TokenData(ArrayRows(pack_documents(docs, seq_len, pad_id=0)), packed=True, pad_id=0, shuffle=False)
    return docs, data


def equivalence(attn: str, device: str) -> float:
    """Largest |logit difference| between packed rows and the documents alone."""
    docs, data = packed_batch([11, 17, 9, 20, 30, 25, 5, 40, 13], 64, 1000, seed=1)
    model = llama(attn, device, torch.float32).eval()
    rows = [np.arange(len(data))] if attn != "flash_attention_2" else [np.array([r]) for r in range(len(data))]
    tokens, _, docs_of = data.rows.gather(np.arange(len(data)), data.seq_len)
    worst = 0.0
    with torch.no_grad():
        for picked in rows:
            batch = {k: v.to(device) for k, v in data[picked].items()}
            logits = model(**for_attention(batch, attn, torch.float32)).logits
            for i, row in enumerate(picked):
                doc_ids = docs_of[row]
                for number in range(int(doc_ids.max()) + 1):
                    cols = np.flatnonzero(doc_ids == number)
                    ids = torch.as_tensor(tokens[row, cols], dtype=torch.long, device=device)[None]
                    alone = model(input_ids=ids).logits[0]
                    worst = max(worst, (logits[i, cols[0] : cols[-1] + 1] - alone).abs().max().item())
    return worst


def speed(attn: str, device: str, dtype, rows: int, seq_len: int, steps: int) -> float:
    """Median seconds per forward + backward of `rows` packed rows (documents ~ exponential, mean seq_len / 8);
    flash_attention_2 takes them one row at a time. Forward only on the CPU: torch has no flex_attention
    backward there."""
    rng = np.random.default_rng(0)
    lengths = [int(min(seq_len, 1 + rng.exponential(seq_len / 8))) for _ in range(rows * 12)]
    vocab = 32000 if device == "cuda" else 1000
    _, data = packed_batch(lengths, seq_len, vocab)
    picked = np.arange(min(rows, len(data)))
    groups = [picked] if attn != "flash_attention_2" else [picked[i : i + 1] for i in range(len(picked))]
    batches = [{k: v.to(device) for k, v in data[g].items()} for g in groups]
    model = llama(attn, device, dtype, layers=4, hidden=1024 if device == "cuda" else 128, vocab=vocab)
    times = []
    for _ in range(steps + 2):  # two warm-up steps (flex_attention compiles on the first)
        start = time.perf_counter()
        for batch in batches:
            if device == "cuda":
                model(**for_attention(batch, attn, dtype)).loss.backward()
            else:
                with torch.no_grad():
                    model(**for_attention(batch, attn, dtype))
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return round(float(np.median(times[2:])), 5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    kernels = ["sdpa", "eager", "flex_attention"]
    if args.device == "cuda" and importlib.util.find_spec("flash_attn") is not None:
        kernels.append("flash_attention_2")
    cuda = args.device == "cuda"
    result = {"device": torch.cuda.get_device_name() if cuda else "cpu", "kernels": {}}
    for attn in kernels:
        worst = equivalence(attn, args.device)
        seconds = speed(attn, args.device, torch.bfloat16 if cuda else torch.float32, 8 if cuda else 2,
                        2048 if cuda else 256, 5 if cuda else 2)
        result["kernels"][attn] = {"max_abs_logit_diff": worst, "same_as_alone": worst < 1e-4,
                                   "step_s": seconds}
    result["all_equivalent"] = all(k["same_as_alone"] for k in result["kernels"].values())
    print(json.dumps(result))


if __name__ == "__main__":
    main()
