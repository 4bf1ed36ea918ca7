"""What the command modules share: the error decorator and the options several commands take.

Its own module so that cli.py (the group) imports the command modules and none of them imports cli.py.
"""

from __future__ import annotations

import functools
import traceback

import click

from launcher.errors import RUNTIME_ERROR, USAGE_ERROR, ConfigError, RuntimeFailure, one_line


def report_errors(fn):
    """Turn known failures into one line each on stderr; --debug shows the traceback instead."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        ctx = click.get_current_context()
        debug = (ctx.find_root().params or {}).get("debug", False)
        try:
            return fn(*args, **kwargs)
        except (ConfigError, RuntimeFailure) as e:
            if debug:
                traceback.print_exc()
            lines = e.problems if isinstance(e, ConfigError) else [str(e)]
            for line in lines:
                click.echo(f"error: {one_line(line)}", err=True)
            ctx.exit(USAGE_ERROR if isinstance(e, ConfigError) else RUNTIME_ERROR)

    return wrapper


job_file = click.argument("job_file", type=click.Path(dir_okay=False))
set_option = click.option(
    "--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE", help="Override any key of the job file."
)
output_option = click.option("-o", "--output", "output", type=click.Choice(["text", "json", "yaml"]),
                             default="text", show_default=True, help="Output format.")


def job_options(fn):
    """--nodes/--gpus-per-node/--image/--namespace/--set: shortcuts for cluster.* keys of the job file."""
    for option in reversed([
        click.option("--nodes", type=click.IntRange(min=1), help="Pods (cluster.nodes)."),
        click.option("--gpus-per-node", type=click.IntRange(min=0), help="GPUs per pod (cluster.gpus_per_node)."),
        click.option("--image", help="Container image (cluster.image)."),
        click.option("-n", "--namespace", help="Namespace (cluster.namespace)."),
        set_option,
    ]):
        fn = option(fn)
    return fn


def cluster_options(fn):
    """--kubeconfig/--context: which cluster the command talks to."""
    fn = click.option("--context", help="kubeconfig context (default: its current context).")(fn)
    return click.option("--kubeconfig", type=click.Path(dir_okay=False),
                        help="kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).")(fn)
