"""What a provider does before sharing: check its rows against the declared schema and turn
them into the plan's input matrices (normalised float64 numbers, bool category one-hots).

Nothing leaves the provider if a value is outside its declared range, not an integer where
an integer is declared, or not among the declared categories: the bounds and the disclosure
rules rest on those declarations. Error messages name columns and counts, never values.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from compute.errors import SpecError
from compute.mpc.forms import column_norm
from compute.mpc.plan import Plan

Columns = Mapping[str, Any]  # column name -> a sequence or 1-D array of that column's values


def encode_part(plan: Plan, index: int, columns: Columns) -> dict[str, npt.NDArray[Any]]:
    """The input matrices of part `index` (name -> array), from that provider's columns."""
    if not 0 <= index < len(plan.parts):
        raise SpecError(f"plan has no part {index}")
    part = plan.parts[index]
    where = f"part {index} ({part.table}/{part.provider})"
    if not isinstance(columns, Mapping):
        raise SpecError(f"{where}: columns must be a mapping of column name to values")
    schema = plan.query.schema(part.table)
    layout = plan.layout(part.table)
    out: dict[str, npt.NDArray[Any]] = {}
    if layout.numbers:
        matrix = np.empty((part.rows, len(layout.numbers)), dtype=np.float64)
        for j, name in enumerate(layout.numbers):
            col = schema.column(name)
            values = _numbers(_column(columns, name, part.rows, where), f"{where}: column {name}")
            outside = int(np.count_nonzero((values < col.lo) | (values > col.hi)))
            if outside:
                raise SpecError(f"{where}: column {name} has {outside} values outside its declared range")
            if col.integer and not np.array_equal(values, np.floor(values)):
                raise SpecError(f"{where}: column {name} is declared integer but has fractional values")
            center, exp = column_norm(col)
            matrix[:, j] = (values - center) * 2.0**-exp
        out[f"p{index}.num"] = matrix
    if layout.category_width:
        onehot = np.zeros((part.rows, layout.category_width), dtype=bool)
        if layout.row_flag:
            onehot[:, -1] = True
        offset = 0
        for name, width in layout.categories:
            cats = schema.column(name).categories
            codes = {c: i for i, c in enumerate(cats)}
            raw = _column(columns, name, part.rows, where)
            index_of = np.fromiter((codes.get(str(v), -1) for v in raw), dtype=np.int64, count=part.rows)
            unknown = int(np.count_nonzero(index_of < 0))
            if unknown:
                raise SpecError(
                    f"{where}: column {name} has {unknown} values outside its declared categories"
                )
            onehot[np.arange(part.rows), offset + index_of] = True
            offset += width
        out[f"p{index}.cat"] = onehot
    return out


def encode_inputs(plan: Plan, data: Mapping[int, Columns]) -> list[npt.NDArray[Any]]:
    """Every input of the plan in order, from every part's columns (the simulator's view)."""
    encoded: dict[str, npt.NDArray[Any]] = {}
    for index in range(len(plan.parts)):
        if index not in data:
            raise SpecError(f"no data for part {index}")
        encoded.update(encode_part(plan, index, data[index]))
    return [encoded[spec.name] for spec in plan.inputs]


def _column(columns: Columns, name: str, rows: int, where: str) -> npt.NDArray[Any]:
    if name not in columns:
        raise SpecError(f"{where}: missing column {name}")
    values = np.asarray(columns[name])
    if values.ndim != 1 or values.shape[0] != rows:
        raise SpecError(f"{where}: column {name} has shape {values.shape}, the plan expects ({rows},)")
    return values


def _numbers(values: npt.NDArray[Any], where: str) -> npt.NDArray[np.float64]:
    if values.dtype.kind not in "biuf":
        raise SpecError(f"{where} is not numeric")
    as_float = values.astype(np.float64)
    if not np.all(np.isfinite(as_float)):
        raise SpecError(f"{where} has non-finite values")
    return as_float
