"""`llmlaunch estimate`: the memory plan of a job per GPU, and the one-line warning submit / render print."""

from __future__ import annotations

import json

import click

from launcher.commands.options import report_errors, set_option
from launcher.errors import ConfigError


@click.command()
@click.argument("job_file", type=click.Path(dir_okay=False))
@click.option("--nodes", type=click.IntRange(min=1), help="Nodes (default: cluster.nodes).")
@click.option("--gpus-per-node", type=click.IntRange(min=0), help="GPUs per node (default: cluster.gpus_per_node).")
@click.option("--gpu-memory", type=click.FloatRange(min=0, min_open=True), metavar="GIB",
              help="Memory of one GPU in GiB (default: from the GPU cluster.scheduling.node_selector names).")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="Output format.")
@set_option
@report_errors
def estimate(job_file, nodes, gpus_per_node, gpu_memory, output, overrides) -> None:
    """Memory per GPU (parameters, gradients, optimizer states, activations) and whether it fits."""
    from launcher.estimate.memory import describe
    from launcher.estimate.memory import estimate as plan_of
    from launcher.spec.load import load_job

    # The flags are cluster.* overrides, applied before the job's rules run (bf16 needs GPU pods, ...).
    flags = {"nodes": nodes, "gpus_per_node": gpus_per_node}
    extra = [f"cluster.{k}={v}" for k, v in flags.items() if v is not None]
    plan = plan_of(load_job(job_file, [*overrides, *extra]), nodes, gpus_per_node, gpu_memory)
    click.echo(json.dumps(plan, indent=2, sort_keys=True) if output == "json" else describe(plan))


def warn_if_too_big(spec) -> None:
    """One stderr line when the job will not fit its GPUs; silent when that cannot be told (no model
    config here, an unknown GPU): the cluster commands must not fail for want of an estimate."""
    from launcher.estimate.memory import estimate as plan_of

    try:
        plan = plan_of(spec)
    except ConfigError:
        return
    if plan["fits"] is False:
        click.echo(f"warning: estimated {plan['total_gib']:.1f} GiB per GPU exceeds the {plan['gpu_gib']:g} GiB of "
                   f"the {plan['gpu']} (llmlaunch estimate {spec.name}.yaml shows the breakdown)", err=True)
