"""``python -m oracle.cli``: the same as the ``datum`` command."""

from .main import app

app()
