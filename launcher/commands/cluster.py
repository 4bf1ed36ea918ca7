"""Cluster commands: init, render, values, submit, status, list, logs, delete.

`render`, `values` and `init` never import the kubernetes client; the others import it (through launcher.cluster.client)
only when they run. Errors: bad input -> ConfigError (exit 2), cluster problems -> RuntimeFailure
(exit 1), each one line.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
from pathlib import Path

import click

from launcher.commands.estimate import warn_if_too_big
from launcher.commands.options import cluster_options, job_file, job_options, output_option, report_errors
from launcher.errors import ConfigError, RuntimeFailure
from llmlaunch_data import data_path


def load_cluster_job(path: str, overrides, nodes, gpus_per_node, image, namespace):
    """The job file with the flags applied as cluster.* overrides; paths stay as written (pod paths)."""
    from launcher.spec.load import load_job

    flags = {"nodes": nodes, "gpus_per_node": gpus_per_node, "image": image, "namespace": namespace}
    # json.dumps: a JSON string is a YAML string, so the flag's value is taken literally.
    extra = [f"cluster.{k}={json.dumps(v)}" for k, v in flags.items() if v is not None]
    return load_job(path, [*overrides, *extra], resolve_paths=False, pods=True)


@contextlib.contextmanager
def cluster_errors():
    from launcher.cluster.client import KubeError

    try:
        yield
    except KubeError as e:
        raise RuntimeFailure(str(e)) from e


def connect(kubeconfig, context):
    from launcher.cluster.client import Cluster

    with cluster_errors():
        return Cluster(kubeconfig, context)


def emit(data, output: str, text: str) -> None:
    if output == "json":
        click.echo(json.dumps(data, indent=2, sort_keys=True))
    elif output == "yaml":
        from trainer import yaml_io

        click.echo(yaml_io.dump(data, sort_keys=False), nl=False)
    else:
        click.echo(text)


@click.command()
@click.argument("path", type=click.Path(dir_okay=False), default="job.yaml")
@click.option("--example", default="tiny", show_default=True, help="Example to start from (see --list).")
@click.option("--list", "list_only", is_flag=True, help="List the examples and exit.")
@click.option("--force", is_flag=True, help="Overwrite PATH if it exists.")
@report_errors
def init(path: str, example: str, list_only: bool, force: bool) -> None:
    """Write a documented starter job file (default ./job.yaml)."""
    available = sorted(p.stem for p in data_path("examples").glob("*.yaml"))
    if list_only:
        click.echo("\n".join(available))
        return
    if example not in available:
        raise ConfigError([f"--example: no example {example!r}; choose one of {', '.join(available)}"])
    target = Path(path)
    if target.exists() and not force:
        raise ConfigError([f"{path}: already exists (use --force to overwrite)"])
    source = data_path("examples") / f"{example}.yaml"
    shutil.copyfile(source, target)
    click.echo(f"wrote {path} (from example {example}); check it with: llmlaunch validate {path}")
    if target.resolve().parent != source.parent:
        click.echo(f"note: relative paths in it (data, tokenizer) are read relative to {path}; the example's "
                   f"own data lives in {source.parent}", err=True)


@click.command()
@job_file
@job_options
@click.option("-o", "--output-dir", type=click.Path(file_okay=False), help="Write one file per object here.")
@report_errors
def render(job_file, nodes, gpus_per_node, image, namespace, overrides, output_dir) -> None:
    """Print the job's Kubernetes manifests (a YAML stream), or write them to a directory."""
    from launcher.render import manifests

    spec = load_cluster_job(job_file, overrides, nodes, gpus_per_node, image, namespace)
    objects = manifests.render(spec)
    warn_if_too_big(spec)
    if output_dir:
        for path in manifests.write_dir(objects, Path(output_dir)):
            click.echo(str(path))
    else:
        sys.stdout.write(manifests.to_yaml_stream(objects))


@click.command("values")
@job_file
@job_options
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False), help="Write the values to this file (default: stdout)."
)
@report_errors
def values_(job_file, nodes, gpus_per_node, image, namespace, overrides, output) -> None:
    """Print the Helm chart's values for a job (helm install NAME helm/llmlaunch -f VALUES)."""
    from launcher.render.helm_values import install_hint, values_file

    spec = load_cluster_job(job_file, overrides, nodes, gpus_per_node, image, namespace)
    flags = {"--nodes": nodes, "--gpus-per-node": gpus_per_node, "--image": image, "-n": namespace}
    args = [job_file, *(word for k, v in flags.items() if v is not None for word in (k, str(v))),
            *(word for s in overrides for word in ("--set", s))]
    text = values_file(spec, args)
    if output:
        Path(output).write_text(text)
        click.echo(f"wrote {output}; install it with: {install_hint(spec, output)}")
    else:
        sys.stdout.write(text)


@click.command()
@job_file
@job_options
@cluster_options
@click.option("--dry-run", type=click.Choice(["none", "client", "server"]), default="none", show_default=True,
              help="client: print what would be created; server: let the API server validate, create nothing.")
