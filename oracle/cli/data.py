"""``datum data register|show``: datasets on the DataRegistry (metadata only; data stays home).

With ``--node N`` (devnet) the owner is node N's operator and node N keeps the file in its
data dir (``datasets/<id>/``), from where it serves it to PSI tasks (docs/PSI_NETWORK.md).
"""

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Annotated, Any

import typer
from eth_hash.auto import keccak

from compute.errors import ConfigError
from compute.psi.spec import CaseRule

from ..chain.datasets import (
    UNLIMITED_USES,
    ConsentPolicy,
    DatasetMetadata,
    describe_csv,
    get_asset,
    kinds_mask,
    register_dataset,
)
from ..chain.tasks import TASK_KINDS
from ..node.processes import NodeLaunch
from ..node.psi_datasets import store_dataset
from ..node.stats_datasets import StatsMetadata, cache_columns, describe_stats_csv, read_schema_file
from ..stats_align import align_csv
from .common import JSON_OPTION, Session, emit, home_path, kv_table, parse_wei, session

app = typer.Typer(
    no_args_is_help=True,
    help="Datasets: register metadata and consent on chain; the data never leaves its owner.",
)

DEFAULT_KINDS = ",".join(TASK_KINDS)
NODE_OPTION = typer.Option(
    None,
    "--node",
    min=1,
    help="Register as devnet node N's operator; node N keeps the file and serves it (e.g. to PSI).",
)

SCHEMA_OPTION = typer.Option(
    None,
    "--schema",
    exists=True,
    dir_okay=False,
    help="Declared table schema (JSON: name, columns with lo/hi/integer or categories) for stats; "
    "it goes into the committed metadata document and every value is checked against it.",
)


def _flat(payload: dict[str, Any]) -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key, value in payload.items():
        if isinstance(value, dict):
            rows += [(f"{key}.{k}", v) for k, v in value.items()]
        else:
            rows.append((key, value))
    return rows


@app.command()
def register(
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="CSV file with a header.")
    ],
    key: str | None = typer.Option(
        None, "--key", help="The join key column (e.g. for PSI); required unless --schema is given."
    ),
    schema: Path | None = SCHEMA_OPTION,
    price: str = typer.Option("0", "--price", help="Price per finalized task (wei, or e.g. 10dtm)."),
    allow: str = typer.Option(DEFAULT_KINDS, "--allow", help="Task kinds that may use it, comma separated."),
    rows: int | None = typer.Option(
        None, "--rows", min=0, help="Expected row count (checked against the file)."
    ),
    uses: int = typer.Option(UNLIMITED_USES, "--uses", min=1, max=UNLIMITED_USES, help="Tasks it may serve."),
    expires: int = typer.Option(
        0, "--expires", min=0, help="Unix time after which no task may use it (0 never)."
    ),
    min_group_size: int = typer.Option(
        10, "--min-group-size", "--min-group", min=1, help="Smallest group an aggregate covers."
    ),
    uri: str | None = typer.Option(None, "--uri", help="Metadata URI (default: the node's endpoint)."),
    node: int | None = NODE_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Register a dataset: hash its metadata, count its rows, record consent and price."""
    s = session()
    node_data_dir = _node_data_dir(s, node) if node is not None else None
    metadata: DatasetMetadata | StatsMetadata
    if schema is not None:
        metadata = describe_stats_csv(file, read_schema_file(schema), key=key, rows=rows)
    elif key is None:
        raise ConfigError("pass --key COLUMN (PSI), --schema FILE (stats), or both")
    else:
        metadata = describe_csv(file, key, rows)
    policy = ConsentPolicy(
        allowed_kinds=kinds_mask(k for k in allow.split(",") if k.strip()),
        open=True,
        expires_at=expires,
        remaining_uses=uses,
        min_group_size=min_group_size,
    )
    if policy.allowed_kinds == 0:
        raise ConfigError("--allow names no task kind; the dataset would be unusable")
    hash_hex = "0x" + metadata.metadata_hash.hex()
    if uri is None:
        endpoint = next((n.endpoint for n in (s.devnet.nodes if s.devnet else []) if n.index == node), None)
        uri = f"{endpoint}/datasets/{hash_hex}" if endpoint else f"datum:dataset:{hash_hex}"
    tx = s.tx(node)
    dataset_id, sent = register_dataset(
        tx,
        s.contracts,
        metadata_uri=uri,
        metadata_hash=metadata.metadata_hash,
        rows=metadata.rows,
        price_wei=parse_wei(price),
        policy=policy,
    )
    _keep_private_record(
        home_path(s.settings), dataset_id, file, metadata.document(), metadata.salt, s.chain.chain_id
    )
    served = None
    if node_data_dir is not None:
        served = store_dataset(
            node_data_dir,
            chain_id=s.chain.chain_id,
            dataset_id=dataset_id,
            source=file,
            key=key or "",
            salt=metadata.salt,
            document=metadata.document(),
        )
        _check_copy(served / "data.csv", metadata.salt, metadata.content_commitment, served)
        if isinstance(metadata, StatsMetadata):
            cache_columns(served, metadata)  # the node's first stats task skips the CSV parse
    payload = {
        "dataset_id": dataset_id,
        "owner": tx.address,
        "rows": metadata.rows,
        "columns": list(metadata.columns),
        "key": key,
        "metadata_hash": hash_hex,
        "table": metadata.table.to_json() if isinstance(metadata, StatsMetadata) else None,
        "metadata_uri": uri,
        "price_wei": str(parse_wei(price)),
        "policy": {
            "allowed_kinds": policy.allowed_kind_names(),
            "expires_at": expires,
            "remaining_uses": uses,
            "min_group_size": min_group_size,
        },
        "tx_hash": sent.tx_hash,
    }
    if served is not None:
        payload["served_by"] = {"node": node, "path": str(served)}
    emit(as_json, payload, lambda console: console.print(kv_table(f"dataset {dataset_id}", _flat(payload))))


def _node_data_dir(s: Session, node: int) -> Path:
    """The data dir of devnet node `node` (where it keeps the datasets it serves)."""
    match = [n for n in (s.devnet.nodes if s.devnet else []) if n.index == node]
    if not match or match[0].home is None:
        raise ConfigError(
            f"devnet node {node} has no data dir here: run `datum devnet up` with node processes"
        )
    return NodeLaunch(Path(match[0].home)).data_dir


def _check_copy(path: Path, salt: bytes, commitment: bytes, folder: Path) -> None:
    """The node's copy opens the commitment just registered (the file did not change meanwhile)."""
    if keccak(salt + hashlib.sha256(path.read_bytes()).digest()) != commitment:
        shutil.rmtree(folder, ignore_errors=True)
        raise ConfigError(f"{path.name} changed while it was registered; register it again")


