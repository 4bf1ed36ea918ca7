"""The `llmlaunch` command line: one small function per command; errors become one-line messages.

Imports stay light (click only): the job models, YAML and Jinja load in the commands that read a job
file, torch and the kubernetes client only in those that need them, so `--help` starts in ~50 ms and
`render` of a job in under 0.2 s (bench/render_latency.py).
"""

from __future__ import annotations

import gc
import json
import sys

from launcher import startup

startup.skip_pydantic_plugins()  # before any module that defines a pydantic model

import click  # noqa: E402

from launcher.commands import cluster as cluster_commands  # noqa: E402
from launcher.commands.estimate import estimate  # noqa: E402
from launcher.commands.options import job_file, report_errors, set_option  # noqa: E402
from launcher.errors import RUNTIME_ERROR, ConfigError, RuntimeFailure, one_line  # noqa: E402


class OneLineErrors(click.Group):
    """Usage errors (unknown flag, bad value, missing argument) as one `error:` line with exit code 2,
    like every other input error, instead of click's usage text plus message."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.ClickException as e:
            click.echo(f"error: {one_line(' '.join(e.format_message().splitlines()))}", err=True)
            sys.exit(e.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(RUNTIME_ERROR)
        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.version_option(package_name="llmlaunch")
def cli(debug: bool) -> None:
    """Train and fine-tune LLMs with DeepSpeed: locally, or as Kubeflow jobs on Kubernetes."""


@cli.command()
@job_file
@set_option
@report_errors
def validate(job_file: str, overrides: tuple[str, ...]) -> None:
    """Check a job file and print the resolved job."""
    from launcher.spec.load import load_job

    spec = load_job(job_file, overrides)
    click.echo(f"{job_file}: ok ({spec.name}, method {spec.train.method.kind}, preset {spec.train.deepspeed.preset})")
    if spec.cluster.image is None:  # fine for `train`; render, values and submit need one
        click.echo("note: cluster.image is not set: render, values and submit need one (--image; docs/cluster.md)",
                   err=True)


@cli.command()
@click.option(
    "--chart-values", is_flag=True, help="The schema of the Helm chart's values instead (values.schema.json)."
)
def schema(chart_values: bool) -> None:
    """Print the JSON schema of the job file (for editors and the Helm chart)."""
    if chart_values:
        from launcher.render.chart_values import values_schema_text

        click.echo(values_schema_text(), nl=False)
        return
    from launcher.spec.job_spec import JobSpec

    click.echo(json.dumps(JobSpec.model_json_schema(), indent=2, sort_keys=True))


@cli.command()
@job_file
@click.option("--nproc-per-node", type=click.IntRange(min=1), help="Processes per node (default: GPUs, else 1).")
@click.option(
    "--nodes", type=click.IntRange(min=1), default=1, show_default=True, help="Local 'nodes' (torchrun agents)."
)
@click.option(
    "--output-dir", type=click.Path(file_okay=False), help="Where the run writes (overrides train.run.output_dir)."
)
@set_option
@report_errors
def train(
    job_file: str, nproc_per_node: int | None, nodes: int, output_dir: str | None, overrides: tuple[str, ...]
) -> None:
    """Run a job on this machine with torchrun (resumes when OUTPUT_DIR has checkpoints)."""
    from launcher.local.run import run_local
    from launcher.spec.load import load_job

    extra = [f"train.run.output_dir={output_dir}"] if output_dir else []
    spec = load_job(job_file, [*overrides, *extra], local=True)
    code = run_local(spec, nodes=nodes, nproc_per_node=nproc_per_node)
    if code != 0:
        raise RuntimeFailure(f"training failed (exit code {code}); see the output above")


@cli.command()
@click.argument("run_dir", type=click.Path())
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="PNG to write (default: RUN_DIR/report.png).")
@report_errors
def report(run_dir: str, output: str | None) -> None:
    """Plot a run's metrics.jsonl (loss, eval loss, lr, tokens/s) to a PNG and print a summary."""
    from launcher.report import write_report

    png, rows = write_report(run_dir, output)
    width = max(len(what) for what, _ in rows)
    for what, value in [*rows, ("plot", str(png))]:
        click.echo(f"{what:<{width}}  {value}")


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--merge", is_flag=True, help="Merge the LoRA adapter in RUN_DIR/final into its base weights.")
@click.option("--base", help="Base model directory or hub id (default: the run's train.model.pretrained).")
@click.option(
    "-o", "--output-dir", type=click.Path(file_okay=False), help="Where to write (default: RUN_DIR/final-merged)."
)
@report_errors
def export(run_dir: str, merge: bool, base: str | None, output_dir: str | None) -> None:
    """Write a finished LoRA run's model for serving: base + adapter merged (safetensors, tokenizer; no peft needed)."""
    from pathlib import Path

    if not merge:
        raise ConfigError(["--merge: required (merging a LoRA adapter is the one export there is; final/ "
                           "already holds a full model's weights)"])
    from trainer.__main__ import quiet_libraries
    from trainer.checkpoints.merge_lora import (
        merge_run,  # imports torch, transformers and peft when it runs, not before
    )

    quiet_libraries()
    out = merge_run(Path(run_dir), base, Path(output_dir) if output_dir else None)
    click.echo(f"wrote {out}")


for command in (*cluster_commands.COMMANDS, estimate):
    cli.add_command(command)


def main() -> None:
    try:
        cli(prog_name="llmlaunch")
    finally:
        # Start-up leaves ~33k long-lived container objects (models, validators, templates); freezing them
        # spares the interpreter's final collection from walking them: ~20 ms of a 0.2 s `render`.
        gc.freeze()


if __name__ == "__main__":
    main()
