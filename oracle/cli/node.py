"""``datum node run|status``: run one operator node, or show what a node's store holds."""

import asyncio
import logging
import signal
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from ..node.config import load_config
from ..node.store import TaskStore
from .common import JSON_OPTION, emit

app = typer.Typer(no_args_is_help=True, help="Operator nodes: run one, or inspect its tasks.")

CONFIG_OPTION = typer.Option(..., "--config", "-c", help="The node's TOML config (see docs/NODE_DAEMON.md).")


def _configure_logging() -> None:
    root = logging.getLogger()
    if not root.handlers:  # --verbose configured it already
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


async def _serve(config_path: Path) -> None:
    from ..node.daemon import NodeDaemon

    daemon = NodeDaemon(load_config(config_path))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await daemon.run(stop)


@app.command()
def run(config: Path = CONFIG_OPTION) -> None:
    """Run a node until SIGTERM/SIGINT: follow the chain, compute, sign, submit."""
    load_config(config)  # a bad config fails before anything starts
    _configure_logging()
    asyncio.run(_serve(config))


@app.command()
def status(config: Path = CONFIG_OPTION, as_json: bool = JSON_OPTION) -> None:
    """The tasks a node holds (read-only; works while the node runs)."""
    settings = load_config(config)
    store = TaskStore(settings.data_dir / "node.sqlite3", readonly=True)
    try:
        records = store.all_tasks()
        payload: dict[str, Any] = {
            "data_dir": str(settings.data_dir),
            "tasks": [
                {
                    "task_id": r.task_id,
                    "state": r.state.value,
                    "evaluations": r.evaluations,
                    "result_hash": r.result_hash,
                    "accept_tx": r.accept_tx,
                    "submit_tx": r.submit_tx,
                    "finalize_tx": r.finalize_tx,
                    "error": r.error,
                    "history": [to for _, to in store.history(r.task_id)],
                }
                for r in records
            ],
        }
    finally:
        store.close()

    def show(console: Console) -> None:
        table = Table(title=f"tasks in {settings.data_dir}")
        for column in ("task", "state", "evaluations", "result hash", "error"):
            table.add_column(column)
        for t in payload["tasks"]:
            table.add_row(
                str(t["task_id"]), t["state"], str(t["evaluations"]), t["result_hash"][:18], t["error"]
            )
        console.print(table)

    emit(as_json, payload, show)
