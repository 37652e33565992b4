"""``datum task show|submit``: inspect a task; submit an HE outsourcing or a PSI task through the SDK."""

import asyncio
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from compute.errors import ConfigError
from compute.he import OwnerKeys, decrypt, spec_from_json

from ..chain.tasks import TaskState, get_task
from ..client import (
    DatumClient,
    PreparedHE,
    PreparedPSI,
    Submitted,
    prepare_he,
    prepare_psi,
    save_psi_record,
    save_task_keys,
)
from .common import JSON_OPTION, emit, home_path, kv_table, parse_wei, session

app = typer.Typer(
    no_args_is_help=True, help="Tasks: submit them, inspect their state, committee and transactions."
)
submit_app = typer.Typer(no_args_is_help=True, help="Submit a task to the network.")
app.add_typer(submit_app, name="submit")


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


@contextmanager
def _native_stdout_to_stderr() -> Iterator[None]:
    """Send file descriptor 1 to stderr meanwhile: native engines (HEU) log to stdout, and
    ``--json`` promises exactly one JSON object there."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _read_keys(path: Path | None) -> OwnerKeys | None:
    if path is None:
        return None
    try:
        return OwnerKeys.from_bytes(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"cannot read keys {path}: {exc}") from None


async def _submit(
    client: DatumClient,
    prepared: PreparedHE,
    *,
    fee_wei: int,
    committee: int,
    quorum: int,
    timeout_s: int,
    wait: bool,
    console: Console | None,
    keys_dir: Path,
    chain_id: int,
) -> dict[str, Any]:
    saved: list[Path] = []

    def remember(submitted: Submitted) -> None:
        saved.append(save_task_keys(keys_dir, prepared, submitted.task_id, chain_id))
        if console is not None:
            console.print(f"task {submitted.task_id} requested (tx {submitted.request_tx})")

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console or Console(stderr=True),
        disable=console is None,
    )
    bars: dict[str, TaskID] = {}

    def report(stage: str, done: int, total: int) -> None:
        label = {"upload": "uploading to the committee", "wait": "waiting for the quorum result (s)"}[stage]
        if stage not in bars:
            bars[stage] = progress.add_task(label, total=total)
        progress.update(bars[stage], completed=done, total=total)

    with progress:
        if wait:
            outcome = await client.run_he(
                prepared,
                fee_wei=fee_wei,
                committee_size=committee,
                quorum=quorum,
                timeout_s=timeout_s,
                progress=report,
                on_submitted=remember,
            )
            return outcome.to_json() | {"keys_dir": str(saved[0])}
        submitted = await client.request_he(
            prepared, fee_wei=fee_wei, committee_size=committee, quorum=quorum, timeout_s=timeout_s
        )
        remember(submitted)
        upload = await client.upload_inputs(submitted, prepared, progress=report)
    return {
        "task_id": submitted.task_id,
        "result": None,
        "tx": {"request": submitted.request_tx, "finalize": None},
        "committee": list(submitted.committee),
        "delivered": list(upload.delivered),
        "keys_dir": str(saved[0]),
    }


@app.command()
def result(task_id: int = typer.Argument(..., min=1), as_json: bool = JSON_OPTION) -> None:
    """Fetch a finalized HE task's result from its committee, check it, decrypt it (its requester only)."""
    s = session()
    folder = home_path(s.settings) / "he-tasks" / f"{s.chain.chain_id}-{task_id}"
    try:
        spec = spec_from_json((folder / "spec.json").read_bytes())
        owner_keys = OwnerKeys.from_bytes((folder / "owner.keys").read_bytes())
    except OSError:
        raise ConfigError(
            f"no keys for task {task_id} in {folder}: only its requester can decrypt it"
        ) from None
    view = get_task(s.chain, s.contracts, task_id)
    if view.state is not TaskState.FINALIZED:
        raise ConfigError(f"task {task_id} is {view.state.name.lower()}, not finalized")

    async def go() -> bytes:
        async with DatumClient(s.chain, s.contracts, s.account(), nonces=s.nonces) as client:
            return await client.fetch_result(task_id, view.committee, view.result_hash)

    with _native_stdout_to_stderr():
        value = decrypt(owner_keys, asyncio.run(go()), spec)
    plain = value.tolist() if hasattr(value, "tolist") else value
    payload = {"task_id": task_id, "result": plain, "result_hash": "0x" + view.result_hash.hex()}
    emit(as_json, payload, lambda c: c.print(kv_table(f"task {task_id}: {spec.formula}", payload.items())))


DATA_OPTION = typer.Option(..., "--data", help="CSV file with a header row (stays on this machine).")
KEYS_OPTION = typer.Option(None, "--keys", help="Reuse owner keys saved earlier (default: new keys).")


