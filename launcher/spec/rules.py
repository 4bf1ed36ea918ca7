"""Every rule a job file must meet beyond its field types, in one place.

`load_job` calls `check_job` after pydantic validation, so validate, render, values, submit and
train all apply the same rules: `llmlaunch validate` passing means every command accepts the file.
`check_plain_data` runs before validation, on the raw YAML (and --set) data.
"""

from __future__ import annotations

import datetime
import math
from typing import Any

from launcher.errors import ConfigError
from launcher.spec import names, torchrun
from launcher.spec.k8s_types import has_control_character

# A job file is tens of values; aliases of aliases can make a few lines stand for billions.
MAX_VALUES = 100_000


def check_plain_data(data: Any, source: str) -> None:
    """The loaded YAML holds only JSON types (str keys; str, int, finite float, bool, null, list, map)
    and at most MAX_VALUES values counted through aliases; else one ConfigError line naming the key."""
    budget = [MAX_VALUES]
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        path, value = stack.pop()
        budget[0] -= 1
        if budget[0] < 0:
            raise ConfigError([f"{source}: more than {MAX_VALUES} values once YAML aliases are expanded; "
                               "write the job file without nested aliases"])
        where = path or "(top level)"
        if isinstance(value, dict):
            for key, child in value.items():
                if not isinstance(key, str):
                    raise ConfigError([f"{where}: key {key!r} is a {_kind(key)}, not a string; quote it"])
                stack.append((f"{path}.{key}" if path else key, child))
        elif isinstance(value, list):
            stack.extend((f"{path}[{i}]", child) for i, child in enumerate(value))
        elif isinstance(value, float) and not math.isfinite(value):
            raise ConfigError([f"{where}: {value!r} is not a finite number"])
        elif value is not None and not isinstance(value, (str, int, float, bool)):
            raise ConfigError([f"{where}: a {_kind(value)} is not a job file value (use a string, number, "
                               "boolean, list or mapping; quote dates)"])


def _kind(value: Any) -> str:
    if isinstance(value, (datetime.date, datetime.datetime)):
        return "date"
    if isinstance(value, bytes):
        return "binary value"
    if isinstance(value, (set, frozenset)):
        return "set"
    return type(value).__name__


IMAGE_MISSING = ("cluster.image is not set: build the trainer image from the repository's Dockerfile, push it "
                 "(docker build -t REGISTRY/llmlaunch-trainer:0.1.0 . && docker push REGISTRY/llmlaunch-trainer:0.1.0; "
                 "docs/cluster.md) and set cluster.image or pass --image")


def check_job(spec, local: bool = False, pods: bool = False) -> None:
    """The rules that span the job file (names, image, ports, topology); ConfigError on the first broken one.
    local: a run on this machine (`llmlaunch train`), whose topology and precision come from the machine
    and its flags (trainer.training.preflight checks them), not from cluster.nodes / gpus_per_node.
    pods: the job becomes pods (render, values, submit), which need an image: llmlaunch names none by
    default, since a made-up default fails only later, in the cluster, as ImagePullBackOff."""
    names.check_names(spec)
    check_image(spec.cluster.image, required=pods)
    check_ports(spec)
    if not local:
        check_topology(spec)


def check_image(image: str | None, required: bool = False) -> None:
    if image is None:
        if required:
            raise ConfigError([IMAGE_MISSING])
        return
    if has_control_character(image) or any(c.isspace() for c in image):
        raise ConfigError(
            [f"cluster.image: an image reference has no whitespace or control characters (got {image!r})"]
        )


def rendezvous_ports() -> dict[int, str]:
    return {torchrun.PYTORCHJOB_PORT: "the PyTorchJob rendezvous port",
            torchrun.TRAINJOB_PORT: "the TrainJob rendezvous port"}


def check_ports(spec) -> None:
    port, taken = spec.train.metrics.port, rendezvous_ports()
    if spec.train.metrics.enabled and port in taken:
        raise ConfigError([f"train.metrics.port: {port} is {taken[port]}; choose another"])


def check_topology(spec) -> None:
    """The batch and precision fit the pods the job asks for (what config_files would refuse)."""
    c, train = spec.cluster, spec.train
    if c.elastic is None:
        try:
            train.check_world_size(c.nodes * c.procs_per_node)
        except ValueError as e:
            raise ConfigError([f"train.run.global_batch_size: {e} on the cluster (cluster.nodes {c.nodes} x "
                               f"{c.procs_per_node} per pod)"]) from e
    elif train.run.global_batch_size is not None:
        raise ConfigError(
            ["train.run.global_batch_size: cannot be fixed with cluster.elastic (the world size changes)"]
        )
    if train.precision in ("bf16", "fp16") and c.gpus_per_node == 0:
        # DeepSpeed refuses fp16 on CPU; the chart refuses both (validateDsConfig), so render does too.
        raise ConfigError([f"train.precision: {train.precision} needs GPU pods, but cluster.gpus_per_node is 0 "
                           "(CPU pods); use fp32 or auto"])
