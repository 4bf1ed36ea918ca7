"""On PYTHONPATH only in tests/test_tracking.py: at exit, every Python process of a run writes which experiment
tracker packages it had imported (LLMLAUNCH_TEST_MODULES_DIR/<pid>.json), so the test can check that a tracker
whose section is not set was never imported."""

import atexit
import json
import os
import sys

TRACKERS = {"mlflow", "wandb", "tensorboard", "tensorboardX"}


def _report() -> None:
    top = {name.split(".")[0] for name in sys.modules}
    found = top & TRACKERS
    if "torch.utils.tensorboard" in sys.modules:
        found.add("tensorboard")
    path = os.path.join(os.environ["LLMLAUNCH_TEST_MODULES_DIR"], f"{os.getpid()}.json")
    with open(path, "w") as f:
        json.dump({"trainer": "deepspeed" in top, "trackers": sorted(found)}, f)


if os.environ.get("LLMLAUNCH_TEST_MODULES_DIR"):
    atexit.register(_report)
