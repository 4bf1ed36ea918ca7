"""JobSpec -> Kubernetes objects, through the Jinja templates in k8s/.

Python computes every value (pod_values.py); the templates only lay out structure, and every value
enters them through |tojson, which writes a quoted YAML scalar or a flow collection, so no string a
user writes can add, remove or change YAML structure. The same spec always gives the same bytes.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

import yaml

from launcher.render import ownership, pod_values
from launcher.spec import names, rules
from launcher.spec.job_spec import JobSpec
from llmlaunch_data import data_path
from trainer import yaml_io
from trainer.config.ds_config import build_ds_config, resolve_precision


def _quote(text: str) -> str:
    """A double-quoted YAML scalar holding exactly `text`: printable ASCII stays, all else is escaped."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif 0x20 <= code < 0x7F:
            out.append(ch)
        elif code <= 0xFF:
            out.append(f"\\x{code:02x}")
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


def to_yaml_value(value: Any) -> str:
    """The |tojson filter: any JSON-like value as one YAML flow node (bools, numbers, strings, lists, maps)."""
    if value is None or isinstance(value, (bool, int, float)):
        return json.dumps(value)
    if isinstance(value, str):
        return _quote(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_quote(str(k))}: {to_yaml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(to_yaml_value(v) for v in value) + "]"
    raise TypeError(f"cannot render {type(value).__name__} into a manifest")


def _bytecode_cache():
    """Compiled templates are cached per machine: compiling them costs more than rendering (~0.1 s)."""
    import os

    import jinja2

    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "llmlaunch" / "jinja"
    try:
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError:
        return None  # a read-only home: compile every time
    if not private_directory(root):
        return None  # someone else could plant compiled code that rendering would run
    return jinja2.FileSystemBytecodeCache(str(root))


def private_directory(path: Path) -> bool:
    """`path` and its parent belong to this user and nobody else may write them (a bytecode cache is code)."""
    import os
    import stat

    for directory in (path, path.parent):
        try:
            st = directory.lstat()
        except OSError:
            return False
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return False
    return True


@functools.cache
def environment():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(data_path("k8s"))),
        bytecode_cache=_bytecode_cache(),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["tojson"] = to_yaml_value
    # A macro's block, re-indented under the line it starts on.
    env.filters["nest"] = lambda text, width: jinja2.filters.do_indent(str(text).strip(), width)
    return env


def pod_precision(spec: JobSpec) -> str | None:
    """Precision written into ds_config.json. auto on GPU pods stays for the pod to decide (bf16 if
    its GPU has it, else fp16); CPU pods are always fp32; an explicit choice is checked here."""
    has_gpu = spec.cluster.gpus_per_node > 0
    if spec.train.precision == "auto":
        return None if has_gpu else "fp32"
    return resolve_precision(spec.train.precision, has_gpu=has_gpu)


def config_files(spec: JobSpec) -> dict[str, str]:
    """The ConfigMap's two files: the resolved train.yaml and ds_config.json."""
    c, train = spec.cluster, spec.train
    rules.check_topology(spec)
    ds = build_ds_config(train, world_size=c.nodes * c.procs_per_node, precision=pod_precision(spec))
    if c.elastic is not None:
        ds.pop("train_batch_size", None)  # DeepSpeed derives it from micro x accum x the actual world size
    return {"train.yaml": train.to_yaml(), "ds_config.json": json.dumps(ds, indent=2, sort_keys=True) + "\n"}


def _meta(spec: JobSpec, name: str, component: str, extra_labels: dict | None = None,
          extra_annotations: dict | None = None) -> dict[str, Any]:
    return {"name": name, "namespace": spec.cluster.namespace,
            "labels": {**names.common_labels(spec, component), **(extra_labels or {})},
            "annotations": {**spec.cluster.annotations, **(extra_annotations or {})}}


