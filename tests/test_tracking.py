"""Experiment trackers read back after real training runs (`llmlaunch train`, DeepSpeed on CPU), each compared
step by step with metrics.jsonl across a crash and resume: TensorBoard event files through tensorboard's
EventAccumulator (the replay's values, as metrics.jsonl), a real `mlflow server` on loopback through MlflowClient
and W&B offline run files through wandb's protobuf records (one point per step: the first attempt's values).
Then the failures: an MLflow server that is not there, one killed mid-run, a tracking.json that cannot be
rewritten: one warning line each, and training (logging) goes on."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.fixtures.prometheus import free_port
from tests.mlflow_server import MlflowServer
from tests.wandb_records import history, offline_runs, run_info
from trainjobs import REPO, llmlaunch, llmlaunch_env, metrics, tiny_job, train

pytestmark = [pytest.mark.distributed, pytest.mark.mlflow]

PROBE = Path(__file__).resolve().parent / "module_probe"  # its sitecustomize lists the tracker packages imported
# Every scalar of metrics.jsonl on this CPU; mfu needs a peak, given as metrics.peak_tflops.
MUST_HAVE = {"loss", "eval_loss", "eval_ppl", "lr", "grad_norm", "tokens_per_s", "mfu", "step_seconds", "tokens"}
TIMED = {"tokens_per_s", "step_seconds", "mfu", "data_wait_s"}  # measured: a replayed step's differ; the rest repeat
REPLAYED = (5, 6)


def last_per_step(out: Path) -> dict[int, dict]:
    """metrics.jsonl as its readers see it: the last record of each step."""
    return {record["step"]: record for record in metrics(out)}


def first_per_step(records: list[dict]) -> dict[int, dict]:
    """The first record of each step: what MLflow and W&B hold, as they never log a step twice."""
    view: dict[int, dict] = {}
    for record in records:
        view.setdefault(record["step"], record)
    return view


def expected(view: dict[int, dict], key: str) -> dict[int, float]:
    return {step: record[key] for step, record in view.items() if record.get(key) is not None}


def scalar_keys(view: dict[int, dict]) -> set[str]:
    return {k for r in view.values() for k, v in r.items() if k not in ("step", "time") and isinstance(v, (int, float))}


def approx(values: dict[int, float]):
    return pytest.approx(values, rel=1e-6)  # TensorBoard stores float32


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = MlflowServer.start(tmp_path_factory.mktemp("mlflow"))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def resumed(tmp_path_factory, server):
    """Two processes, all three trackers. The first launch fails at step 7 (rank 0, no restarts) after logging
    steps 1-6, with the checkpoint of step 4; its metrics.jsonl is kept aside, as the resume drops the records
    after step 4. The second launch resumes from step 4: steps 5 and 6 are trained again, then 7 and 8.
    Returns (out, the last record of each step, the first record of each step over both launches)."""
    tmp = tmp_path_factory.mktemp("tracked")
    (tmp / "failpoints").mkdir()
    job = tiny_job(tmp, name="tracked", run={"max_restarts": 0}, metrics={"enabled": False, "peak_tflops": 1.0},
                   tracking={
        "tensorboard": True,
        "mlflow": {"tracking_uri": server.uri, "experiment": "trackers-e2e", "log_model": True},
        "wandb": {"project": "llmlaunch-tests", "mode": "offline"},
    })
    crashed = llmlaunch("train", str(job), "--nproc-per-node", "2", env={
        "LLMLAUNCH_FAILPOINTS": "step@7:rank=0:fail", "LLMLAUNCH_FAILPOINT_DIR": str(tmp / "failpoints")})
    out = tmp / "out"
    assert crashed.returncode != 0 and (tmp / "failpoints" / "step-7-rank0.json").is_file(), crashed.stderr[-3000:]
    assert "[llmlaunch] warning" not in crashed.stderr, crashed.stderr[-3000:]
    first_attempt = metrics(out)
    assert [r["step"] for r in first_attempt] == [1, 2, 3, 4, 5, 6]
    result = train(job)
    assert "resuming from" in result.stderr and "warning" not in result.stderr.lower(), result.stderr[-3000:]
    # The skip follows tracking.json's record of what each run holds; TensorBoard purges instead.
    assert "(resumed: logging mlflow after step 6, wandb after step 6)" in result.stderr
    view = last_per_step(out)
    assert sorted(view) == list(range(1, 9)) and scalar_keys(view) >= MUST_HAVE
    first = first_per_step(first_attempt + metrics(out))
    for step in REPLAYED:  # the replay is deterministic: only the timings differ between the two attempts
        assert {k: v for k, v in first[step].items() if k not in TIMED | {"time"}} == \
               {k: v for k, v in view[step].items() if k not in TIMED | {"time"}}, step
    assert first[5]["tokens_per_s"] != view[5]["tokens_per_s"]  # so the checks below can tell which one a tracker holds
    return out, view, first


def test_tensorboard_events_equal_metrics_jsonl(resumed):
    from tensorboard.backend.event_processing import event_accumulator as ea

    out, view, _ = resumed
    files = sorted((out / "tensorboard").glob("events.out.tfevents.*"))
    assert len(files) == 2  # one per start of rank 0, none from rank 1
    acc = ea.EventAccumulator(str(out / "tensorboard"), size_guidance={ea.SCALARS: 0, ea.TENSORS: 0})
    acc.Reload()
    assert set(acc.Tags()["scalars"]) == scalar_keys(view)
    for key in scalar_keys(view):
        events = acc.Scalars(key)
        assert len({e.step for e in events}) == len(events), key  # no step shown twice
        assert {e.step: e.value for e in events} == approx(expected(view, key)), key
    # The restarted writer opens with a purge at the first replayed step: TensorBoard's readers drop every tag's
    # older events from there on, not only those of tags that happen to be logged again.
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    starts = [e.step for e in EventFileLoader(str(files[1])).Load() if e.HasField("session_log")]
    assert starts == [5]
    text = acc.Tensors("train.yaml/text_summary")
    assert len(text) == 1  # written at the first start only
    shown = text[0].tensor_proto.string_val[0].decode().removeprefix("```yaml\n").removesuffix("```")
    assert yaml.safe_load(shown) == yaml.safe_load((out / "train.yaml").read_text())


def test_mlflow_run_equals_metrics_jsonl_and_holds_params_and_model(resumed, server, tmp_path):
    from mlflow.tracking import MlflowClient

    out, view, first = resumed
    client = MlflowClient(server.uri)
    experiment = client.get_experiment_by_name("trackers-e2e")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1  # the restart continued the run
    run = runs[0]
    state = json.loads((out / "tracking.json").read_text())
    assert run.info.run_id == state["mlflow"]["run_id"] and state["mlflow"]["logged_step"] == 8
    assert run.info.status == "FINISHED" and run.info.run_name == "tracked"
    for key in scalar_keys(view):
        points = client.get_metric_history(run.info.run_id, key)
        steps = [point.step for point in points]
        assert len(steps) == len(set(steps)), (key, steps)  # one point per step: the replay was not logged again
        shown = {point.step: point.value for point in points}
        assert shown == expected(first, key), key  # each step's first record, the timings included
        if key not in TIMED:
            assert shown == expected(view, key), key  # and metrics.jsonl's values

    params = run.data.params
    train_yaml = yaml.safe_load((out / "train.yaml").read_text())
    assert params["run.max_steps"] == "8" and params["model.config.hidden_size"] == "64"
    assert params["tracking.mlflow.tracking_uri"] == server.uri and params["optim.betas"] == "[0.9, 0.95]"
    assert len(params) == count_leaves(train_yaml)

    local = Path(client.download_artifacts(run.info.run_id, "final", str(tmp_path)))
    files = sorted(p.name for p in (out / "final").iterdir())
    assert files and sorted(p.name for p in local.iterdir()) == files
    for name in files:
        assert (local / name).read_bytes() == (out / "final" / name).read_bytes(), name


def count_leaves(value) -> int:
    if isinstance(value, dict) and value:
        return sum(count_leaves(v) for v in value.values())
    return 1


def test_wandb_offline_rows_equal_metrics_jsonl(resumed):
    out, view, first = resumed
    files = offline_runs(out)
    assert len(files) == 2  # one offline run directory per start of rank 0
    state = json.loads((out / "tracking.json").read_text())
    assert {run_info(f).run_id for f in files} == {state["wandb"]["run_id"]}  # `wandb sync` uploads both into one run
    assert state["wandb"]["logged_step"] == 8
    info = run_info(files[0])
    config = {item.key: json.loads(item.value_json) for item in info.config.update}
    assert info.project == "llmlaunch-tests" and config["train"]["run"]["max_steps"] == 8
    rows = [[row for row in history(f)] for f in files]
    # Each step once: the resumed process skipped 5 and 6, logged before the crash.
    assert [[row["step"] for row in part] for part in rows] == [[1, 2, 3, 4, 5, 6], [7, 8]]
    # W&B's own _step starts again at 0 in the resumed offline run: charts must use `step` (define_metric).
    assert [[row["_step"] for row in part] for part in rows] == [[0, 1, 2, 3, 4, 5], [0, 1]]
    for key in scalar_keys(view):
        shown = {row["step"]: row[key] for part in rows for row in part if key in row}
        assert shown == expected(first, key), key  # each step's first record, the timings included
        if key not in TIMED:
            assert shown == expected(view, key), key  # and metrics.jsonl's values


def run_probed(job: Path, *, env: dict | None = None) -> subprocess.Popen:
    """`llmlaunch train` in one process; the module probe writes each process's tracker imports at exit."""
    full = llmlaunch_env(**(env or {}))
    full["PYTHONPATH"] = f"{PROBE}{os.pathsep}{full['PYTHONPATH']}"
    full["LLMLAUNCH_TEST_MODULES_DIR"] = str(job.parent / "modules")
    (job.parent / "modules").mkdir()
    return subprocess.Popen([sys.executable, "-m", "launcher.cli", "train", str(job), "--nproc-per-node", "1"],
                            cwd=REPO, env=full, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def trainer_imports(job: Path) -> set[str]:
    """The tracker packages the training process (the one that imported deepspeed) had imported."""
    reports = [json.loads(p.read_text()) for p in (job.parent / "modules").glob("*.json")]
    trainers = [set(r["trackers"]) for r in reports if r["trainer"]]
    assert len(trainers) == 1, reports
    return trainers[0]


def mlflow_lines(output: str, tmp: Path) -> list[str]:
    """Lines about MLflow, other than the list of trackers started (the test's own paths name it too)."""
    return [line for line in output.splitlines()
            if "mlflow" in line.replace(str(tmp), "").lower() and not line.startswith("[llmlaunch] tracking:")]


def test_mlflow_at_a_closed_port_costs_one_warning_and_no_imports_of_unused_trackers(tmp_path):
    job = tiny_job(tmp_path, run={"max_steps": 3, "eval_every": 0, "save_every": 0},
                   tracking={"mlflow": {"tracking_uri": f"http://127.0.0.1:{free_port()}"}})
    proc = run_probed(job)
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output[-4000:]
    warnings = [line.split(" (")[0] for line in mlflow_lines(output, tmp_path)]
    assert warnings == ["[llmlaunch] warning: mlflow tracking did not start"]
    assert sorted(last_per_step(tmp_path / "out")) == [1, 2, 3]
    assert trainer_imports(job) == {"mlflow"}  # neither wandb nor tensorboard: their sections are not set


def test_mlflow_server_killed_mid_run_costs_one_warning_and_the_others_go_on(tmp_path):
    server = MlflowServer.start(tmp_path / "mlflow")
    try:
        job = tiny_job(tmp_path, run={"max_steps": 6, "eval_every": 0, "save_every": 0}, tracking={
            "tensorboard": True, "mlflow": {"tracking_uri": server.uri, "experiment": "lost"}})
        (tmp_path / "failpoints").mkdir()
        proc = run_probed(job, env={"LLMLAUNCH_FAILPOINTS": "step@3:rank=0:stop",
                                    "LLMLAUNCH_FAILPOINT_DIR": str(tmp_path / "failpoints")})
        marker = tmp_path / "failpoints" / "step-3-rank0.json"
        deadline = time.monotonic() + 300
        while not marker.is_file() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert marker.is_file(), proc.communicate(timeout=60)[0][-4000:]
        # The trainer is frozen in step 3: steps 1 and 2 reached the server; now the server goes away.
        from mlflow.tracking import MlflowClient

        client = MlflowClient(server.uri)
        run_id = json.loads((tmp_path / "out" / "tracking.json").read_text())["mlflow"]["run_id"]
        assert [m.step for m in client.get_metric_history(run_id, "loss")] == [1, 2]
    finally:
        server.stop()
    os.kill(json.loads(marker.read_text())["pid"], signal.SIGCONT)
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output[-4000:]
    warnings = [line.split(" (")[0] for line in mlflow_lines(output, tmp_path)]
    assert warnings == ["[llmlaunch] warning: mlflow tracking stopped at log"]
    view = last_per_step(tmp_path / "out")
    assert sorted(view) == [1, 2, 3, 4, 5, 6]
    stall = view[4]["time"] - view[3]["time"]  # step 3's record, then the failed MLflow call, then step 4
    print(f"a lost MLflow server cost the run {stall:.1f}s once")
    assert stall < 30

    from tensorboard.backend.event_processing import event_accumulator as ea

    acc = ea.EventAccumulator(str(tmp_path / "out" / "tensorboard"))
    acc.Reload()
    assert {e.step: e.value for e in acc.Scalars("loss")} == approx(expected(view, "loss"))
    assert trainer_imports(job) == {"mlflow", "tensorboard"}


def test_an_unwritable_tracking_json_costs_one_warning_and_logging_goes_on(tmp_path, capsys):
    from trainer.config.train_config import TrainConfig
    from trainer.observability.trackers import Trackers

    out = tmp_path / "out"
    cfg = TrainConfig.model_validate({
        "model": {"config": {"model_type": "llama"}, "tokenizer": "tok"}, "data": {"train": "x.jsonl"},
        "run": {"output_dir": str(out), "max_steps": 3},
        "tracking": {"wandb": {"project": "llmlaunch-tests", "mode": "offline"}}})
    trackers = Trackers.start(cfg, out, {}, step=0, is_main=True)
    (out / ".tracking.json.tmp").mkdir()  # where the atomic rewrite writes first: now it cannot
    for step in (1, 2, 3):
        trackers.log({"step": step, "time": 0.0, "loss": 1.0 / step})
    trackers.finish()
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and warnings[0].startswith("[llmlaunch] warning: tracking.json not updated"), warnings
    assert [row["step"] for row in history(offline_runs(out)[0])] == [1, 2, 3]


def test_an_unwritable_tracking_json_at_start_costs_one_warning_and_logging_goes_on(tmp_path, capsys):
    from trainer.config.train_config import TrainConfig
    from trainer.observability.trackers import Trackers

    out = tmp_path / "out"
    cfg = TrainConfig.model_validate({
        "model": {"config": {"model_type": "llama"}, "tokenizer": "tok"}, "data": {"train": "x.jsonl"},
        "run": {"output_dir": str(out), "max_steps": 2},
        "tracking": {"wandb": {"project": "llmlaunch-tests", "mode": "offline"}}})
    (out / ".tracking.json.tmp").mkdir(parents=True)  # the first save, in start(), cannot write either
    trackers = Trackers.start(cfg, out, {}, step=0, is_main=True)
    for step in (1, 2):
        trackers.log({"step": step, "time": 0.0, "loss": 1.0 / step})
    trackers.finish()
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and warnings[0].startswith("[llmlaunch] warning: tracking.json not updated"), warnings
    assert [row["step"] for row in history(offline_runs(out)[0])] == [1, 2]
