"""The training loop: a Trainer whose train() only calls components (model, data, engine, checkpoints)."""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist

from trainer.checkpoints import mirror, resume, writer
from trainer.checkpoints.loop_state import LoopState, StopSignal
from trainer.checkpoints.mirror import Mirror
from trainer.config.train_config import ConfigError, TrainConfig
from trainer.data.prep_progress import PrepMetrics
from trainer.data.splits import build_data, for_attention, load_tokenizer
from trainer.failpoints import failpoint
from trainer.observability.watchdog import Watchdog
from trainer.training.engine import Topology, init_distributed, load_ds_config, make_engine
from trainer.training.model import build_model, count_parameters
from trainer.training.run_log import RunLog, progress_bar

log = logging.getLogger("llmlaunch.trainer")


class Trainer:
    def __init__(self, cfg: TrainConfig, config_path: Path, precision: str):
        self.cfg, self.config_path, self.precision = cfg, config_path, precision
        self.out = Path(cfg.run.output_dir)
        self.ckpt_root = self.out / "checkpoints"

    # ---- set-up ---------------------------------------------------------------------------------
    def setup(self) -> None:
        cfg = self.cfg
        self.tokenizer = load_tokenizer(cfg.model)
        self.packing = cfg.data.packing and cfg.method.kind != "prefix"  # prefix tokens break the 4D mask
        # Data first, before any process group exists: however long the preparation, no rank waits for it
        # in a collective with a timeout (trainer/data/prep.py).
        self.train_data, self.eval_data = self._data()
        # Collectives must not time out before the hang watchdog has named the rank that holds them up.
        self.topo: Topology = init_distributed(timeout_s=max(1800.0, cfg.run.hang_timeout_s + 60))
        self.stop = StopSignal()
        self.ds_config = load_ds_config(cfg, self.config_path, self.topo.world_size, self.precision)
        self._check_batches()
        per_epoch = self.train_data.batches_per_epoch(cfg.run.micro_batch_size, self.topo.world_size)
        self.steps_per_epoch = max(1, per_epoch // cfg.run.grad_accum)
        self.total_steps = cfg.run.max_steps or math.ceil(cfg.run.epochs * self.steps_per_epoch)
        self.mirror = Mirror(cfg.run.checkpoint_mirror) if cfg.run.checkpoint_mirror else None
        if cfg.run.resume:  # an empty output directory (a new volume) resumes from the mirror
            mirror.restore(self.mirror, self.ckpt_root, self.topo.rank)
        # Before the engine exists: a checkpoint from another world size changes the DeepSpeed config.
        found = resume.find(self.ckpt_root, self.ds_config) if cfg.run.resume else None
        self.model = build_model(cfg, self.ds_config)
        self.engine = make_engine(self.model, cfg, self.ds_config, self.total_steps)
        self.state = LoopState()
        self.failed_saves = 0  # consecutive
        self.runlog = RunLog(self.out, self.topo, cfg, self.ds_config, self.model, self.total_steps,
                             attention_len=self.train_data.attention_length)
        self.runlog.info(resume.rendezvous_reason(dict(os.environ), self.topo.world_size, found))
        if found is not None:
            self.state = LoopState(**resume.load(self.engine, found, cfg.run.micro_batch_size))
            self.runlog.resumed(found.path, self.state.step, getattr(self.engine, "skipped_steps", 0))
        self.runlog.start_tracking(self.state.step, self.ds_config)
        self.watchdog = Watchdog(self.topo.rank, self.topo.node_rank, self.topo.world_size, cfg.run.hang_timeout_s)
        trainable, total = count_parameters(self.model)
        self.runlog.info(
            f"{cfg.method.kind} training, {total:,} parameters ({trainable:,} trainable), world size "
            f"{self.topo.world_size}, {self.precision}, ZeRO {self.engine.zero_optimization_stage()}, "
            f"{self.total_steps} steps of {cfg.global_batch(self.topo.world_size)} sequences x "
            f"{cfg.data.seq_len} tokens"
        )

    def _data(self):
        """Every process of every node prepares the data together, coordinating through files in the cache
        folder (RANK / WORLD_SIZE from torchrun); a data error reaches every process the same way. Local rank
        0 serves the preparation's progress on the metrics port meanwhile."""
        cfg = self.cfg
        cache = Path(cfg.data.cache_dir or self.out / "cache")
        metrics = PrepMetrics.from_env(cfg.metrics, job=self.out.name)
        metrics.start()
        try:
            train = build_data(cfg, self.tokenizer, split="train", packing=self.packing, cache_dir=cache,
                               metrics=metrics)
            has_eval = cfg.data.eval is not None or cfg.data.eval_fraction > 0
            evals = build_data(cfg, self.tokenizer, split="eval", packing=self.packing, cache_dir=cache,
                               metrics=metrics) if has_eval else None
        finally:
            metrics.close()  # the trainer's exporter serves the port from now on
        return train, evals

    def _check_batches(self) -> None:
        run, world = self.cfg.run, self.topo.world_size
        for key, data in (("train.data.train", self.train_data), ("train.data.eval", self.eval_data)):
            if data is not None and data.batches_per_epoch(run.micro_batch_size, world) == 0:
                raise ConfigError([f"{key}: {len(data)} sequences are fewer than one batch for every rank "
                                   f"(micro_batch_size {run.micro_batch_size} x {world} processes)"])

    def _to_device(self, batch: dict) -> dict:
        batch = {k: v.to(self.topo.device, non_blocking=True) for k, v in batch.items()}
        dtype = next(self.engine.module.parameters()).dtype
        return for_attention(batch, self.cfg.model.attn_implementation, dtype)

    # ---- the loop -------------------------------------------------------------------------------
    def train(self) -> bool:
        """Train to the end (True), or until a SIGTERM stops every rank after a checkpoint (False)."""
        self.setup()
        try:
            finished = self._train()
        except BaseException:
            self.runlog.trackers.finish("FAILED")  # flushed and marked; a restart continues the same runs
            raise
        if not finished:
            self.runlog.trackers.finish("KILLED")
        return finished

    def _train(self) -> bool:
        cfg, state, engine = self.cfg, self.state, self.engine
        batches = self._batches()
        bar = progress_bar(self.topo, self.total_steps, state.step)
        self.watchdog.start(state.step)
        engine.train()  # train mode from step 1, whatever mode the model was built or resumed in
        while state.step < self.total_steps and not state.stopped_early:
            t0 = time.perf_counter()
            loss_sum, data_wait = torch.zeros((), device=self.topo.device), 0.0
            tokens = torch.zeros((), dtype=torch.long)
            for _ in range(cfg.run.grad_accum):
                t_data = time.perf_counter()
                batch = next(batches)
                data_wait += time.perf_counter() - t_data
                tokens += (batch["labels"][:, 1:] != -100).sum()  # tokens the loss predicts; host copy: no sync
                loss = engine(**self._to_device(batch)).loss
                engine.backward(loss)
                failpoint("step", state.step + 1)  # resilience tests: a node lost mid-step
                engine.step()
                loss_sum += loss.detach()
            state.step += 1
            step_seconds = time.perf_counter() - t0
            self.runlog.step(state, loss_sum / cfg.run.grad_accum, tokens, step_seconds, data_wait, engine, bar)
            self.watchdog.beat(state.step)
            is_last = state.step >= self.total_steps
            eval_due = is_last or (cfg.run.eval_every and state.step % cfg.run.eval_every == 0)
            if self.eval_data is not None and eval_due:
                self.evaluate()
            saved = is_last or state.stopped_early or (cfg.run.save_every and state.step % cfg.run.save_every == 0)
            if saved:
                self.save()
            self.runlog.flush()
            if self.stop.requested():
                self.runlog.info(f"stop requested (SIGTERM): emergency checkpoint at step {state.step}")
                if not saved:
                    self.save()
                self.watchdog.stop()
                bar.close()
                return False
        self.watchdog.stop()
        bar.close()
        writer.export(self.engine, self.engine.module, self.tokenizer, self.out / "final", self.topo.is_main)
        if cfg.method.kind == "lora" and cfg.method.lora.merge_on_export and self.topo.is_main:
            from trainer.checkpoints.merge_lora import MERGED_DIR, merge_run

            # After the collective export: final/ holds the gathered adapter, so one process merges it.
            merge_run(self.out, cfg=cfg)
            self.runlog.info(f"merged the adapter into the base weights: {self.out / MERGED_DIR}")
        self.runlog.finished(state)
        return True

    def _batches(self):
        """Micro batches forever, epoch after epoch, starting at the resumed position."""
        cfg, topo, state = self.cfg, self.topo, self.state
        while True:
            stream = self.train_data.iter_batches(
                state.epoch, state.position, rank=topo.rank, world_size=topo.world_size,
                micro_batch_size=cfg.run.micro_batch_size, seed=cfg.run.seed,
            )
            for batch in stream:
                state.position += 1
                yield batch
            state.epoch, state.position = state.epoch + 1, 0

    @torch.no_grad()
    def evaluate(self) -> float:
        """Token-weighted mean loss over every rank's eval shard; drives best model and early stopping."""
        cfg, topo, engine = self.cfg, self.topo, self.engine
        engine.eval()
        totals = torch.zeros(2, dtype=torch.float64, device=topo.device)
        stream = self.eval_data.iter_batches(
            0, 0, rank=topo.rank, world_size=topo.world_size, micro_batch_size=cfg.run.micro_batch_size,
            seed=cfg.run.seed,
        )
        for i, batch in enumerate(stream):
            if cfg.run.eval_batches is not None and i >= cfg.run.eval_batches:
                break
            batch = self._to_device(batch)
            n = (batch["labels"][:, 1:] != -100).sum()
            totals += torch.stack([engine(**batch).loss.double() * n, n.double()])
        dist.all_reduce(totals)
        engine.train()
        eval_loss = (totals[0] / totals[1].clamp(min=1)).item()
        improved = self.state.record_eval(self.state.step, eval_loss, cfg.run.early_stopping)
        self.runlog.eval(self.state, eval_loss, improved)
        if improved:
            writer.export(self.engine, self.engine.module, self.tokenizer, self.out / "best", topo.is_main)
        self.watchdog.beat(self.state.step)
        return eval_loss

    def save(self) -> None:
        """A failed save costs only its interval: it is logged and counted (the checkpoint alerts fire),
        and training goes on; run.max_failed_saves failures in a row fail the run (docs/resilience.md)."""
        try:
            seconds = writer.save(
                self.engine, self.ckpt_root, self.state.step, self.state.as_dict(), keep_last=self.cfg.run.keep_last,
                protect=self.state.best_step, micro_batch_size=self.cfg.run.micro_batch_size,
            )
        except writer.SaveFailed as e:
            self.failed_saves += 1
            limit = self.cfg.run.max_failed_saves
            self.runlog.checkpoint_failed(self.state, e.seconds, str(e), self.failed_saves, limit)
            if self.failed_saves >= limit:
                raise RuntimeError(f"{e}; {self.failed_saves} checkpoint saves failed in a row "
                                   f"(train.run.max_failed_saves {limit})") from e
        else:
            self.failed_saves = 0
            self.runlog.checkpoint(self.state, seconds)
            saved = writer.step_dir(self.ckpt_root, self.state.step)
            mirror.push_after_save(self.mirror, self.ckpt_root, saved, self.topo.is_main)
        self.watchdog.beat(self.state.step)
