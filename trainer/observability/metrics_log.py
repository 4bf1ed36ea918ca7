"""RUN_DIR/metrics.jsonl: one JSON object per logged step, the file `llmlaunch report` reads.

Written by global rank 0 only, appended and flushed line by line, so a crash loses nothing and a
resumed run simply continues the file (a reader keeps the last record of a step logged twice).

Fields of a train record (every log step):
    step          optimizer step (int)
    time          unix seconds when the record was written
    loss          training loss, mean over the steps since the previous record
    lr            learning rate at this step
    tokens_per_s  tokens trained per second over the steps since the previous record (all ranks)
    step_seconds  mean wall seconds per step over those steps
    tokens        tokens trained since the start of the run (all ranks)
    grad_norm     global gradient norm before clipping (null when unknown)
    mfu           model FLOPs utilization, 0..1 (null without a peak FLOP/s)
    loss_scale    fp16 dynamic loss scale (null in bf16 / fp32)
    epoch, data_wait_s, skipped_steps   (written by the trainer; readers ignore what they do not know)
On eval steps the trainer's record of that step also carries eval_loss and eval_ppl; log_eval() writes an
eval-only record (step, time, eval_loss), which readers treat the same way.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import IO

FILENAME = "metrics.jsonl"


class MetricsLog:
    def __init__(self, output_dir: str | Path, *, enabled: bool = True) -> None:
        self.path = Path(output_dir) / FILENAME
        self._file: IO[str] | None = None
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8")

    def log_train(
        self,
        *,
        step: int,
        loss: float,
        lr: float,
        tokens_per_s: float,
        step_seconds: float,
        tokens: int,
        grad_norm: float | None = None,
        mfu: float | None = None,
        loss_scale: float | None = None,
    ) -> None:
        self.write(step=step, loss=loss, lr=lr, tokens_per_s=tokens_per_s, step_seconds=step_seconds, tokens=tokens,
                    grad_norm=grad_norm, mfu=mfu, loss_scale=loss_scale)

    def log_eval(self, *, step: int, eval_loss: float) -> None:
        self.write(step=step, eval_loss=eval_loss)

    def write(self, *, step: int, **fields: float | None) -> dict | None:
        """Append one record; returns it as written (the experiment trackers get exactly this), None when off."""
        if self._file is None:
            return None
        # NaN / inf are not JSON: written as null, so a diverged run still leaves a readable log
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in fields.items()}
        record = {"step": step, "time": round(time.time(), 3), **clean}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        return record

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
