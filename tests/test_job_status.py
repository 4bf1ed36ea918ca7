"""Job state from operator status, for the cases the e2e tests cannot reach (TrainJob counts, suspend)."""

from launcher.cluster.job_status import describe, job_state, summary


def cond(t, status="True", message=""):
    return {"type": t, "status": status, "message": message, "reason": t, "lastTransitionTime": "2025-01-01T00:00:00Z"}


def test_pytorchjob_states():
    assert job_state({"kind": "PyTorchJob"})[0] == "Pending"
    assert job_state({"kind": "PyTorchJob", "status": {"conditions": [cond("Created"), cond("Running", "False"),
                                                                      cond("Restarting")]}})[0] == "Restarting"
    # A terminal condition wins even when written before another True one.
    assert job_state({"kind": "PyTorchJob",
                      "status": {"conditions": [cond("Failed", message="OOM"), cond("Created")]}}) == ("Failed", "OOM")
    assert job_state({"kind": "PyTorchJob",
                      "status": {"conditions": [cond("Created"), cond("Suspended")]}})[0] == "Suspended"


def test_trainjob_states_from_conditions_and_jobset_counts():
    tj = {"kind": "TrainJob", "spec": {"trainer": {"numNodes": 4}}}
    assert job_state(tj)[0] == "Pending"
    running = {**tj, "status": {"jobsStatus": [{"name": "node", "active": 4, "ready": 4, "succeeded": 0, "failed": 0,
                                                "suspended": 0}]}}
    assert job_state(running)[0] == "Running"
    assert job_state({**tj, "status": {"conditions": [cond("Complete")]}})[0] == "Succeeded"
    s = summary(running | {"metadata": {"name": "t", "namespace": "ns"}})
    assert s["nodes"] == 4 and s["replicas"]["node"]["active"] == 4
    assert "replicas:   node: active 4, failed 0, ready 4, succeeded 0, suspended 0" in describe(s)
