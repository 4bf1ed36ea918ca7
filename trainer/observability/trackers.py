"""Experiment trackers on global rank 0: TensorBoard, MLflow, Weights & Biases (train.tracking, docs/tracking.md).

Fed by RunLog.flush with the very record it appends to metrics.jsonl, so a tracker shows the same scalars under
the same names (loss, eval_loss, lr, grad_norm, tokens_per_s, mfu, ...). Each backend's package is imported
only when its section is set. A tracker that fails, at start or later (its server gone), prints one warning
line and is dropped; training never stops for one.

A resumed run continues the same tracker runs: the run ids live in <output_dir>/tracking.json (not mirrored: a
run restored from run.checkpoint_mirror onto a new volume starts new tracker runs). The steps between
the checkpoint and the crash are trained and logged again; no tracker run ever holds two points of one step:
  TensorBoard  SummaryWriter(purge_step=step + 1): TensorBoard itself drops the earlier events of those steps,
               so it shows the replay's values, as metrics.jsonl does (the trainer drops its replayed records).
  MLflow, W&B  tracking.json also keeps the highest step each has logged (rewritten atomically after each
               successful log call); a restarted process skips records up to that step. For a replayed step
               they show the first attempt's values: loss, lr, grad_norm, eval_loss, tokens are those of the
               replay too (the trainer replays deterministically), the timings (tokens_per_s, step_seconds,
               mfu, data_wait_s) are the first attempt's measurements.
W&B charts use our `step` as x axis (define_metric): its own `_step` counts rows, and an offline resume writes a
new offline-run directory whose `_step` starts again at 0.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from trainer.config.train_config import TrainConfig
from trainer.storage.atomic_files import atomic_write

# {"mlflow": {"run_id", "tracking_uri", "logged_step"}, "wandb": {"run_id", "logged_step"}}
STATE_FILE = "tracking.json"
NOT_SCALARS = {"step", "time"}  # a record's keys that are not plotted


def scalars(record: dict) -> dict[str, float]:
    """The plotted values of a metrics.jsonl record: numbers only (null, i.e. unknown or NaN, is left out)."""
    return {k: float(v) for k, v in record.items()
            if k not in NOT_SCALARS and isinstance(v, (int, float)) and not isinstance(v, bool)}


def flatten(value: Any, prefix: str = "") -> dict[str, str]:
    """A nested train section as MLflow params: dotted keys, lists as JSON, values cut to MLflow's 6000."""
    if isinstance(value, dict) and value:
        out: dict[str, str] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    text = value if isinstance(value, str) else json.dumps(value)
    return {prefix: text[:6000]}


class TensorBoardTracker:
    name = "tensorboard"
    skips_logged_steps = False  # purge_step drops a replayed step's earlier events instead

    def __init__(self, out: Path, cfg: TrainConfig, ds_config: dict, step: int, state: dict) -> None:
        from torch.utils.tensorboard import SummaryWriter

        logdir = out / "tensorboard"
        fresh = not any(logdir.glob("events.out.tfevents.*"))
        # Restarted at `step`: the events of later steps from before the restart are dropped by the readers.
        self.writer = SummaryWriter(str(logdir), purge_step=None if fresh else step + 1)
        if fresh:
            self.writer.add_text("train.yaml", f"```yaml\n{cfg.to_yaml()}```", 0)
            ds_json = json.dumps(ds_config, indent=2, sort_keys=True)
            self.writer.add_text("ds_config.json", f"```json\n{ds_json}\n```", 0)
            self.writer.flush()

    def log(self, step: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()  # as metrics.jsonl: a crash loses nothing already logged

    def finish(self, status: str, out: Path) -> None:
        self.writer.close()


class MlflowTracker:
    name = "mlflow"
    skips_logged_steps = True  # a metric's history keeps every point: a replayed step is not logged again

    def __init__(self, out: Path, cfg: TrainConfig, ds_config: dict, step: int, state: dict) -> None:
        spec = cfg.tracking.mlflow
        # A lost server must cost seconds once, not minutes per step: MLflow retries 7 times with backoff by default.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
        import logging

        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)  # its retry lines are not our one line
        self.spec, self.client = spec, MlflowClient(tracking_uri=spec.tracking_uri)
        known = state.get("mlflow") or {}
        if known.get("tracking_uri") == spec.tracking_uri and known.get("run_id"):
            self.run_id = self.client.get_run(known["run_id"]).info.run_id  # fails (one warning) if it is gone
            self.client.update_run(self.run_id, status="RUNNING")
            return
        job = job_name(out)
        name = spec.experiment or job
        experiment = self.client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(name)
        run = self.client.create_run(experiment_id, run_name=spec.run_name or job, tags={"llmlaunch.job": job})
        self.run_id = run.info.run_id
        params = [Param(k, v) for k, v in flatten(cfg.model_dump(mode="json")).items()]
        for i in range(0, len(params), 100):  # the REST API takes at most 100 params a call
            self.client.log_batch(self.run_id, params=params[i:i + 100])
        state["mlflow"] = {"run_id": self.run_id, "tracking_uri": spec.tracking_uri}

    def log(self, step: int, values: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in values.items()])

    def finish(self, status: str, out: Path) -> None:
        if self.spec.log_model and status == "FINISHED":
            for name in ("final", "final-merged"):
                if (out / name).is_dir():
                    self.client.log_artifacts(self.run_id, str(out / name), name)
        self.client.set_terminated(self.run_id, status=status)


