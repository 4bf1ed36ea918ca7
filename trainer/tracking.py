"""Experiment trackers on global rank 0: TensorBoard, MLflow, Weights & Biases (train.tracking, docs/tracking.md).

Fed by RunLog.flush with the very record it appends to metrics.jsonl, so a tracker shows the same scalars under
the same names (loss, eval_loss, lr, grad_norm, tokens_per_s, mfu, ...). Each backend's package is imported
only when its section is set. A tracker that fails, at start or later (its server gone), prints one warning
line and is dropped; training never stops for one.

A resumed run continues the same tracker run: the run ids live in <output_dir>/tracking.json. Steps after the
checkpoint were logged once already and are logged again; metrics.jsonl's rule is that the last record of a
step is the one that counts, and each backend is made to show exactly that view:
  TensorBoard  SummaryWriter(purge_step=step + 1): TensorBoard itself drops the earlier events of those steps.
  MLflow       keeps every point of a metric's history; the later point (timestamp) of a step is the one.
  W&B          plots against a `step` metric (define_metric), not W&B's own `_step`, which must only grow:
               a replayed step is a new row with the same `step`; the later row is the one.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from trainer.config import TrainConfig

STATE_FILE = "tracking.json"  # {"mlflow": {"run_id", "tracking_uri"}, "wandb": {"run_id"}}
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
        # W&B's own _step must only grow; a resumed run logs steps again, so the x axis is our `step`.
        self.run.define_metric("step")
        self.run.define_metric("*", step_metric="step")
        state["wandb"] = {"run_id": run_id}

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

    def __init__(self, out: Path, trackers: list) -> None:
        self.out, self.trackers = out, trackers

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
        out.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)
        if started:
            print(f"[llmlaunch] tracking: {', '.join(t.name for t in started)}", file=sys.stderr, flush=True)
        return cls(out, started)

    def log(self, record: dict | None) -> None:
        if not self.trackers or record is None:
            return
        values = scalars(record)
        self._each("log", lambda t: t.log(record["step"], values))

    def finish(self, status: str = "FINISHED") -> None:
        """status: FINISHED, KILLED (stopped by SIGTERM, to be resumed) or FAILED."""
        self._each("finish", lambda t: t.finish(status, self.out))
        self.trackers = []

    def _each(self, what: str, call) -> None:
        for tracker in list(self.trackers):
            try:
                call(tracker)
            except Exception as e:  # noqa: BLE001
                self.trackers.remove(tracker)
                warn(f"{tracker.name} tracking stopped at {what} ({one_line(e)}); training goes on without it")


def one_line(error: Exception) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return f"{type(error).__name__}: {text[:300]}"
