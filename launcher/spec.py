"""JobSpec: a whole job file (name + cluster + train), loaded, overridden and validated.

The `train` part is trainer.config.TrainConfig, shipped unchanged to the pods as train.yaml;
the `cluster` part describes where and how the pods run.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from launcher.cluster_spec import ClusterSpec
from trainer.config import ConfigError, TrainConfig, describe_validation_error

DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
MAX_NAME = 40  # leaves room for the longest suffix we append (e.g. "-worker-12345" and pod hashes)


class JobSpec(BaseModel):
    """A job file."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., description="Job name (DNS-1123 label; prefixes every object's name).")
    cluster: ClusterSpec = Field(default_factory=ClusterSpec)
    train: TrainConfig

    @field_validator("name")
    @classmethod
    def _dns_name(cls, name: str) -> str:
        if not DNS1123.match(name):
            raise ValueError(f"must be lowercase letters, digits and '-', starting and ending alphanumeric (got {name!r})")
        if len(name) > MAX_NAME:
            raise ValueError(f"must be at most {MAX_NAME} characters (got {len(name)})")
        return name


def parse_set(assignment: str) -> tuple[list[str], Any]:
    """`train.optim.lr=2e-5` -> (["train", "optim", "lr"], 2e-5); the value is read as YAML."""
    key, sep, raw = assignment.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError([f"--set {assignment!r}: expected key.path=value"])
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict, assignments: list[str]) -> dict:
    for assignment in assignments:
        path, value = parse_set(assignment)
        node = data
        for i, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError([f"--set {assignment}: {'.'.join(path[: i + 1])} is not a section"])
            node = child
        node[path[-1]] = value
    return data


def _resolve_local_paths(data: dict, base: Path) -> None:
    """Relative file paths in the job file are relative to the job file, like includes in most tools."""
    train = data.get("train")
    if not isinstance(train, dict):
        return
    for section, keys in (("model", ("pretrained", "tokenizer")), ("data", ("train", "eval", "cache_dir"))):
        part = train.get(section)
        if not isinstance(part, dict):
            continue
        for key in keys:
            value = part.get(key)
            if isinstance(value, str) and value and not Path(value).is_absolute():
                candidate = base / value
                # A hub id such as "org/model" stays as written when no such local path exists.
                if candidate.exists() or key in ("train", "eval", "cache_dir") or value.startswith("."):
                    part[key] = str(candidate.resolve())


def load_job(path: str | Path, overrides: list[str] = (), resolve_paths: bool = True) -> JobSpec:
    """Read a job file, apply `--set` overrides, validate. Raises ConfigError (one line per problem)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ConfigError([f"{path}: cannot read job file ({e.strerror})"]) from e
    except yaml.YAMLError as e:
        raise ConfigError([f"{path}: not valid YAML ({str(e).splitlines()[0]})"]) from e
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: a job file is a mapping with name, cluster and train"])
    apply_overrides(data, list(overrides))
    if resolve_paths:
        _resolve_local_paths(data, path.parent)
    try:
        return JobSpec.model_validate(data)
    except ValidationError as e:
        # A section-level rule already names its full key: "cluster: cluster.nodes ..." -> "cluster.nodes ..."
        lines = [re.sub(r"^(\w+): \1\.", r"\1.", line) for line in describe_validation_error(e)]
        raise ConfigError(lines) from e
