"""JobSpec -> Helm values for helm/llmlaunch (`llmlaunch values`).

Python computes what the chart cannot: the resolved train.yaml and ds_config.json (presets, batch
sizes for the topology) and every check JobSpec and the renderer make (names, ports, world size).
The rest is the job's `cluster` section in camelCase; the chart lays it out into the same objects
`llmlaunch render` writes (a test keeps the two identical for every example).
"""

from __future__ import annotations

import shlex
import textwrap
import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic.alias_generators import to_camel

from launcher.render import manifests
from launcher.render.chart_values import ChartMonitoring, ChartValues, ConfigFiles, camel_dump
from launcher.spec import rules
from launcher.spec.job_spec import JobSpec

WIDTH = 100


def chart_values(spec: JobSpec, name: str | None = None) -> dict[str, Any]:
    """Complete values (every key, in the chart's order) that make the chart render `spec`'s objects.
    `name` replaces the job name ("" = the release name, as the chart's own values.yaml has it)."""
    rules.check_job(spec, pods=True)
    files = manifests.config_files(spec)
    cluster = {
        key: getattr(spec.cluster, key) for key in type(spec.cluster).model_fields if key in ChartValues.model_fields
    }
    model = ChartValues.model_validate({
        **cluster,
        "name": spec.name if name is None else name,
        "monitoring": ChartMonitoring(**spec.cluster.monitoring.model_dump()),
        "config": ConfigFiles(train_yaml=files["train.yaml"], ds_config_json=files["ds_config.json"]),
    })
    return camel_dump(model)


def chart_defaults(spec: JobSpec) -> dict[str, Any]:
    """The chart's own values.yaml: `spec`'s values named after the release, with network.metricsFrom
    left empty. Helm merges a user's map into a default map key by key, so a default selector would
    stay inside every selector a user sets; the chart fills in what is left out (defaults_template)."""
    values = chart_values(spec, name="")
    values["network"]["metricsFrom"] = {}
    return values


def install_hint(spec: JobSpec, values_file: str) -> str:
    return shell_command(
        ["helm", "install", spec.name, "./helm/llmlaunch", "-n", spec.cluster.namespace, "-f", values_file]
    )


def _section_model(annotation: Any) -> type[BaseModel] | None:
    """The model of a section field (`Resources`, `Elastic | None`), or None for a plain value."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for member in typing.get_args(annotation):
            if isinstance(member, type) and issubclass(member, BaseModel):
                return member
    return None


def _comment(text: str, indent: int) -> list[str]:
    prefix = " " * indent + "# "
    return textwrap.wrap(" ".join(text.split()), WIDTH - len(prefix), initial_indent=prefix, subsequent_indent=prefix,
                         break_on_hyphens=False)


def _documented(model: type[BaseModel], data: dict[str, Any], indent: int) -> list[str]:
    fields = {to_camel(key): info for key, info in model.model_fields.items()}
    lines: list[str] = []
    for key, value in data.items():
        info = fields[key]
        section = _section_model(info.annotation)
        lines += _comment(info.description or (section.__doc__ if section else "") or key, indent)
        if section is not None and isinstance(value, dict) and value:
            lines.append(" " * indent + f"{key}:")
            lines += _documented(section, value, indent + 2)
        else:
            lines += [" " * indent + line for line in manifests.to_yaml({key: value}).splitlines()]
    return lines


def _is_control(c: str) -> bool:
    return ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 or c in "\u2028\u2029"


def shell_word(arg: str) -> str:
    """`arg` as one shell word that a paste reproduces exactly, on one line: shlex quoting, or bash's
    $'...' with escapes when it holds a control character (a newline would end the comment)."""
    if not any(_is_control(c) for c in arg):
        return shlex.quote(arg)
    out = []
    for c in arg:
        if c in "\\'":
            out.append("\\" + c)
        elif not _is_control(c):
            out.append(c)
        else:
            out.append(f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")
    return "$'" + "".join(out) + "'"


def shell_command(args: list[str]) -> str:
    return " ".join(shell_word(a) for a in args)


def documented_yaml(values: dict[str, Any], header: list[str]) -> str:
    """The values as YAML with each key's description as a comment above it (a values.yaml a person reads)."""
    for line in header:  # a header line is one comment line: callers quote what they show (shell_command)
        if any(_is_control(c) for c in line):
            raise ValueError(f"header line with a line break: {line!r}")
    lines = [f"# {line}" if line else "#" for line in header]
    return "\n".join([*lines, "", *_documented(ChartValues, values, 0)]) + "\n"


def values_file(spec: JobSpec, args: list[str]) -> str:
    """What `llmlaunch values` prints: the documented values of one job; `args` are the command's own."""
    header = [
        f"Helm values for job {spec.name}, written by `{shell_command(['llmlaunch', 'values', *args])}`.",
        f"Install: {install_hint(spec, 'values.yaml')}",
        "config.* was computed for nodes, gpusPerNode and elastic below: to change those, run llmlaunch",
        "values again (with --nodes / --gpus-per-node / --set); other keys may be edited here or with --set.",
    ]
    return documented_yaml(chart_values(spec), header)
