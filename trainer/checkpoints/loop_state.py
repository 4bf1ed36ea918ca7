"""What the loop must remember across a restart, and the SIGTERM flag all ranks agree on."""

from __future__ import annotations

import signal
from dataclasses import asdict, dataclass

import torch
import torch.distributed as dist

from trainer.config.train_config import EarlyStopping


@dataclass
class LoopState:
    step: int = 0  # optimizer steps done
    epoch: int = 0
    position: int = 0  # micro batches of this epoch already consumed by this rank
    tokens: int = 0  # tokens trained so far, all ranks (known on rank 0 at log steps)
    best_eval: float | None = None
    best_step: int | None = None
    bad_evals: int = 0  # evals since the last improvement
    stopped_early: bool = False

    def as_dict(self) -> dict:
        return asdict(self)

    def record_eval(self, step: int, eval_loss: float, rule: EarlyStopping) -> bool:
        """Update best / patience; returns whether this eval is a new best."""
        if self.best_eval is None or eval_loss < self.best_eval - rule.min_delta:
            self.best_eval, self.best_step, self.bad_evals = eval_loss, step, 0
            return True
        self.bad_evals += 1
        if rule.patience and self.bad_evals >= rule.patience:
            self.stopped_early = True
        return False


class StopSignal:
    """SIGTERM (pod deletion, preemption, Kueue suspend, node drain) -> every rank stops at the same step.

    A signal reaches ranks at slightly different times, so the flag is max-reduced each step over a gloo
    group (CPU tensors: no GPU synchronisation in the hot loop).
    """

    def __init__(self) -> None:
        self._local = False
        self._group = dist.new_group(backend="gloo") if dist.get_backend() != "gloo" else None
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame) -> None:
        self._local = True

    def requested(self) -> bool:
        flag = torch.tensor([1 if self._local else 0], dtype=torch.int32)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self._group)
        return bool(flag.item())