@submit_app.command("he")
def submit_he(
    data: Path = DATA_OPTION,
    formula: str = typer.Option(..., "--formula", help='What to compute, e.g. "sum(income)" (docs/HE.md).'),
    scheme: str = typer.Option(
        ..., "--scheme", help="paillier (exact integers), ou, or ckks (approximate reals)."
    ),
    columns: str | None = typer.Option(
        None, "--columns", help="Columns to encrypt (default: those the formula uses)."
    ),
    scale: int | None = typer.Option(
        None, "--scale", help="Paillier fixed-point scale for real columns, e.g. 100."
    ),
    keys: Path | None = KEYS_OPTION,
    fee: str = typer.Option("1dtm", "--fee", help="Fee paid to the signing members (wei, or e.g. 2dtm)."),
    committee: int = typer.Option(3, "--committee", min=1, max=8, help="Committee size."),
    quorum: int = typer.Option(2, "--quorum", min=1, max=8, help="Matching signatures needed."),
    timeout: int = typer.Option(
        900, "--timeout", min=1, help="Seconds until the deadline (after it: refund)."
    ),
    wait: bool = typer.Option(False, "--wait", help="Wait for the result, fetch it and decrypt it."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Encrypt a CSV's columns locally and outsource a formula over them to a committee."""
    s = session()
    try:
        csv_bytes = data.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {data}: {exc}") from None
    console = None if as_json else Console(stderr=True)
    chosen = [c.strip() for c in columns.split(",") if c.strip()] if columns else None
    owner_keys = _read_keys(keys)
    account = s.account()

    async def go(prepared: PreparedHE) -> dict[str, Any]:
        async with DatumClient(s.chain, s.contracts, account, nonces=s.nonces) as client:
            return await _submit(
                client,
                prepared,
                fee_wei=parse_wei(fee),
                committee=committee,
                quorum=quorum,
                timeout_s=timeout,
                wait=wait,
                console=console,
                keys_dir=home_path(s.settings) / "he-tasks",
                chain_id=s.chain.chain_id,
            )

    with _native_stdout_to_stderr():
        if console is not None:
            with console.status("encrypting locally"):
                prepared = prepare_he(
                    csv_bytes, formula, scheme, columns=chosen, scale=scale, keys=owner_keys
                )
        else:
            prepared = prepare_he(csv_bytes, formula, scheme, columns=chosen, scale=scale, keys=owner_keys)
        payload = asyncio.run(go(prepared))

    def human(out: Console) -> None:
        rows: list[tuple[str, Any]] = [("task", payload["task_id"])]
        if payload.get("result") is not None:
            rows.append(("result", payload["result"]))
            if isinstance(payload["result"], float) and payload.get("error_bound"):
                rows.append(("error bound", payload["error_bound"]))
        rows += [("request tx", payload["tx"]["request"]), ("finalize tx", payload["tx"]["finalize"] or "-")]
        rows.append(("committee", ", ".join(payload["committee"])))
        rows.append(("owner keys (secret)", payload["keys_dir"]))
        out.print(kv_table(f"HE task: {formula}", rows))

    emit(as_json, payload, human)
    sys.stdout.flush()


def _dataset_id(text: str) -> int:
    raw = text.strip().lower().removeprefix("dataset:")
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(f"--with takes a dataset id (e.g. 3 or dataset:3), not {text!r}")
    return int(raw)


async def _submit_psi(
    client: DatumClient,
    prepared: PreparedPSI,
    *,
    out: Path,
    fee_wei: int,
    committee: int,
    quorum: int,
    timeout_s: int,
    link_host: str,
    console: Console | None,
    records_dir: Path,
    chain_id: int,
) -> dict[str, Any]:
    def remember(submitted: Submitted) -> None:
        if console is not None:
            console.print(f"task {submitted.task_id} requested (tx {submitted.request_tx})")

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console or Console(stderr=True),
        disable=console is None,
    )
    bars: dict[str, TaskID] = {}

    def report(stage: str, done: int, total: int) -> None:
        label = {"session": "PSI session with the provider", "wait": "waiting for the quorum result (s)"}
        if stage not in bars:
            bars[stage] = progress.add_task(label[stage], total=total)
        progress.update(bars[stage], completed=done, total=total)

    with progress:
        outcome = await client.run_psi(
            prepared,
            out=out,
            fee_wei=fee_wei,
            committee_size=committee,
            quorum=quorum,
            timeout_s=timeout_s,
            link_host=link_host,
            table_cache=records_dir.parent / "psi-tables",
            progress=report,
            on_submitted=remember,
        )
    record = save_psi_record(records_dir, outcome, chain_id)
    return outcome.to_json() | {"record": str(record)}


MINE_OPTION = typer.Option(..., "--mine", help="Your CSV with a header row (stays on this machine).")
OUT_OPTION = typer.Option(..., "--out", help="Where your matching rows are written (once finalized).")


@submit_app.command("psi")
def submit_psi(
    mine: Path = MINE_OPTION,
    key: str = typer.Option(..., "--key", help="Your key column (e.g. client_id)."),
    with_dataset: str = typer.Option(..., "--with", help="The dataset to intersect with (its id)."),
    protocol: str = typer.Option(
        ...,
        "--protocol",
        help="ecdh, rr22, kkrt (SPU libpsi) or he (BFV polynomials); with --labels: ecdh "
        "(labeled DH-OPRF, alias dh-oprf) or he.",
    ),
    reveal: str = typer.Option(
        "me",
        "--reveal",
        help="me: only you learn your matching rows; both: the provider learns its own matching "
        "rows too; size: you learn only the intersection size (ecdh).",
    ),
    out: Path = OUT_OPTION,
    case: str = typer.Option("exact", "--case", help="Key case rule on both sides: exact or casefold."),
    labels: str | None = typer.Option(
        None,
        "--labels",
        help="Labeled PSI: the provider's columns (comma-separated) you get for your matching keys.",
    ),
    label_bytes: int = typer.Option(
        64,
        "--label-bytes",
        min=1,
        max=65536,
        help="Padded size of one label record (2 + 4 per column + the UTF-8 bytes must fit).",
    ),
    fee: str = typer.Option("1dtm", "--fee", help="Fee paid to the signing members (wei, or e.g. 2dtm)."),
    committee: int = typer.Option(3, "--committee", min=1, max=8, help="Committee size."),
    quorum: int = typer.Option(2, "--quorum", min=1, max=8, help="Matching signatures needed."),
    timeout: int = typer.Option(
        900, "--timeout", min=1, help="Seconds until the deadline (after it: refund)."
    ),
    link_host: str = typer.Option(
        "127.0.0.1", "--link-host", help="Address the provider's node reaches your PSI engine on."
    ),
    wait: bool = typer.Option(False, "--wait", help="Run the session and wait for the result (required)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Intersect your key column with a dataset served by its owner's node; the result is written
    to --out once the committee finalized the task.

    \b
    Served (anything else is refused before any payment):
      --protocol ecdh|rr22|kkrt|he  --reveal me    your matching rows
      --protocol ecdh|rr22|kkrt|he  --reveal both  yours to you, the provider's to its node
      --protocol ecdh               --reveal size  the intersection size only
      --protocol ecdh|he --labels a,b --reveal me  your matching rows + the provider's a,b
    """
    label_columns = tuple(c.strip() for c in labels.split(",")) if labels is not None else ()
    if labels is not None and not all(label_columns):
        raise ConfigError(f"--labels takes column names separated by commas, not {labels!r}")
    if not wait:
        raise ConfigError("a PSI task runs interactively with the provider's node: pass --wait")
    if out.resolve() == mine.resolve():
        raise ConfigError("--out must not be your input file")
    try:
        data = mine.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {mine}: {exc.strerror or exc}") from None
    prepared = prepare_psi(
        data,
        key,
        _dataset_id(with_dataset),
        protocol,
        reveal,
        case=case,
        labels=label_columns,
        label_bytes=label_bytes,
    )
    s = session()
    console = None if as_json else Console(stderr=True)
    account = s.account()

    async def go() -> dict[str, Any]:
        async with DatumClient(s.chain, s.contracts, account, nonces=s.nonces) as client:
            return await _submit_psi(
                client,
                prepared,
                out=out,
                fee_wei=parse_wei(fee),
                committee=committee,
                quorum=quorum,
                timeout_s=timeout,
                link_host=link_host,
                console=console,
                records_dir=home_path(s.settings) / "psi-tasks",
                chain_id=s.chain.chain_id,
            )

    with _native_stdout_to_stderr():
        payload = asyncio.run(go())

    def human(console_out: Console) -> None:
        size_only = prepared.spec.reveal == "size"
        rows: list[tuple[str, Any]] = [
            ("task", payload["task_id"]),
            ("mode", payload["revealed"]["mode"]),
            ("intersection size" if size_only else "matching keys", payload["result"]["matches"]),
            ("written", f"{payload['result']['rows']} rows -> {payload['result']['out']}"),
            ("you learned", payload["revealed"]["requester"]),
            ("the provider learned", payload["revealed"]["provider"]),
            ("request tx", payload["tx"]["request"]),
            ("finalize tx", payload["tx"]["finalize"]),
            ("result hash", payload["result_hash"]),
            ("commitment salt (keep)", payload["record"]),
        ]
        console_out.print(kv_table(f"PSI with dataset {prepared.spec.dataset_id}", rows))

    emit(as_json, payload, human)
    sys.stdout.flush()


from .task_stats import register as _register_stats  # noqa: E402 - `datum task submit stats`

_register_stats(submit_app)
