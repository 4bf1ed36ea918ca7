"""YAML in and out through libyaml when PyYAML was built with it: the same safe documents as
yaml.safe_load / safe_dump, parsed and emitted in C (several times faster; job files, `--set` values,
the train.yaml every pod reads, rendered manifests)."""

from __future__ import annotations

from typing import Any

import yaml

SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
SafeDumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def load(text: str) -> Any:
    try:
        return yaml.load(text, Loader=SafeLoader)
    except UnicodeEncodeError:  # lone surrogates (a non-UTF-8 file name from argv): libyaml reads UTF-8 only
        return yaml.safe_load(text)


def dump(data: Any, **options: Any) -> str:
    """`options` as yaml.dump takes them (sort_keys, width, ...)."""
    return yaml.dump(data, Dumper=SafeDumper, **options)