class WandbTracker:
    name = "wandb"
    skips_logged_steps = True  # rows are never deleted: a replayed step is not logged again

    def __init__(self, out: Path, cfg: TrainConfig, ds_config: dict, step: int, state: dict) -> None:
        import wandb

        spec = cfg.tracking.wandb
        known = state.get("wandb") or {}
        run_id = known.get("run_id") or uuid.uuid4().hex[:12]
        self.run = wandb.init(
            project=spec.project, entity=spec.entity, id=run_id, resume="allow", mode=spec.mode, dir=str(out),
            name=job_name(out), config={"train": cfg.model_dump(mode="json"), "ds_config": ds_config},
            settings=wandb.Settings(console="off", silent=True),  # our stderr stays ours
        )
        # W&B's own _step counts rows (and restarts at 0 in a resumed offline run): the x axis is our `step`.
        self.run.define_metric("step")
        self.run.define_metric("*", step_metric="step")
        state["wandb"] = {**known, "run_id": run_id}  # keeps logged_step

    def log(self, step: int, values: dict[str, float]) -> None:
        self.run.log({**values, "step": step})

    def finish(self, status: str, out: Path) -> None:
        self.run.finish(exit_code=0 if status == "FINISHED" else 1)


BACKENDS = {"tensorboard": TensorBoardTracker, "mlflow": MlflowTracker, "wandb": WandbTracker}


def job_name(out: Path) -> str:
    return os.environ.get("LLMLAUNCH_JOB") or out.resolve().name


def warn(message: str) -> None:
    print(f"[llmlaunch] warning: {message}", file=sys.stderr, flush=True)


class Trackers:
    """The configured trackers of this process: none except on global rank 0."""

    def __init__(self, out: Path, trackers: list, state: dict | None = None) -> None:
        self.out, self.trackers, self.state = out, trackers, state if state is not None else {}
        self.save_failed = False  # warned once

    @classmethod
    def start(cls, cfg: TrainConfig, out: Path, ds_config: dict, *, step: int, is_main: bool) -> Trackers:
        if not is_main or not cfg.tracking.enabled:
            return cls(out, [])
        path = out / STATE_FILE
        try:
            state = json.loads(path.read_text()) if path.is_file() else {}
        except (OSError, ValueError):
            state = {}
        wanted = [name for name in BACKENDS if getattr(cfg.tracking, name)]
        started = []
        for name in wanted:
            try:
                started.append(BACKENDS[name](out, cfg, ds_config, step, state))
            except Exception as e:  # noqa: BLE001 - any failure of a tracker is the tracker's, not the run's
                warn(f"{name} tracking did not start ({one_line(e)}); training goes on without it")
        trackers = cls(out, started, state)
        trackers.save_or_warn()
        if started:
            skipping = [f"{t.name} after step {trackers.logged_step(t)}" for t in started if trackers.logged_step(t)]
            note = f" (resumed: logging {', '.join(skipping)})" if skipping else ""
            print(f"[llmlaunch] tracking: {', '.join(t.name for t in started)}{note}", file=sys.stderr, flush=True)
        return trackers

    def logged_step(self, tracker) -> int:
        """The highest step this tracker's run holds (0: none), for trackers that must not log a step twice."""
        return (self.state.get(tracker.name) or {}).get("logged_step", 0) if tracker.skips_logged_steps else 0

    def save(self) -> None:
        """tracking.json, replaced atomically: a killed process leaves the old or the new file, never half of one."""
        self.out.mkdir(parents=True, exist_ok=True)
        path = self.out / STATE_FILE
        atomic_write(path, json.dumps(self.state, indent=2, sort_keys=True) + "\n")

    def save_or_warn(self) -> None:
        """save(), where a failure (a full volume) is one warning: training goes on, a resume may then start new
        tracker runs or log a few steps again."""
        try:
            self.save()
        except OSError as e:
            if not self.save_failed:
                warn(f"{STATE_FILE} not updated ({one_line(e)}); training goes on")
            self.save_failed = True

    def log(self, record: dict | None) -> None:
        if not self.trackers or record is None:
            return
        step, values = record["step"], scalars(record)
        advanced = False
        for tracker in list(self.trackers):
            if tracker.skips_logged_steps and step <= self.logged_step(tracker):
                continue  # logged before a restart: the run keeps that first point
            if self._call(tracker, "log", lambda t: t.log(step, values)) and tracker.skips_logged_steps:
                self.state.setdefault(tracker.name, {})["logged_step"] = step
                advanced = True
        if advanced:
            self.save_or_warn()  # one small file per log step (every run.log_every steps): 0.3 ms median here

    def finish(self, status: str = "FINISHED") -> None:
        """status: FINISHED, KILLED (stopped by SIGTERM, to be resumed) or FAILED."""
        for tracker in list(self.trackers):
            self._call(tracker, "finish", lambda t: t.finish(status, self.out))
        self.trackers = []

    def _call(self, tracker, what: str, call) -> bool:
        try:
            call(tracker)
            return True
        except Exception as e:  # noqa: BLE001
            self.trackers.remove(tracker)
            warn(f"{tracker.name} tracking stopped at {what} ({one_line(e)}); training goes on without it")
            return False


def one_line(error: Exception) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return f"{type(error).__name__}: {text[:300]}"