def _keep_private_record(
    home: Path, dataset_id: int, file: Path, document: dict[str, Any], salt: bytes, chain_id: int
) -> None:
    """The owner's own record: where the file is and the salt opening its commitment."""
    folder = home / "datasets"
    folder.mkdir(parents=True, exist_ok=True)
    record = {
        "dataset_id": dataset_id,
        "chain_id": chain_id,
        "file": str(file.resolve()),
        "salt": "0x" + salt.hex(),
        "metadata": document,
    }
    path = folder / f"{chain_id}-{dataset_id}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    os.chmod(path, 0o600)


@app.command()
def show(dataset_id: int = typer.Argument(..., min=1), as_json: bool = JSON_OPTION) -> None:
    """A dataset's owner, price, row count, metadata and consent policy."""
    s = session()
    payload = get_asset(s.chain, s.contracts, dataset_id)
    emit(as_json, payload, lambda console: console.print(kv_table(f"dataset {dataset_id}", _flat(payload))))


ALIGN_OUT_OPTION = typer.Option(..., "--out", dir_okay=False, help="Where to write the aligned CSV (0600).")


@app.command()
def align(
    file: Annotated[
        Path,
        typer.Argument(
            exists=True, dir_okay=False, readable=True, help="Your matched rows of a --reveal both PSI (CSV)."
        ),
    ],
    key: str = typer.Option(..., "--key", help="The key column the PSI matched on."),
    out: Path = ALIGN_OUT_OPTION,
    case: str = typer.Option("exact", "--case", help="The PSI's key case rule: exact or casefold."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Sort your rows of a PSI intersection by the normalized key, so that row i is the same
    entity as the other side's row i (a vertical stats query's alignment); then register the
    result with --schema (without the key column) and --allow stats."""
    if case not in ("exact", "casefold"):
        raise ConfigError(f"--case is exact or casefold, not {case!r}")
    if out.resolve() == file.resolve():
        raise ConfigError("--out must be another file than the input")
    data, rows = align_csv(file.read_bytes(), key, CaseRule(case))
    out.parent.mkdir(parents=True, exist_ok=True)
    temp = out.with_name(f".{out.name}.part")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(temp, out)
    payload = {
        "file": str(out),
        "rows": rows,
        "key": key,
        "case": case,
        "order": "normalized key, UTF-8 bytes",
    }
    emit(as_json, payload, lambda console: console.print(kv_table("aligned", list(payload.items()))))
