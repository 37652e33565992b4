"""Datasets a node serves for joint statistics: the declared table schema in the committed
metadata document, and the provider's columns once the local copy opens the commitment.

`datum data register FILE --schema schema.json --node N` puts the declared schema (number
columns with [lo, hi] and an integer flag, category columns with their categories) into the
metadata document, so keccak(document) = the on-chain metadataHash commits to it. The node's
copy lives where `psi_datasets` keeps served datasets (``<data_dir>/datasets/<id>/``).
Blocking (file reads, hashing): call `load_columns` in a thread.

Columns cache: once a copy has opened its commitment and every value passed its declaration,
the parsed columns go to ``columns-<sha256 of the file>-<table digest>.npz`` next to it (0600,
written atomically, with an HMAC keyed by the dataset's private salt), so the next task skips
the CSV parse. The cache is only read after the commitment check, only under the current
file's sha256, and only kept when its MAC and the cheap invariants (row count, dtypes,
ranges, integer-ness, categories) hold; anything else falls back to the full parse.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from eth_hash.auto import keccak

from compute.errors import SpecError
from compute.mpc import TableSchema

from .psi_datasets import DatasetMismatch, LocalDataset, parse_csv_table

__all__ = [
    "METADATA_SCHEMA",
    "StatsMetadata",
    "cache_columns",
    "columns_cache_path",
    "describe_stats_csv",
    "load_columns",
    "read_schema_file",
]

METADATA_SCHEMA = "datum.dataset.v1"
CACHE_PREFIX = "columns-"
CACHE_SUFFIX = ".npz"
_CACHE_MAC_CONTEXT = b"datum.stats.columns-cache.v1"
_MAC_ENTRY = "mac"

logger = logging.getLogger(__name__)


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
    # The checked columns and the file's sha256 from the registration parse (for
    # `cache_columns`; not part of the document).
    checked_columns: dict[str, npt.NDArray[Any]] = field(default_factory=dict, compare=False, repr=False)
    file_sha256: bytes = field(default=b"", compare=False, repr=False)

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
    checked = columns_of(parsed.columns, parsed.rows, table, path.name)  # every value within its declaration
    salt = secrets.token_bytes(32)
    file_sha256 = hashlib.sha256(data).digest()
    return StatsMetadata(
        name=path.name,
        columns=tuple(parsed.columns),
        key=key or "",
        rows=len(parsed.rows),
        content_commitment=keccak(salt + file_sha256),
        salt=salt,
        table=table,
        checked_columns=checked,
        file_sha256=file_sha256,
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
        raw = list(map(str.strip, [r[j] for r in rows]))
        if column.is_number:
            try:
                values = np.fromiter(map(float, raw), dtype=np.float64, count=len(raw))
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
            if not allowed.issuperset(raw):
                unknown = sum(1 for v in raw if v not in allowed)
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
    file_sha256 = hashlib.sha256(data).digest()
    opened = "0x" + keccak(local.salt + file_sha256).hex()
    if opened != str(local.document.get("content_commitment", "")).lower():
        raise DatasetMismatch(
            f"the file of dataset {local.dataset_id} does not open its content commitment",
            "commitment_mismatch",
        )
    folder = local.path.parent
    cached = _read_cache(folder, file_sha256, local.salt, table, row_count)
    if cached is not None:
        return cached
    parsed = parse_csv_table(data)
    if len(parsed.rows) != row_count:
        raise DatasetMismatch(
            f"dataset {local.dataset_id} holds {len(parsed.rows)} rows, the chain commits to {row_count}",
            "row_count_mismatch",
        )
    columns = columns_of(parsed.columns, parsed.rows, table, f"dataset {local.dataset_id}")
    _write_cache(folder, file_sha256, local.salt, table, columns)
    return columns


# -- the columns cache -------------------------------------------------------------------------


def _table_digest(table: TableSchema) -> bytes:
    canonical = json.dumps(table.to_json(), sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(canonical).digest()


def columns_cache_path(folder: Path, file_sha256: bytes, table: TableSchema) -> Path:
    """Where the checked columns of the file with this sha256 under this table are cached."""
    return folder / f"{CACHE_PREFIX}{file_sha256.hex()}-{_table_digest(table).hex()[:16]}{CACHE_SUFFIX}"


def _cache_mac(
    salt: bytes, file_sha256: bytes, table: TableSchema, arrays: Sequence[npt.NDArray[Any]]
) -> bytes:
    """HMAC-SHA256 (key derived from the dataset's private salt) over the file's sha256, the
    table digest and every array's declared name, dtype, shape and bytes."""
    key = hashlib.sha256(_CACHE_MAC_CONTEXT + salt).digest()
    mac = hmac.new(key, _CACHE_MAC_CONTEXT + file_sha256 + _table_digest(table), hashlib.sha256)
    for column, array in zip(table.columns, arrays, strict=True):
        mac.update(f"\n{column.name}:{array.dtype.str}:{array.shape}\n".encode())
        mac.update(np.ascontiguousarray(array).tobytes())
    return mac.digest()


def _storable(table: TableSchema, columns: dict[str, npt.NDArray[Any]]) -> list[npt.NDArray[Any]]:
    """The declared columns in declared order: float64, categories as a unicode array."""
    out: list[npt.NDArray[Any]] = []
    for column in table.columns:
        values = columns[column.name]
        if column.is_number:
            out.append(np.ascontiguousarray(values, dtype=np.float64))
        else:
            out.append(np.asarray(values).astype(np.str_))
    return out


def _write_cache(
    folder: Path,
    file_sha256: bytes,
    salt: bytes,
    table: TableSchema,
    columns: dict[str, npt.NDArray[Any]],
) -> Path | None:
    """Write the cache atomically (temp file, 0600, os.replace) and drop stale ones; a failure
    only costs the next task a full parse (logged, never raised)."""
    final = columns_cache_path(folder, file_sha256, table)
    temp = folder / f".{final.name}.{secrets.token_hex(4)}.part"
    try:
        arrays = _storable(table, columns)
        entries: dict[str, Any] = {f"c{i}": a for i, a in enumerate(arrays)}
        entries[_MAC_ENTRY] = np.frombuffer(_cache_mac(salt, file_sha256, table, arrays), dtype=np.uint8)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            np.savez(out, **entries)
        os.replace(temp, final)
    except (OSError, ValueError) as exc:
        temp.unlink(missing_ok=True)
        logger.warning("columns cache not written in %s: %s", folder.name, type(exc).__name__)
        return None
    for stale in folder.glob(f"{CACHE_PREFIX}*{CACHE_SUFFIX}"):
        if stale.name != final.name:
            stale.unlink(missing_ok=True)
    return final


def _read_cache(
    folder: Path, file_sha256: bytes, salt: bytes, table: TableSchema, row_count: int
) -> dict[str, npt.NDArray[Any]] | None:
    """The cached columns when the cache exists, is readable, carries a valid MAC and passes
    the cheap invariants; None otherwise (the caller parses the CSV)."""
    path = columns_cache_path(folder, file_sha256, table)
    if not path.is_file():
        return None
    expected = {f"c{i}" for i in range(len(table.columns))} | {_MAC_ENTRY}
    try:
        with np.load(path, allow_pickle=False) as npz:
            if set(npz.files) != expected:
                _ignored(folder, "unexpected entries")
                return None
            arrays = [npz[f"c{i}"] for i in range(len(table.columns))]
            stored_mac = npz[_MAC_ENTRY]
    except Exception as exc:  # noqa: BLE001 - any unreadable cache means: parse the CSV
        _ignored(folder, type(exc).__name__)
        return None
    problem = _cache_problem(table, arrays, row_count)
    if problem is None and (
        stored_mac.dtype != np.uint8
        or not hmac.compare_digest(stored_mac.tobytes(), _cache_mac(salt, file_sha256, table, arrays))
    ):
        problem = "bad MAC"
    if problem is not None:
        _ignored(folder, problem)
        return None
    return {
        column.name: array if column.is_number else array.astype(object)
        for column, array in zip(table.columns, arrays, strict=True)
    }


def _cache_problem(table: TableSchema, arrays: Sequence[npt.NDArray[Any]], row_count: int) -> str | None:
    """What breaks the declaration or the committed row count (vectorised), or None."""
    for column, array in zip(table.columns, arrays, strict=True):
        if array.shape != (row_count,):
            return f"column {column.name} has shape {array.shape}, not ({row_count},)"
        if column.is_number:
            if array.dtype != np.dtype(np.float64):
                return f"column {column.name} has dtype {array.dtype.str}"
            if not bool(np.all(np.isfinite(array) & (array >= column.lo) & (array <= column.hi))):
                return f"column {column.name} has values outside its declared range"
            if column.integer and not np.array_equal(array, np.floor(array)):
                return f"column {column.name} has fractional values"
        else:
            if array.dtype.kind != "U":
                return f"column {column.name} has dtype {array.dtype.str}"
            if row_count and not bool(np.all(np.isin(array, np.array(column.categories, dtype=np.str_)))):
                return f"column {column.name} has values outside its categories"
    return None


def _ignored(folder: Path, why: str) -> None:
    logger.warning("columns cache in %s ignored (%s); parsing the CSV", folder.name, why)


def cache_columns(folder: Path, metadata: StatsMetadata) -> Path | None:
    """Fill the columns cache of a freshly stored copy from the registration parse (the copy
    in `folder` must be the file `metadata` describes; a mismatch only leaves an unused
    cache). Returns its path, or None when there is nothing to cache or it cannot be written."""
    if not metadata.file_sha256 or set(metadata.checked_columns) != {c.name for c in metadata.table.columns}:
        return None
    return _write_cache(folder, metadata.file_sha256, metadata.salt, metadata.table, metadata.checked_columns)
