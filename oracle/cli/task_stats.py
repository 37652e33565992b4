"""``datum task submit stats``: a joint-statistics query over registered datasets, answered by
an MPC committee (docs/STATS_NETWORK.md). Thin over `oracle.client_stats`."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from compute.errors import ConfigError
from compute.mpc import TableSchema

from ..client import DatumClient, Submitted
from ..client_stats import prepare_stats, run_stats
from ..node.stats_datasets import read_schema_file
from .common import JSON_OPTION, emit, parse_wei, session

__all__ = ["register"]

WITH_OPTION = typer.Option(
    ..., "--with", help="Datasets the query reads, comma separated: ID or ID:TABLE (several tables)."
)
SCHEMA_OPTION = typer.Option(
    ...,
    "--schema",
    help="The datasets' declared table schema(s), JSON (one table, or a list of tables); several "
    "files comma separated or --schema repeated (a vertical query: one per table, paired with "
    "--with in order unless --with names the tables). Each provider's node checks its table "
    "against the schema its dataset committed to.",
)
PUBLIC_OUTPUT_OPTION = typer.Option(
    None,
    "--public-output",
    exists=True,
    dir_okay=False,
    help="With --output public: JSON {values, types, decimals} selecting the ABI-encoded public output.",
)


def _tables(values: Path | Sequence[str | Path]) -> list[TableSchema]:
    """The declared tables of every --schema file (comma separated or repeated), in order."""
    if isinstance(values, Path):
        values = [values]
    tables: list[TableSchema] = []
    for item in (t.strip() for v in values for t in str(v).split(",")):
        if not item:
            continue
        path = Path(item)
        try:
            raw = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            raw = None  # read_schema_file's error message names the problem
        if isinstance(raw, list):
            tables += [TableSchema.from_json(t) for t in raw]
        else:
            tables.append(read_schema_file(path))
    if not tables:
        raise ConfigError("--schema names no file")
    return tables


def _parts(text: str) -> tuple[list[int], dict[int, str] | None]:
    ids: list[int] = []
    tables: dict[int, str] = {}
    for item in (t.strip() for t in text.split(",")):
        raw, _, table = item.partition(":")
        raw = raw.lower().removeprefix("dataset")
        if not raw.isdigit() or int(raw) < 1:
            raise ConfigError(f"--with takes dataset ids (e.g. 1,2,3 or 1:people,2:sales), not {item!r}")
        ids.append(int(raw))
        if table:
            tables[int(raw)] = table
    if tables and len(tables) != len(ids):
        raise ConfigError("--with: give a table for every dataset, or for none")
    return ids, (tables or None)


def _render(payload: dict[str, Any]) -> Any:
    def show(console: Console) -> None:
        result = payload["result"]
        table = Table(title=f"task {payload['task_id']} ({payload['output']} output)")
        table.add_column("group")
        table.add_column("aggregate")
        table.add_column("value")
        table.add_column("± bound")
        for agg in result["aggregates"]:
            for i, group in enumerate(result["groups"]):
                table.add_row(group, agg["label"], str(agg["values"][i]), f"{agg['bounds'][i]:.3g}")
        console.print(table)
        console.print(f"finalized in tx {payload['tx']['finalize']}")

    return show


def register(submit_app: typer.Typer) -> None:
    """Add ``stats`` to ``datum task submit``."""

    @submit_app.command("stats")
    def submit_stats(
        with_datasets: str = WITH_OPTION,
        schema: list[str] = SCHEMA_OPTION,
        query: str = typer.Option(
            ..., "--query", help='The SQL query, e.g. "SELECT mean(income) FROM people".'
        ),
        output: str = typer.Option(
            "requester",
            "--output",
            help="requester: only you learn the answer (the chain holds a commitment); "
            "public: the answer is published on chain.",
        ),
        protocol: str = typer.Option("aby3", "--protocol", help="aby3 (3-node committee) or cheetah (2)."),
        min_group_size: int | None = typer.Option(
            None, "--min-group-size", min=1, help="Smallest group revealed (default: the datasets' policy)."
        ),
        max_error: float = typer.Option(
            1e-3, "--max-error", help="Error target relative to each value's scale."
        ),
        public_output: Path | None = PUBLIC_OUTPUT_OPTION,
        fee: str = typer.Option("1dtm", "--fee", help="Fee paid to the signing members (wei, or e.g. 2dtm)."),
        timeout: int = typer.Option(
            900, "--timeout", min=10, help="Seconds until the deadline (then: refund)."
        ),
        recv_timeout: int = typer.Option(
            30, "--recv-timeout", min=1, help="Seconds a party waits for a peer."
        ),
        wait: bool = typer.Option(False, "--wait", help="Wait for the answer (required)."),
        as_json: bool = JSON_OPTION,
    ) -> None:
        """Joint statistics over registered datasets under MPC; prints each value with its bound."""
        if not wait:
            raise ConfigError("a stats task is followed to its answer: pass --wait")
        if output not in ("requester", "public"):
            raise ConfigError(f"--output is requester or public, not {output!r}")
        if protocol not in ("aby3", "cheetah"):
            raise ConfigError(f"--protocol is aby3 or cheetah, not {protocol!r}")
        ids, table_of = _parts(with_datasets)
        tables = _tables(schema)
        encoding = None
        if public_output is not None:
            if output != "public":
                raise ConfigError("--public-output needs --output public")
            encoding = json.loads(public_output.read_text())
        s = session()
        account = s.account()
        console = None if as_json else Console(stderr=True)

        def remember(submitted: Submitted) -> None:
            if console is not None:
                console.print(f"task {submitted.task_id} requested (tx {submitted.request_tx})")

        async def go() -> dict[str, Any]:
            prepared = await prepare_stats(
                s.chain,
                s.contracts,
                dataset_ids=ids,
                tables=tables,
                sql=query,
                output=output,  # type: ignore[arg-type]  # checked above
                protocol=protocol,  # type: ignore[arg-type]
                table_of=table_of,
                min_group_size=min_group_size,
                max_error=max_error,
                recv_timeout_ms=recv_timeout * 1000,
                deadline_s=timeout,
                public_output=encoding,
            )
            async with DatumClient(s.chain, s.contracts, account, nonces=s.nonces) as client:
                if console is None:
                    outcome = await run_stats(
                        client, prepared, fee_wei=parse_wei(fee), timeout_s=timeout, on_submitted=remember
                    )
                else:
                    with console.status("committee computing under MPC (secret shares only)"):
                        outcome = await run_stats(
                            client, prepared, fee_wei=parse_wei(fee), timeout_s=timeout, on_submitted=remember
                        )
            return outcome.to_json()

        payload = asyncio.run(go())
        emit(as_json, payload, _render(payload))
        sys.stdout.flush()
