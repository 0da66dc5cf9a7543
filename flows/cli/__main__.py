"""``python -m flows.cli``: the same as the ``fitrec`` console script."""

from flows.cli import app

app()
