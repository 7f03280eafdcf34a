"""The `automl` command line: one thin command per verb, no logic beyond arguments and display, grouped by what
the command works on (one module each); `app` is the Typer app, `main` the console script."""

# Each module registers its commands on app; imported in the order of the work, which is the order of --help.
from automl.cli import data, search, export, report  # noqa: F401, I001
from automl.cli.app import app, main

__all__ = ["app", "main"]
