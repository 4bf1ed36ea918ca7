"""Data preparation at two corpus sizes, as JSON: llmlaunch's sharded preparation against HF `datasets`.

    python bench/data_prep.py [--sizes 40,400] [--baseline-sizes 40] [--repeat 2] [--work /tmp/llmlaunch-data-prep]

For each size (MB) a folder of generated JSONL files (20 MB each, documents of 200-4000 characters of
words, seeded) is written under --work and deleted at the end. Figures per size:
  prepare: 2 processes (rank 0 and 1 of 2, as two nodes would) run build_data on an empty cache:
           wall seconds, tokens/s, peak RSS (ru_maxrss) of each process
  baseline (sizes in --baseline-sizes): load_dataset("json") + map(num_proc=2, batched) with the same
           tokenizer, on the same files: wall seconds, tokens/s, peak RSS of the parent and of its workers
  second_start: a fresh process that loads the tokenizer, finds the prepared cache and builds the first
           micro batch (the data's part of a restart): seconds, and the bytes it read (rchar: libraries,
           tokenizer; not the corpus); trainer_first_step_s: `python -m trainer` (a tiny model, 1 CPU
           process) on that cache, from its start to its first step
Targets (issue 14): prepare tokens/s >= baseline; RSS at the largest size <= 1.2 x at the smallest;
second_start independent of size (within 20%).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TOKENIZER = ROOT / "examples" / "data" / "tokenizer"
WORDS = [
    "the", "red", "ball", "is", "in", "the", "kitchen", "and", "a", "small", "cat", "lived", "in", "the", "hall",
    "counting", "by", "two", "from", "ten", "green", "lamp", "once", "upon", "a", "time", "there", "was", "an",
    "object", "whose", "colour", "changed", "every", "day", "of", "the", "week"
]


def generate(folder: Path, megabytes: int, seed: int = 0) -> None:
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    words = np.array(WORDS)
    for part in range(-(-megabytes // 20)):
        target = min(20, megabytes - 20 * part) * 10**6
        with open(folder / f"part-{part:04d}.jsonl", "w") as f:
            written = 0
            while written < target:
                lines = []
                for n in rng.integers(40, 800, 2000):
                    lines.append(json.dumps({"text": " ".join(words[rng.integers(0, len(words), n)])}) + "\n")
                block = "".join(lines)
                f.write(block)
                written += len(block)


def config(folder: Path, cache: Path):
    from trainer.config.train_config import TrainConfig

    return TrainConfig.model_validate({
        "model": {"config": {"model_type": "llama", "vocab_size": 512}, "tokenizer": str(TOKENIZER)},
        "data": {"train": str(folder), "seq_len": 1024, "cache_dir": str(cache), "chunk_mb": 4},
        "run": {"max_steps": 1}})


def peak_rss_mb(who=resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024


def worker(folder: Path, cache: Path, rank: int, world: int) -> dict:
    from trainer.data.splits import build_data, load_tokenizer

    cfg = config(folder, cache)
    tokenizer = load_tokenizer(cfg.model)
    ready = time.time()  # imports and the tokenizer loaded: the baseline's clock starts here too
    data = build_data(cfg, tokenizer, split="train", packing=True, cache_dir=cache, rank=rank, world_size=world)
    return {"rss_mb": round(peak_rss_mb(), 1), "tokens": int(data.rows.meta["tokens"]), "ready": ready,
            "end": time.time()}


def baseline(folder: Path, hf_cache: Path) -> dict:
    import datasets

    from trainer.data.splits import load_tokenizer

    datasets.disable_progress_bars()
    tokenizer = load_tokenizer(config(folder, hf_cache).model)
    start = time.perf_counter()
    ds = datasets.load_dataset("json", data_files=sorted(str(f) for f in folder.iterdir()), split="train",
                               cache_dir=str(hf_cache))
    mapped = ds.map(lambda batch: {"input_ids": tokenizer(batch["text"])["input_ids"]}, batched=True, num_proc=2,
                    remove_columns=ds.column_names)
    seconds = time.perf_counter() - start
    tokens = sum(len(ids) for batch in mapped.iter(batch_size=10000) for ids in batch["input_ids"])
    return {"seconds": round(seconds, 2), "tokens_per_s": round(tokens / seconds), "tokens": tokens,
            "rss_mb": round(peak_rss_mb(), 1), "workers_rss_mb": round(peak_rss_mb(resource.RUSAGE_CHILDREN), 1)}


def second_start(folder: Path, cache: Path) -> dict:
    start = time.perf_counter()
    from trainer.data.splits import build_data, load_tokenizer

    cfg = config(folder, cache)
    data = build_data(cfg, load_tokenizer(cfg.model), split="train", packing=True, cache_dir=cache, rank=0,
                      world_size=1)
    next(iter(data.iter_batches(0, rank=0, world_size=1, micro_batch_size=8, seed=1)))
    with open("/proc/self/io") as f:
        read = {k: int(v) for k, v in (line.split(": ") for line in f)}["rchar"]
    return {"seconds": round(time.perf_counter() - start, 2), "rchar_mb": round(read / 1e6, 1)}


def trainer_first_step(folder: Path, cache: Path, work: Path) -> float:
    """Seconds from starting `python -m trainer` (1 process, CPU, a tiny model) on the prepared cache to
    its first step's line in metrics.jsonl: the whole restart, imports and model included."""
    import yaml

    from tests.trainjobs import TINY_MODEL

    out = work / "trainer-out"
    cfg = {"model": {"config": {**TINY_MODEL, "max_position_embeddings": 1024}, "tokenizer": str(TOKENIZER)},
           "data": {"train": str(folder), "seq_len": 1024, "cache_dir": str(cache), "chunk_mb": 4},
           "run": {"output_dir": str(out), "max_steps": 1, "micro_batch_size": 1, "log_every": 1},
           "deepspeed": {"preset": "zero0"}, "metrics": {"enabled": False}}
    (work / "train.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "LLMLAUNCH_FORCE_CPU": "1", "PYTHONPATH": str(ROOT), "MASTER_PORT": "29731",
           "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1"}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "trainer", "--config", str(work / "train.yaml")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    metrics = out / "metrics.jsonl"
    while not (metrics.is_file() and '"loss"' in metrics.read_text()):
        if proc.poll() is not None:
            raise SystemExit(f"the trainer stopped before its first step:\n{proc.stderr.read()[-3000:]}")
        time.sleep(0.05)
    seconds = time.perf_counter() - start
    proc.communicate()
    shutil.rmtree(out, ignore_errors=True)
    return round(seconds, 2)


