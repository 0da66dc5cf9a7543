"""The ``fitrec`` command line: generate data, run flows, ask for recommendations."""

from __future__ import annotations

import typer

from flows.cli import data, demo, erase, run, serve
from flows.cli.benchmark import benchmark_app
from flows.cli.experiment import experiment_app
from flows.cli.faults import FaultGroup

app = typer.Typer(cls=FaultGroup, add_completion=False, no_args_is_help=True, help=__doc__)


@app.callback()
def _start() -> None:
    # Every command: third-party notices and INFO chatter out, errors and the rest kept.
    from pipeline.quiet import quiet_third_parties

    quiet_third_parties()


# The order here is the order of `fitrec --help`.
app.command()(data.generate)
app.command()(data.ingest)
app.command()(data.adapt)
app.command()(run.run)
app.command("serve-flows")(run.serve_flows)
app.command()(serve.recommend)
app.command()(demo.demo)
app.command()(serve.serve)
app.command()(run.promote)
app.command()(run.rollback)
app.command()(erase.erase)
app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(data.feast)
app.add_typer(benchmark_app, name="benchmark")
app.add_typer(experiment_app, name="experiment")

__all__ = ["app"]