@click.option("--wait", is_flag=True, help="Follow the job until it runs, succeeds or fails.")
@click.option("--timeout", type=click.FloatRange(min=0), default=900, show_default=True, help="Seconds --wait waits.")
@report_errors
def submit(job_file, nodes, gpus_per_node, image, namespace, overrides, kubeconfig, context, dry_run, wait, timeout):
    """Create the job on the cluster (nothing is left behind if that fails halfway)."""
    from launcher.render import manifests

    spec = load_cluster_job(job_file, overrides, nodes, gpus_per_node, image, namespace)
    objects = manifests.render(spec)
    warn_if_too_big(spec)
    if dry_run == "client":
        for obj in objects:
            click.echo(f"{obj['kind'].lower()}/{obj['metadata']['name']} created (dry run)")
        return
    from launcher.cluster import jobs
    from launcher.cluster.client import KINDS

    cluster = connect(kubeconfig, context)
    with cluster_errors():
        if spec.cluster.storage.claim:
            jobs.check_claim(cluster, spec.cluster.namespace, spec.cluster.storage.claim, spec.cluster.max_nodes)
        jobs.submit(cluster, objects, dry_run=dry_run == "server", echo=click.echo)
        if dry_run == "server":
            return
        ns = spec.cluster.namespace
        click.echo(f"follow it: llmlaunch status {spec.name} -n {ns}; llmlaunch logs {spec.name} -n {ns} -f")
        if wait:
            jobs.wait(cluster, KINDS[objects[-1]["kind"]], ns, spec.name, timeout, click.echo)


def _namespace(cluster, namespace):
    return namespace or cluster.namespace


@click.command()
@click.argument("name")
@click.option("-n", "--namespace", help="Namespace (default: the context's).")
@cluster_options
@output_option
@report_errors
def status(name, namespace, kubeconfig, context, output):
    """Show a job's state, its pods and why they wait, recent warnings, and the training progress."""
    from launcher.cluster import job_status, jobs

    cluster = connect(kubeconfig, context)
    with cluster_errors():
        kind, obj = jobs.find_job(cluster, _namespace(cluster, namespace), name)
        summary = job_status.explained(obj, jobs.explain(cluster, kind, obj))
    emit(summary, output, job_status.describe(summary))


@click.command("list")
@click.option("-n", "--namespace", help="Namespace (default: the context's).")
@click.option("-A", "--all-namespaces", is_flag=True, help="Jobs of every namespace.")
@cluster_options
@output_option
@report_errors
def list_(namespace, all_namespaces, kubeconfig, context, output):
    """List the jobs llmlaunch created."""
    from launcher.cluster import jobs

    cluster = connect(kubeconfig, context)
    with cluster_errors():
        rows = jobs.list_jobs(cluster, None if all_namespaces else _namespace(cluster, namespace))
    table = [("NAMESPACE", "NAME", "KIND", "STATE", "NODES", "CREATED")]
    table += [(r["namespace"], r["name"], r["kind"], r["state"], str(r["nodes"]), r["created"] or "-") for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    text = "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in table)
    emit(rows, output, text if rows else "no llmlaunch jobs found")


@click.command()
@click.argument("name")
@click.option("-n", "--namespace", help="Namespace (default: the context's).")
@click.option("--node", type=click.IntRange(min=0), default=0, show_default=True, help="Node (pod) index; 0 = master.")
@click.option("-f", "--follow", is_flag=True, help="Stream new lines until the pod ends.")
@click.option("--tail", type=click.IntRange(min=0), help="Only the last N lines.")
@cluster_options
@report_errors
def logs(name, namespace, node, follow, tail, kubeconfig, context):
    """Print the logs of one node of a job."""
    from launcher.cluster import job_status, jobs
    from launcher.cluster.client import KubeError

    cluster = connect(kubeconfig, context)
    ns = _namespace(cluster, namespace)
    with cluster_errors():
        kind, job = jobs.find_job(cluster, ns, name)
        count = job_status.nodes_of(job)
        if node >= count:
            raise ConfigError([f"--node: job {name} has {count} node(s), 0 to {count - 1} (got {node})"])
        pod = jobs.node_pod(cluster, kind, job, node)
        container = "node" if kind.kind == "TrainJob" else "pytorch"
        pod_name = pod["metadata"]["name"]
        if not pod["spec"].get("nodeName"):
            phase = (pod.get("status") or {}).get("phase", "Pending")
            raise KubeError(f"pod {ns}/{pod_name} of node {node} is not scheduled yet (phase {phase}): no logs to show")
        try:
            for chunk in cluster.log_stream(ns, pod_name, container, follow, tail):
                sys.stdout.buffer.write(chunk)
                sys.stdout.buffer.flush()
        except KubeError as e:
            raise KubeError(f"cannot read the logs of pod {ns}/{pod_name}: {e}", e.status) from e


@click.command()
@click.argument("name")
@click.option("-n", "--namespace", help="Namespace (default: the context's).")
@click.option("--keep-data", is_flag=True, help="Keep the PersistentVolumeClaim the submit created.")
@cluster_options
@report_errors
def delete(name, namespace, keep_data, kubeconfig, context):
    """Delete a job and everything its submit created."""
    from launcher.cluster import jobs

    cluster = connect(kubeconfig, context)
    with cluster_errors():
        jobs.delete_job(cluster, _namespace(cluster, namespace), name, keep_data, click.echo)


COMMANDS = (init, render, values_, submit, status, list_, logs, delete)