def child(*args: str) -> dict:
    result = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=False)
    if result.returncode:
        raise SystemExit(f"{args[0]} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def prepare(folder: Path, cache: Path, world: int = 2) -> dict:
    start = time.time()
    procs = [subprocess.Popen([sys.executable, __file__, "--worker", str(folder), str(cache), str(rank), str(world)],
                              stdout=subprocess.PIPE, text=True) for rank in range(world)]
    outs = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    if any(p.returncode for p in procs):
        raise SystemExit("a preparing process failed")
    tokens = outs[0]["tokens"]
    # From the first process ready (imports and tokenizer loaded) to the last done, as the baseline.
    seconds = max(o["end"] for o in outs) - min(o["ready"] for o in outs)
    return {"seconds": round(seconds, 2), "tokens": tokens, "tokens_per_s": round(tokens / seconds),
            "with_startup_s": round(max(o["end"] for o in outs) - start, 2), "rss_mb": [o["rss_mb"] for o in outs]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="40,400")
    ap.add_argument("--baseline-sizes", default="40")
    ap.add_argument("--work", type=Path, default=Path("/tmp/llmlaunch-data-prep"))
    ap.add_argument("--repeat", type=int, default=2, help="runs of each timing at a size; the best counts")
    ap.add_argument("--worker", nargs=4)
    ap.add_argument("--baseline", nargs=2)
    ap.add_argument("--second-start", nargs=2)
    args = ap.parse_args(argv)
    if args.worker:
        folder, cache, rank, world = args.worker
        print(json.dumps(worker(Path(folder), Path(cache), int(rank), int(world))))
        return 0
    if args.baseline:
        print(json.dumps(baseline(*map(Path, args.baseline))))
        return 0
    if args.second_start:
        print(json.dumps(second_start(*map(Path, args.second_start))))
        return 0
    figures = {}
    try:
        for size in [int(s) for s in args.sizes.split(",")]:
            folder, cache = args.work / f"data-{size}", args.work / f"cache-{size}"
            generate(folder, size)
            # The machine is shared: at the baseline's sizes both are run `repeat` times, alternately, with a
            # fresh cache each; the best run of each counts (the least disturbed by other work).
            runs = args.repeat if str(size) in args.baseline_sizes.split(",") else 1
            prepared, baselines = [], []
            for attempt in range(runs):
                shutil.rmtree(cache, ignore_errors=True)
                prepared.append(prepare(folder, cache))
                if str(size) in args.baseline_sizes.split(","):
                    hf_cache = args.work / f"hf-{size}-{attempt}"
                    baselines.append(child("--baseline", str(folder), str(hf_cache)))
                    shutil.rmtree(hf_cache, ignore_errors=True)
            row = {"mb": size, "prepare": max(prepared, key=lambda r: r["tokens_per_s"]),
                   "prepare_runs_tokens_per_s": [r["tokens_per_s"] for r in prepared]}
            if baselines:
                row["baseline_datasets"] = max(baselines, key=lambda r: r["tokens_per_s"])
                row["baseline_runs_tokens_per_s"] = [r["tokens_per_s"] for r in baselines]
            starts = [child("--second-start", str(folder), str(cache)) for _ in range(args.repeat)]
            firsts = [trainer_first_step(folder, cache, args.work) for _ in range(args.repeat)]
            row["second_start"] = {**min(starts, key=lambda r: r["seconds"]), "trainer_first_step_s": min(firsts),
                                   "runs_s": [r["seconds"] for r in starts], "trainer_runs_s": firsts}
            figures[size] = row
            shutil.rmtree(folder)
            shutil.rmtree(cache)
            print(json.dumps(row), file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(args.work, ignore_errors=True)
    sizes = sorted(figures)
    small, large = figures[sizes[0]], figures[sizes[-1]]
    summary = {
        "rss_ratio_largest_to_smallest": round(max(large["prepare"]["rss_mb"]) / max(small["prepare"]["rss_mb"]), 3),
        "second_start_ratio": round(large["second_start"]["seconds"] / small["second_start"]["seconds"], 3),
        "trainer_first_step_ratio": round(large["second_start"]["trainer_first_step_s"]
                                          / small["second_start"]["trainer_first_step_s"], 3),
        "throughput_vs_datasets": {s: round(f["prepare"]["tokens_per_s"] / f["baseline_datasets"]["tokens_per_s"], 3)
                                   for s, f in figures.items() if "baseline_datasets" in f},
    }
    print(json.dumps({"sizes": figures, "summary": summary}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
