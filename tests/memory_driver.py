"""Peak memory of real DeepSpeed training steps on this CPU, per rank, for tests/test_estimate_measured.py.

    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/memory_driver.py JOB.yaml OUT_DIR

Sets up exactly as the trainer does (process group, DeepSpeed config, data, model, engine) and trains
two steps. The baseline is the resident memory after the data is built and before the model exists; the
kernel's high-water mark (VmHWM, reset through /proc/self/clear_refs) then gives the peak above it:
weights, gradients, optimizer states (offloaded ones too: the "host" is this same memory), activations
and DeepSpeed's buffers. Each rank writes OUT_DIR/rank<r>.json with the bytes.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DS_ACCELERATOR", "cpu")


def status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def main() -> int:
    import gc

    import torch

    from trainer.config.train_config import load_train_config
    from trainer.data.splits import build_data, load_tokenizer
    from trainer.data.token_data import for_attention
    from trainer.training.engine import init_distributed, load_ds_config, make_engine
    from trainer.training.model import build_model

    job, out = Path(sys.argv[1]), Path(sys.argv[2])
    cfg = load_train_config(job)
    topo = init_distributed()
    ds_config = load_ds_config(cfg, job, topo.world_size, "fp32")
    data = build_data(cfg, load_tokenizer(cfg.model), split="train", packing=cfg.data.packing,
                      cache_dir=out / f"cache{topo.rank}")
    batches = list(data.iter_batches(0, 0, rank=topo.rank, world_size=topo.world_size,
                                     micro_batch_size=cfg.run.micro_batch_size, seed=cfg.run.seed))[:2]
    gc.collect()
    baseline = status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS from here on
    engine = make_engine(build_model(cfg, ds_config), cfg, ds_config, total_steps=10)
    timeline = [("engine", status_kib("VmRSS"), status_kib("VmHWM"))]
    for i, batch in enumerate(batches):
        loss = engine(**for_attention(batch, cfg.model.attn_implementation, torch.float32)).loss
        engine.backward(loss)
        engine.step()
        timeline.append((f"step{i + 1}", status_kib("VmRSS"), status_kib("VmHWM")))
    peak = status_kib("VmHWM")
    record = {"baseline_bytes": baseline * 1024, "peak_bytes": peak * 1024, "delta_bytes": (peak - baseline) * 1024,
              "seq_len": int(batches[0]["input_ids"].shape[1]),
              "timeline_mib": [(what, (rss - baseline) // 1024, (hwm - baseline) // 1024)
                               for what, rss, hwm in timeline]}
    (out / f"rank{topo.rank}.json").write_text(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
