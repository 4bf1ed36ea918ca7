"""Remote sources against a real S3 server on loopback (moto's server mode); prints one JSON line.

    PYTHONPATH=. python bench/remote_sources.py [--mb 40] [--objects 20] [--checkpoint-mb 64]

- data: a synthetic JSONL corpus of --mb MB in --objects objects under s3://bench-data/corpus/ is copied
  into a cache folder (object_store.materialize) three times: the first start (everything downloaded), a
  restart with nothing changed (a listing only), and a restart after one object changed;
- checkpoints: a step directory of --checkpoint-mb MB (8 shards + COMPLETE) pushed to and pulled from
  s3://bench-ckpt/run (checkpoint_mirror.Mirror).

Loopback measures llmlaunch's own cost (listing, per-object calls, writing to the volume), not a network.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from remote_fixtures import moto_server, s3, s3_env  # noqa: E402


def corpus_object(index: int, size: int) -> bytes:
    line = json.dumps({"text": f"document {index}: " + "the quick brown fox jumps over the lazy dog " * 8}) + "\n"
    return (line * (size // len(line) + 1)).encode()[:size]


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, round(time.perf_counter() - start, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=40)
    parser.add_argument("--objects", type=int, default=20)
    parser.add_argument("--checkpoint-mb", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        with moto_server(tmp) as endpoint:
            os.environ.update(s3_env(endpoint, tmp))
            from trainer.checkpoints.mirror import Mirror
            from trainer.data.remote_sources import DATA_SUFFIXES
            from trainer.storage import object_store

            fs = s3(endpoint, tmp)
            fs.mkdir("bench-data")
            fs.mkdir("bench-ckpt")
            size = args.mb * 2**20 // args.objects
            for i in range(args.objects):
                fs.pipe(f"bench-data/corpus/part-{i:04d}.jsonl", corpus_object(i, size))
            cache = tmp / "cache"
            copy = lambda: object_store.materialize("s3://bench-data/corpus", "data.train", cache, DATA_SUFFIXES)  # noqa: E731
            _, first = timed(copy)
            _, unchanged = timed(copy)
            fs.pipe("bench-data/corpus/part-0000.jsonl", corpus_object(10**6, size))
            _, one_changed = timed(copy)

            step = tmp / "out" / "checkpoints" / "step-000010"
            step.mkdir(parents=True)
            shard = args.checkpoint_mb * 2**20 // 8
            for i in range(8):
                (step / f"shard-{i}.pt").write_bytes(os.urandom(shard))
            (step / "COMPLETE").write_text("{}")
            mirror = Mirror("s3://bench-ckpt/run")
            push = mirror.push(step.parent, step)
            restore = tmp / "restored" / "checkpoints"
            restore.mkdir(parents=True)
            _, pull = timed(lambda: mirror.pull_newest(restore))
    print(json.dumps({
        "data_mb": args.mb, "objects": args.objects, "first_copy_s": first,
        "first_copy_mb_per_s": round(args.mb / first, 1),
        "restart_unchanged_s": unchanged, "restart_one_changed_s": one_changed,
        "checkpoint_mb": args.checkpoint_mb, "mirror_push_s": round(push, 3), "mirror_pull_s": pull,
    }))


if __name__ == "__main__":
    main()
