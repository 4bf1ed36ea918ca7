"""Loading a job file: read it, apply `--set` overrides, resolve local paths, validate into a JobSpec and
check every rule of launcher.spec.rules."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from launcher.errors import ConfigError
from launcher.spec.job_spec import JobSpec
from launcher.spec.rules import check_job, check_plain_data
from trainer import yaml_io
from trainer.config.train_config import describe_validation_error


def parse_set(assignment: str) -> tuple[list[str], Any]:
    """`train.optim.lr=2e-5` -> (["train", "optim", "lr"], 2e-5); the value is read as YAML."""
    key, sep, raw = assignment.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError([f"--set {assignment!r}: expected key.path=value"])
    try:
        value = yaml_io.load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    except ValueError as e:  # more digits than Python converts
        raise ConfigError([f"--set {key}: value out of range ({str(e).splitlines()[0]})"]) from e
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
            # (a NUL character is left for validation to refuse: resolve() would raise on it)
            # (URLs, s3:// and hf:// data, are no paths: they stay as written)
            if (isinstance(value, str) and value and "\x00" not in value and "://" not in value
                    and not Path(value).is_absolute()):
                candidate = base / value
                # A hub id such as "org/model" stays as written when no such local path exists.
                if candidate.exists() or key in ("train", "eval", "cache_dir") or value.startswith("."):
                    part[key] = str(candidate.resolve())


def load_job(path: str | Path, overrides: list[str] = (), resolve_paths: bool = True, local: bool = False,
             pods: bool = False) -> JobSpec:
    """Read a job file, apply `--set` overrides, validate, check every rule of launcher.spec.rules.
    Raises ConfigError (one line per problem). local: for `llmlaunch train`; pods: for the commands that
    make pods (see rules.check_job)."""
    path = Path(path)
    try:
        data = yaml_io.load(path.read_text())
    except OSError as e:
        raise ConfigError([f"{path}: cannot read job file ({e.strerror})"]) from e
    except UnicodeDecodeError as e:
        raise ConfigError([f"{path}: not UTF-8 text (byte {e.start})"]) from e
    except yaml.YAMLError as e:
        raise ConfigError([f"{path}: not valid YAML ({str(e).splitlines()[0]})"]) from e
    except ValueError as e:  # an integer of more digits than Python converts (sys.get_int_max_str_digits)
        raise ConfigError([f"{path}: a value is out of range ({str(e).splitlines()[0]})"]) from e
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: a job file is a mapping with name, cluster and train"])
    check_plain_data(data, str(path))
    apply_overrides(data, list(overrides))
    check_plain_data(data, "--set")
    if resolve_paths:
        _resolve_local_paths(data, path.parent)
    try:
        spec = JobSpec.model_validate(data)
    except ValidationError as e:
        # A section-level rule already names its full key: "cluster: cluster.nodes ..." -> "cluster.nodes ..."
        lines = [re.sub(r"^(\w+): \1\.", r"\1.", line) for line in describe_validation_error(e)]
        raise ConfigError(lines) from e
    check_job(spec, local=local, pods=pods)
    return spec