def documents(spec: JobSpec) -> list[str]:
    """The rendered template text of each object, in creation order (the job last)."""
    rules.check_job(spec, pods=True)  # load_job ran them; a spec built in code gets the same checks
    env, c, name = environment(), spec.cluster, spec.name
    docs = [env.get_template("configmap.yaml.j2").render(meta=_meta(spec, names.config_map(name), "config"),
                                                         files=config_files(spec))]
    if c.storage.size:
        docs.append(env.get_template("pvc.yaml.j2").render(
            meta=_meta(spec, names.data_claim(name), "storage",
                       extra_annotations={ownership.KEEP_ANNOTATION: ownership.KEEP_VALUE} if c.storage.keep else None),
            size=c.storage.size,
            storage_class=c.storage.storage_class, access_mode=c.storage.access_mode))
    if c.network.policy:
        docs.append(env.get_template("networkpolicy.yaml.j2").render(
            meta=_meta(spec, names.network_policy(name), "network"), pod_selector=names.pod_selector(spec),
            metrics_port=spec.train.metrics.port if spec.train.metrics.enabled else None,
            metrics_from=c.network.metrics_from, block_metadata_egress=c.network.block_metadata_egress))
    if spec.train.metrics.enabled and c.monitoring.pod_monitor:
        docs.append(env.get_template("podmonitor.yaml.j2").render(
            meta=_meta(spec, names.pod_monitor(name), "monitoring", c.monitoring.labels),
            pod_selector=names.pod_selector(spec), interval=c.monitoring.interval,
            port_name="metrics" if c.api == "pytorchjob" else None, port_number=spec.train.metrics.port))
    if c.disruption_budget:
        docs.append(env.get_template("poddisruptionbudget.yaml.j2").render(
            meta=_meta(spec, names.disruption_budget(name), "disruption-budget"), pod_selector=names.pod_selector(spec),
            min_available=c.min_nodes))
    queue = {names.KUEUE_QUEUE_LABEL: c.scheduling.queue} if c.scheduling.queue else {}
    job_meta = _meta(spec, name, "job", queue)
    pod = pod_values.pod(spec)
    if c.api == "trainjob":
        docs.append(env.get_template("trainjob.yaml.j2").render(
            meta=job_meta, pod=pod, runtime=c.runtime, run_policy=c.run_policy, nodes=c.nodes,
            nproc_per_node=c.procs_per_node, replicated_job=names.TRAINJOB_REPLICATED_JOB,
            patch_manager=names.TRAINJOB_PATCH_MANAGER))
    else:
        docs.append(env.get_template("pytorchjob.yaml.j2").render(
            meta=job_meta, pod=pod, nproc_per_node=str(c.procs_per_node), elastic=c.elastic,
            run_policy=c.run_policy, replicas=replicas(spec),
            min_available=c.min_nodes if c.scheduling.scheduler_name else None))
    return docs


def replicas(spec: JobSpec) -> list[dict[str, Any]]:
    """Master (1) + Worker (nodes-1); an elastic job has only Workers, which the operator scales."""
    c = spec.cluster
    if c.elastic is not None:
        return [{"type": "Worker", "count": c.nodes}]
    return [{"type": "Master", "count": 1}] + ([{"type": "Worker", "count": c.nodes - 1}] if c.nodes > 1 else [])


def render(spec: JobSpec) -> list[dict[str, Any]]:
    """The job's Kubernetes objects, in creation order."""
    return [yaml_io.load(doc) for doc in documents(spec)]


class _BlockDumper(yaml_io.SafeDumper):
    """Multi-line strings (train.yaml, ds_config.json) as literal blocks, so a diff is readable."""


# Plain scalars that kubectl's YAML reader (go-yaml v2, YAML 1.1 rules plus Go's number syntax) takes
# for a bool, null or number, though PyYAML would write them unquoted: y, n, on, 1e5, 0o17, 0x1F, 1_000.
GO_YAML_NON_STRING = re.compile(
    r"y|Y|yes|Yes|YES|n|N|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF|~|null|Null|NULL"
    r"|[-+]?\.(inf|Inf|INF|nan|NaN|NAN)"
    r"|[-+]?(0[xX][0-9a-fA-F_]+|0[oO][0-7_]+|0[bB][01_]+|[0-9][0-9_]*)"
    r"|[-+]?(\.[0-9_]+|[0-9][0-9_]*(\.[0-9_]*)?)([eE][-+]?[0-9]+)?"
)


def _represent_str(dumper, text: str):
    if "\n" in text:
        style = "|"
    elif GO_YAML_NON_STRING.fullmatch(text):
        style = "'"
    else:
        style = None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_BlockDumper.add_representer(str, _represent_str)


def to_yaml(obj: dict[str, Any]) -> str:
    return yaml.dump(obj, Dumper=_BlockDumper, sort_keys=False, default_flow_style=False, width=10_000)


def to_yaml_stream(objects: list[dict[str, Any]]) -> str:
    return "".join(f"---\n{to_yaml(obj)}" for obj in objects)


def file_name(index: int, obj: dict[str, Any]) -> str:
    return f"{index:02d}-{obj['kind'].lower()}-{obj['metadata']['name']}.yaml"


def write_dir(objects: list[dict[str, Any]], directory: Path) -> list[Path]:
    """One file per object, numbered in creation order (so `kubectl apply -f DIR` keeps the order)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, obj in enumerate(objects):
        path = directory / file_name(i, obj)
        path.write_text(to_yaml(obj))
        paths.append(path)
    return paths
