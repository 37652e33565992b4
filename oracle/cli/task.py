"""``datum task show``: a task's state, committee, money and on-chain history."""

from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from ..chain.tasks import get_task
from .common import JSON_OPTION, emit, kv_table, session

app = typer.Typer(no_args_is_help=True, help="Tasks: inspect their state, committee and transactions.")


def _render(payload: dict[str, Any]) -> Any:
    def show(console: Console) -> None:
        skip = {"committee", "transactions", "dataset_ids"}
        rows = [(k, v) for k, v in payload.items() if k not in skip]
        rows.append(("datasets", ", ".join(map(str, payload["dataset_ids"])) or "-"))
        console.print(kv_table(f"task {payload['task_id']}", rows))
        committee = Table(title="committee")
        for column in ("slot", "operator", "accepted", "slashed"):
            committee.add_column(column)
        for member in payload["committee"]:
            committee.add_row(*(str(member[c]) for c in ("slot", "operator", "accepted", "slashed")))
        console.print(committee)
        history = Table(title="transactions")
        for column in ("block", "event", "tx hash"):
            history.add_column(column)
        for item in payload["transactions"]:
            history.add_row(str(item["block"]), item["event"], item["tx_hash"])
        console.print(history)

    return show


@app.command()
def show(task_id: int = typer.Argument(..., min=1), as_json: bool = JSON_OPTION) -> None:
    """State, committee, deadlines, fees, result hash and the transactions of a task."""
    s = session()
    view = get_task(s.chain, s.contracts, task_id, history=True)
    payload = view.to_json()
    emit(as_json, payload, _render(payload))
