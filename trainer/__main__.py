"""`python -m trainer --config train.yaml`: the entrypoint torchrun starts, locally and in every pod."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from trainer.config.ds_config import hide_gpus_when_forced, machine_has_gpu, native_bf16
from trainer.config.train_config import ConfigError, load_train_config

STOPPED_EXIT = 128 + 15  # the shell's code for "terminated by SIGTERM"; retryable for the training operator


def quiet_libraries() -> None:
    """Keep the run's output about the run: no per-file progress bars or import-time notices."""
    import warnings

    if not machine_has_gpu():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")  # else DeepSpeed warns that it fell back to CPU
    warnings.filterwarnings("ignore", category=FutureWarning, module="torch.distributed")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def local_gpu_capability(cuda, local_rank: int) -> tuple[int, int] | None:
    """Compute capability of this rank's GPU (None without one), read after set_device: before it,
    every rank would ask about device 0, which need not be the same model as its own."""
    if not cuda.is_available():
        return None
    cuda.set_device(local_rank)
    return tuple(cuda.get_device_capability(local_rank))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer", description=__doc__)
    parser.add_argument("--config", required=True, type=Path, help="train.yaml (the train section of a job file)")
    args = parser.parse_args(argv)
    # The first process of every node (pod) says what it does, so each pod's log tells its own story;
    # the run's progress lines (run_log) stay rank 0's.
    rank = os.environ.get("RANK", "0")
    logging.basicConfig(level=logging.INFO if os.environ.get("LOCAL_RANK", "0") == "0" else logging.WARNING,
                        format="[llmlaunch] %(message)s" if rank == "0" else f"[llmlaunch rank {rank}] %(message)s")
    hide_gpus_when_forced()
    quiet_libraries()
    try:
        cfg = load_train_config(args.config)
        # The same checks the CLI ran, again here: a pod must fail before distributed init, clearly.
        import torch

        from trainer.training.preflight import run_preflight

        capability = local_gpu_capability(torch.cuda, int(os.environ.get("LOCAL_RANK", 0)))
        precision = run_preflight(cfg, int(os.environ.get("WORLD_SIZE", 1)), has_gpu=capability is not None,
                                  gpu_has_bf16=native_bf16(capability))
        from trainer.training.loop import Trainer

        finished = Trainer(cfg, args.config, precision).train()
    except ConfigError as e:  # also data problems found while tokenizing, after the process group started
        if os.environ.get("RANK", "0") == "0":
            for line in e.problems:
                print(f"error: {line}", file=sys.stderr)
        return 2
    # Stopped by SIGTERM after the emergency checkpoint: not done, so not a success. In a pod whose agent was
    # not signalled (the workers, when only the master pod is deleted) the failed worker makes torchrun
    # restart its group and rejoin the recreated master, instead of the pod ending Succeeded mid-run.
    return 0 if finished else STOPPED_EXIT


if __name__ == "__main__":
    sys.exit(main())
