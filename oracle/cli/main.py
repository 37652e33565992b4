"""The ``datum`` command: one Typer group per area, every command with ``--json``."""

import logging

import typer

from . import data, devnet, node, oracle, stake, task
from .common import DatumGroup

app = typer.Typer(
    cls=DatumGroup,
    help="Datum: secure data computation on private data lakes, paid on an EVM chain.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(devnet.app, name="devnet")
app.add_typer(stake.app, name="stake")
app.add_typer(stake.rewards_app, name="rewards")
app.add_typer(data.app, name="data")
app.add_typer(task.app, name="task")
app.add_typer(node.app, name="node")
app.add_typer(oracle.app, name="oracle")


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log to stderr.")) -> None:
    """Datum: secure data computation on private data lakes, paid on an EVM chain."""
    if verbose:
        logging.basicConfig(level=logging.DEBUG, format="%(levelname)s %(name)s: %(message)s")
