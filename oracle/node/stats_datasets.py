"""Datasets a node serves for joint statistics: the declared table schema in the committed
metadata document, and the provider's columns once the local copy opens the commitment.

`datum data register FILE --schema schema.json --node N` puts the declared schema (number
columns with [lo, hi] and an integer flag, category columns with their categories) into the
metadata document, so keccak(document) = the on-chain metadataHash commits to it. The node's
copy lives where `psi_datasets` keeps served datasets (``<data_dir>/datasets/<id>/``).
Blocking (file reads, hashing): call `load_columns` in a thread.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from eth_hash.auto import keccak

from compute.errors import SpecError
from compute.mpc import TableSchema

from .psi_datasets import DatasetMismatch, LocalDataset, parse_csv_table

__all__ = ["METADATA_SCHEMA", "StatsMetadata", "describe_stats_csv", "load_columns", "read_schema_file"]

METADATA_SCHEMA = "datum.dataset.v1"


def read_schema_file(path: Path) -> TableSchema:
    """A table schema from a JSON file (`TableSchema.to_json` form); `SpecError` otherwise."""
    try:
        obj = json.loads(path.read_text())
    except OSError as exc:
        raise SpecError(f"cannot read {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise SpecError(f"{path} is not JSON: {exc.msg} (line {exc.lineno})") from None
    return TableSchema.from_json(obj)


@dataclass(frozen=True)
class StatsMetadata:
    """The public metadata document of a stats dataset (hashed on chain) and its private salt."""

    name: str
    columns: tuple[str, ...]
    key: str
    rows: int
    content_commitment: bytes
    salt: bytes
    table: TableSchema

    def document(self) -> dict[str, Any]:
        """The public document (no salt): the dataset document plus the declared table."""
        return {
            "schema": METADATA_SCHEMA,
            "name": self.name,
            "columns": list(self.columns),
            "key": self.key,
            "rows": self.rows,
            "content_commitment": "0x" + self.content_commitment.hex(),
            "table": self.table.to_json(),
        }

    def canonical_json(self) -> bytes:
        """The document as canonical JSON."""
        return json.dumps(self.document(), sort_keys=True, separators=(",", ":")).encode()

    @property
    def metadata_hash(self) -> bytes:
        """keccak256 of the canonical document: the on-chain metadataHash."""
        return keccak(self.canonical_json())


def describe_stats_csv(
    path: Path, table: TableSchema, *, key: str | None = None, rows: int | None = None
) -> StatsMetadata:
    """Read a CSV, check it against the declared table (every declared column present, every
    value within its declaration) and build its metadata; `SpecError` naming column and count."""
    data = path.read_bytes()
    parsed = parse_csv_table(data)
    if key is not None and key not in parsed.columns:
        raise SpecError(f"key column {key!r} not in {path.name}")
    if rows is not None and rows != len(parsed.rows):
        raise SpecError(f"--rows {rows} does not match the {len(parsed.rows)} data rows of {path.name}")
    columns_of(parsed.columns, parsed.rows, table, path.name)  # every value within its declaration
    salt = secrets.token_bytes(32)
    return StatsMetadata(
        name=path.name,
        columns=tuple(parsed.columns),
        key=key or "",
        rows=len(parsed.rows),
        content_commitment=keccak(salt + hashlib.sha256(data).digest()),
        salt=salt,
        table=table,
    )


def columns_of(
    header: tuple[str, ...], rows: tuple[tuple[str, ...], ...], table: TableSchema, where: str
) -> dict[str, npt.NDArray[Any]]:
    """The declared columns as arrays (numbers float64, categories str), checked against the
    declarations; messages name columns and counts, never values."""
    out: dict[str, npt.NDArray[Any]] = {}
    for column in table.columns:
        if column.name not in header:
            raise SpecError(f"{where}: declared column {column.name!r} is not in the file")
        j = header.index(column.name)
        raw = [r[j].strip() for r in rows]
        if column.is_number:
            try:
                values = np.array([float(v) for v in raw], dtype=np.float64)
            except ValueError:
                bad = sum(1 for v in raw if not _is_float(v))
                raise SpecError(f"{where}: column {column.name} has {bad} non-numeric values") from None
            outside = int(
                np.count_nonzero(~np.isfinite(values) | (values < column.lo) | (values > column.hi))
            )
            if outside:
                raise SpecError(
                    f"{where}: column {column.name} has {outside} values outside its declared range"
                )
            if column.integer and not np.array_equal(values, np.floor(values)):
                raise SpecError(
                    f"{where}: column {column.name} is declared integer but has fractional values"
                )
            out[column.name] = values
        else:
            allowed = set(column.categories)
            unknown = sum(1 for v in raw if v not in allowed)
            if unknown:
                raise SpecError(f"{where}: column {column.name} has {unknown} values outside its categories")
            out[column.name] = np.array(raw, dtype=object)
    return out


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def load_columns(
    local: LocalDataset, *, chain_id: int, metadata_hash: bytes, row_count: int, table: TableSchema
) -> dict[str, npt.NDArray[Any]]:
    """The provider's declared columns, once the local copy opens the on-chain commitment, its
    declared table equals the query's and its row count the committed one (`DatasetMismatch`
    with a code otherwise; a value outside its declaration is a `SpecError`)."""
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
    declared = local.document.get("table")
    if declared is None:
        raise DatasetMismatch(f"dataset {local.dataset_id} declares no table schema", "no_schema")
    if TableSchema.from_json(declared) != table:
        raise DatasetMismatch(
            f"the query's table {table.name} differs from dataset {local.dataset_id}'s declared schema",
            "schema_mismatch",
        )
    data = local.path.read_bytes()
    opened = "0x" + keccak(local.salt + hashlib.sha256(data).digest()).hex()
    if opened != str(local.document.get("content_commitment", "")).lower():
        raise DatasetMismatch(
            f"the file of dataset {local.dataset_id} does not open its content commitment",
            "commitment_mismatch",
        )
    parsed = parse_csv_table(data)
    if len(parsed.rows) != row_count:
        raise DatasetMismatch(
            f"dataset {local.dataset_id} holds {len(parsed.rows)} rows, the chain commits to {row_count}",
            "row_count_mismatch",
        )
    return columns_of(parsed.columns, parsed.rows, table, f"dataset {local.dataset_id}")
