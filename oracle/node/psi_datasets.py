"""Datasets a node serves for PSI: its local copy, and the proof that it is the committed one.

A served dataset lives in ``<data_dir>/datasets/<id>/``: ``data.csv`` and ``dataset.json``
(key column, the salt opening the content commitment, the public metadata document), files
0600 in a 0700 directory. `datum data register FILE --node N` writes them on a devnet.

Before the provider's node feeds a key, `check_dataset` proves the local copy is what the
chain committed to: keccak(metadata document) is the on-chain ``metadataHash``, the
document's content commitment is keccak(salt || sha256(file)), and the number of distinct
keys under the task's key rules equals the committed row count. Blocking (file reads,
hashing): call it in a thread.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_hash.auto import keccak

from compute.errors import SpecError
from compute.psi import KeyRules, Table, index_keys

__all__ = [
    "DATASETS_DIR",
    "DatasetMismatch",
    "DatasetMissing",
    "LocalDataset",
    "check_dataset",
    "load_dataset",
    "parse_csv_table",
    "store_dataset",
]

DATASETS_DIR = "datasets"
DATA_FILE = "data.csv"
RECORD_FILE = "dataset.json"


class DatasetMissing(SpecError):
    """This node holds no (readable) copy of the dataset."""


class DatasetMismatch(SpecError):
    """The local copy does not open the on-chain commitment; `code` says which check failed."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class LocalDataset:
    """A served dataset: where its file is, its key column, salt and metadata document."""

    dataset_id: int
    chain_id: int
    path: Path
    key: str
    salt: bytes
    document: dict[str, Any]


def _folder(data_dir: Path, dataset_id: int) -> Path:
    return data_dir / DATASETS_DIR / str(dataset_id)


def store_dataset(
    data_dir: Path,
    *,
    chain_id: int,
    dataset_id: int,
    source: Path,
    key: str,
    salt: bytes,
    document: dict[str, Any],
) -> Path:
    """Copy `source` and its record into the node's data dir (atomically); returns the folder."""
    root = data_dir / DATASETS_DIR
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    final = _folder(data_dir, dataset_id)
    if final.exists():
        raise SpecError(f"{final} exists already: dataset {dataset_id} is served by this node")
    temp = root / f".{dataset_id}.{secrets.token_hex(4)}.part"
    temp.mkdir(mode=0o700)
    try:
        data = temp / DATA_FILE
        shutil.copyfile(source, data)
        os.chmod(data, 0o600)
        record = {
            "dataset_id": dataset_id,
            "chain_id": chain_id,
            "key": key,
            "salt": "0x" + salt.hex(),
            "metadata": document,
        }
        fd = os.open(temp / RECORD_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(json.dumps(record, indent=2) + "\n")
        os.replace(temp, final)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return final


def load_dataset(data_dir: Path, dataset_id: int) -> LocalDataset:
    """The node's record of a served dataset; `DatasetMissing` when it holds none."""
    folder = _folder(data_dir, dataset_id)
    try:
        record = json.loads((folder / RECORD_FILE).read_text())
        local = LocalDataset(
            dataset_id=int(record["dataset_id"]),
            chain_id=int(record["chain_id"]),
            path=folder / DATA_FILE,
            key=str(record["key"]),
            salt=bytes.fromhex(str(record["salt"])[2:]),
            document=dict(record["metadata"]),
        )
    except FileNotFoundError:
        raise DatasetMissing(f"this node does not serve dataset {dataset_id}") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DatasetMissing(
            f"the record of dataset {dataset_id} is unreadable: {type(exc).__name__}"
        ) from None
    if local.dataset_id != dataset_id or not local.path.is_file():
        raise DatasetMissing(f"the local copy of dataset {dataset_id} is incomplete")
    return local


def parse_csv_table(data: bytes) -> Table:
    """A CSV with a header row as a `Table` of strings (blank lines skipped)."""
    try:
        text = data.decode("utf-8-sig")
        rows = [r for r in csv.reader(io.StringIO(text, newline="")) if r]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise SpecError(f"not a readable UTF-8 CSV file: {type(exc).__name__}") from None
    if not rows:
        raise SpecError("the CSV file is empty")
    header = tuple(h.strip() for h in rows[0])
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise SpecError(f"CSV line {line} has {len(row)} cells, expected {len(header)}")
    return Table(header, tuple(tuple(r) for r in rows[1:]))


def check_dataset(
    local: LocalDataset, *, chain_id: int, metadata_hash: bytes, row_count: int, rules: KeyRules
) -> tuple[Table, int]:
    """The dataset's table and distinct key count, once it opens the on-chain commitment."""
    if local.chain_id != chain_id:
        raise DatasetMismatch(
            f"the local copy of dataset {local.dataset_id} was registered on chain {local.chain_id}",
            "wrong_chain",
        )
    document_json = json.dumps(local.document, sort_keys=True, separators=(",", ":")).encode()
    if keccak(document_json) != metadata_hash:
        raise DatasetMismatch(
            f"the metadata of dataset {local.dataset_id} does not hash to the on-chain metadataHash",
            "metadata_mismatch",
        )
    data = local.path.read_bytes()
    opened = "0x" + keccak(local.salt + hashlib.sha256(data).digest()).hex()
    if opened != str(local.document.get("content_commitment", "")).lower():
        raise DatasetMismatch(
            f"the file of dataset {local.dataset_id} does not open its content commitment",
            "commitment_mismatch",
        )
    table = parse_csv_table(data)
    try:
        keys = len(index_keys(table, (local.key,), rules))
    except SpecError as exc:
        raise DatasetMismatch(
            f"dataset {local.dataset_id} breaks the task's key rules: {exc}", "key_rules"
        ) from None
    if keys != row_count or len(table.rows) != row_count:
        raise DatasetMismatch(
            f"dataset {local.dataset_id} holds {keys} distinct keys in {len(table.rows)} rows, "
            f"the chain commits to {row_count} rows",
            "row_count_mismatch",
        )
    return table, keys
