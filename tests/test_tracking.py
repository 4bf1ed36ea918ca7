"""Experiment trackers read back after real training runs (`llmlaunch train`, DeepSpeed on CPU), each compared
step by step with the same run's metrics.jsonl (the last record of a step counts), across a crash and resume:
TensorBoard event files through tensorboard's EventAccumulator, a real `mlflow server` on loopback through
MlflowClient, W&B offline run files through wandb's protobuf records. Then the failures: an MLflow server that
is not there, and one killed mid-run: one warning line each, and training goes on."""

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
from trainjobs import REPO, llmlaunch_env, metrics, tiny_job, train

from tests.fixtures.prometheus import free_port
from tests.mlflow_server import MlflowServer
from tests.wandb_records import history, offline_runs, run_info

pytestmark = [pytest.mark.distributed, pytest.mark.mlflow]

PROBE = Path(__file__).resolve().parent / "module_probe"  # its sitecustomize lists the tracker packages imported
# Every scalar of metrics.jsonl on this CPU; mfu needs a peak, given as metrics.peak_tflops.
MUST_HAVE = {"loss", "eval_loss", "eval_ppl", "lr", "grad_norm", "tokens_per_s", "mfu", "step_seconds", "tokens"}


def last_per_step(out: Path) -> dict[int, dict]:
    """metrics.jsonl as its readers see it: the last record of each step."""
    return {record["step"]: record for record in metrics(out)}


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
    """Two processes, all three trackers; rank 0 fails at step 7, torchrun restarts the group, which resumes
    from the checkpoint of step 4 and logs steps 5 and 6 a second time."""
    tmp = tmp_path_factory.mktemp("tracked")
    (tmp / "failpoints").mkdir()
    job = tiny_job(tmp, name="tracked", metrics={"enabled": False, "peak_tflops": 1.0}, tracking={
        "tensorboard": True,
        "mlflow": {"tracking_uri": server.uri, "experiment": "trackers-e2e", "log_model": True},
        "wandb": {"project": "llmlaunch-tests", "mode": "offline"},
    })
    result = train(job, env={"LLMLAUNCH_FAILPOINTS": "step@7:rank=0:fail",
                             "LLMLAUNCH_FAILPOINT_DIR": str(tmp / "failpoints")})
    out = tmp / "out"
    assert (tmp / "failpoints" / "step-7-rank0.json").is_file()  # it did crash and resume
    assert "resuming from" in result.stderr and "warning" not in result.stderr.lower(), result.stderr[-3000:]
    view = last_per_step(out)
    assert sorted(view) == list(range(1, 9)) and MUST_HAVE <= scalar_keys(view)
    return out, view


def test_tensorboard_events_equal_metrics_jsonl(resumed):
    from tensorboard.backend.event_processing import event_accumulator as ea

    out, view = resumed
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

    out, view = resumed
    client = MlflowClient(server.uri)
    experiment = client.get_experiment_by_name("trackers-e2e")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1  # the restart continued the run
    run = runs[0]
    assert run.info.run_id == json.loads((out / "tracking.json").read_text())["mlflow"]["run_id"]
    assert run.info.status == "FINISHED" and run.info.run_name == "tracked"
    for key in scalar_keys(view):
        points = sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.timestamp)
        last = {}
        for point in points:
            last[point.step] = point.value
        assert last == approx(expected(view, key)), key
    # History keeps both loggings of the replayed steps; the later one is metrics.jsonl's.
    speed = [m for m in client.get_metric_history(run.info.run_id, "tokens_per_s")]
    assert sorted(m.step for m in speed) == [1, 2, 3, 4, 5, 5, 6, 6, 7, 8]
    first_5 = min((m for m in speed if m.step == 5), key=lambda m: m.timestamp)
    assert first_5.value != view[5]["tokens_per_s"]

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
    out, view = resumed
    files = offline_runs(out)
    assert len(files) == 2  # one offline run directory per start of rank 0
    run_id = json.loads((out / "tracking.json").read_text())["wandb"]["run_id"]
    assert {run_info(f).run_id for f in files} == {run_id}  # `wandb sync` uploads both into one run
    info = run_info(files[0])
    config = {item.key: json.loads(item.value_json) for item in info.config.update}
    assert info.project == "llmlaunch-tests" and config["train"]["run"]["max_steps"] == 8
    rows = [row for f in files for row in history(f)]
    assert [row["step"] for row in rows] == [1, 2, 3, 4, 5, 6, 5, 6, 7, 8]
    last = {row["step"]: row for row in rows}
    for key in scalar_keys(view):
        assert {s: r[key] for s, r in last.items() if key in r} == approx(expected(view, key)), key


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
