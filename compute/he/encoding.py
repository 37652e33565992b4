"""Column checks and plaintext encodings, plus a small CSV reader for text handed to it.

- Paillier, integer columns: exact, scale 1 (negative values map to n - |v| inside HEU).
- Paillier, real columns: fixed point, `v = round(x * scale)`, `scale` stated in the spec and
  carried as the column's divisor; the rounding error is at most 0.5 / scale per value.
- CKKS: reals as they are (the approximation is CKKS's own; see `bounds`).

No file I/O here: `parse_csv` reads text or bytes the caller already has.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from compute.errors import SpecError
from compute.he.limits import DEFAULT_LIMITS, HELimits
from compute.he.scheme import PAILLIER_INPUT_BOUND, Scheme

_IDENT_FIRST = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_IDENT_REST = _IDENT_FIRST | set("0123456789")


@dataclass(frozen=True, slots=True)
class EncodedColumn:
    """A column ready to encrypt: int64 values (Paillier) or float64 values (CKKS)."""

    name: str
    encoding: Literal["int", "fixed", "real"]
    divisor: int
    values: npt.NDArray[Any] = field(repr=False)


def is_column_name(name: str) -> bool:
    """Column names are formula identifiers: `[A-Za-z_][A-Za-z0-9_]*`, at most 64 characters."""
    return (
        isinstance(name, str)
        and 0 < len(name) <= 64
        and name[0] in _IDENT_FIRST
        and all(ch in _IDENT_REST for ch in name)
    )


def encode_column(name: str, data: Any, scheme: Scheme, scale: int, limits: HELimits) -> EncodedColumn:
    """Check one column and encode it for `scheme` (`scale`: Paillier fixed point for reals)."""
    if not is_column_name(name):
        raise SpecError(f"column name {name!r} is not an identifier ([A-Za-z_][A-Za-z0-9_]*)")
    arr = np.asarray(data)
    if arr.ndim != 1:
        raise SpecError(f"column {name!r} must be one-dimensional, got shape {arr.shape}")
    if not 1 <= arr.shape[0] <= limits.max_rows:
        raise SpecError(f"column {name!r} has {arr.shape[0]} rows; allowed 1..{limits.max_rows}")
    is_int = arr.dtype.kind in "biu"
    if not is_int and arr.dtype.kind != "f":
        raise SpecError(f"column {name!r} is not numeric (dtype {arr.dtype})")
    if not is_int and not np.all(np.isfinite(arr)):
        raise SpecError(f"column {name!r} has NaN or infinite values")
    if scheme is Scheme.CKKS:
        return EncodedColumn(name, "real", 1, arr.astype(np.float64))
    if is_int:
        return EncodedColumn(name, "int", 1, _bounded_int64(name, arr))
    if scale == 1:
        if not np.all(arr == np.rint(arr)):
            raise SpecError(f"column {name!r} has non-integer values; use a fixed-point scale > 1")
        return EncodedColumn(name, "int", 1, _bounded_int64(name, arr))
    scaled = np.rint(arr.astype(np.float64) * scale)
    if np.any(np.abs(scaled) >= float(PAILLIER_INPUT_BOUND)):
        raise SpecError(f"column {name!r} times scale {scale} reaches 2^62: lower the scale")
    return EncodedColumn(name, "fixed", scale, scaled.astype(np.int64))


def encode_columns(
    columns: Mapping[str, Any], names: Sequence[str], scheme: Scheme, scale: int, limits: HELimits
) -> list[EncodedColumn]:
    """Encode the columns `names` (only those: nothing else leaves the owner)."""
    if len(names) > limits.max_columns:
        raise SpecError(f"{len(names)} columns, over the limit of {limits.max_columns}")
    missing = [n for n in names if n not in columns]
    if missing:
        raise SpecError(f"missing column(s): {', '.join(missing)}")
    return [encode_column(n, columns[n], scheme, scale, limits) for n in names]


def _bounded_int64(name: str, arr: npt.NDArray[Any]) -> npt.NDArray[np.int64]:
    if arr.dtype.kind == "f":
        if np.any(np.abs(arr) >= float(PAILLIER_INPUT_BOUND)):
            raise SpecError(f"column {name!r} has values of magnitude 2^62 or more")
        return arr.astype(np.int64)
    if arr.dtype.kind == "u" and arr.dtype.itemsize == 8:
        if np.any(arr >= np.uint64(PAILLIER_INPUT_BOUND)):
            raise SpecError(f"column {name!r} has values of magnitude 2^62 or more")
        return arr.astype(np.int64)
    out = arr.astype(np.int64)
    if np.any(np.abs(out) >= PAILLIER_INPUT_BOUND):  # abs(int64 min) wraps negative: checked below
        raise SpecError(f"column {name!r} has values of magnitude 2^62 or more")
    if np.any(out == np.iinfo(np.int64).min):
        raise SpecError(f"column {name!r} has values of magnitude 2^62 or more")
    return out


def parse_csv(data: str | bytes, limits: HELimits = DEFAULT_LIMITS) -> dict[str, npt.NDArray[Any]]:
    """Parse CSV text with a header row into numeric columns (int64 where every cell is an integer)."""
    if isinstance(data, bytes):
        if len(data) > limits.max_columns_bytes:
            raise SpecError(f"CSV is {len(data)} bytes, over the limit of {limits.max_columns_bytes}")
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise SpecError(f"CSV is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    if len(data) > limits.max_columns_bytes:
        raise SpecError(f"CSV is {len(data)} characters, over the limit of {limits.max_columns_bytes}")
    reader = csv.reader(io.StringIO(data.lstrip("\ufeff")))
    rows = [(reader.line_num, r) for r in reader if r and any(cell.strip() for cell in r)]
    if len(rows) < 2:
        raise SpecError("CSV needs a header row and at least one data row")
    header = [h.strip() for h in rows[0][1]]
    if len(set(header)) != len(header):
        raise SpecError("CSV header has duplicate column names")
    if len(header) > limits.max_columns:
        raise SpecError(f"CSV has {len(header)} columns, over the limit of {limits.max_columns}")
    if len(rows) - 1 > limits.max_rows:
        raise SpecError(f"CSV has {len(rows) - 1} rows, over the limit of {limits.max_rows}")
    for line, row in rows[1:]:
        if len(row) != len(header):
            raise SpecError(f"CSV line {line} has {len(row)} cells, expected {len(header)}")
    columns: dict[str, npt.NDArray[Any]] = {}
    for j, name in enumerate(header):
        if not is_column_name(name):
            raise SpecError(f"CSV column name {name!r} is not an identifier")
        cells = [row[j].strip() for _, row in rows[1:]]
        columns[name] = _parse_cells(name, cells)
    return columns


def _parse_cells(name: str, cells: list[str]) -> npt.NDArray[Any]:
    try:
        ints = [int(c, 10) for c in cells]
    except ValueError:
        ints = None
    if ints is not None:
        if any(abs(v) >= PAILLIER_INPUT_BOUND for v in ints):
            raise SpecError(f"CSV column {name!r} has integers of magnitude 2^62 or more")
        return np.array(ints, dtype=np.int64)
    try:
        values = np.array([float(c) for c in cells], dtype=np.float64)
    except ValueError:
        raise SpecError(f"CSV column {name!r} has a non-numeric cell") from None
    if not np.all(np.isfinite(values)):
        raise SpecError(f"CSV column {name!r} has NaN or infinite values")
    return values
