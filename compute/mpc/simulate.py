"""`simulate(query, tables)`: the whole pipeline in one process with SPU's simulator.

Same plan, same provider encoding, same compiled program and same disclosure gate as the
multi-process runtime; only the links are in-memory and every party is a thread.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from compute.errors import SpecError
from compute.mpc.cache import compile_plan
from compute.mpc.encode import Columns, encode_inputs
from compute.mpc.engine import Protocol, simulate_compiled
from compute.mpc.plan import PartInfo, plan_query
from compute.mpc.query import Query
from compute.mpc.result import QueryResult, check_flags, decode

Tables = Mapping[str, Sequence[Columns]]  # table name -> one Columns per provider part


def parts_of(query: Query, tables: Tables) -> tuple[tuple[PartInfo, ...], dict[int, Columns]]:
    """Part metadata (provider ids `table#i`, row counts) and data by part index, in order."""
    if not isinstance(tables, Mapping):
        raise SpecError("tables must map each table name to its providers' columns")
    parts: list[PartInfo] = []
    data: dict[int, Columns] = {}
    for schema in query.tables:
        if schema.name not in tables:
            raise SpecError(f"no data for table {schema.name}")
        for i, columns in enumerate(tables[schema.name]):
            if not isinstance(columns, Mapping) or not columns:
                raise SpecError(f"table {schema.name} part {i}: columns must be a non-empty mapping")
            rows = len(np.asarray(next(iter(columns.values()))))
            data[len(parts)] = columns
            parts.append(PartInfo(schema.name, f"{schema.name}#{i}", rows))
    extra = sorted(set(tables) - {t.name for t in query.tables})
    if extra:
        raise SpecError(f"data for tables the query does not read: {', '.join(extra)}")
    return tuple(parts), data


def simulate(
    query: Query, tables: Tables, *, protocol: Protocol = Protocol.ABY3, cache_dir: Path | None = None
) -> QueryResult:
    """Plan, encode, compile and run `query` on `tables` in SPU's single-process simulator.

    Raises SpecError before any MPC for an invalid query or data, DisclosureRefused when a
    group is below min_group_size (only the per-group flags are looked at). `cache_dir`: see
    cache.compile_plan. Whatever the query's `reveal`, the simulator returns the result.
    """
    parts, data = parts_of(query, tables)
    plan = plan_query(query, parts)
    inputs = encode_inputs(plan, data)
    outputs = simulate_compiled(
        compile_plan(plan, protocol=protocol, cache_dir=cache_dir), protocol, plan.numerics, inputs
    )
    check_flags(plan, outputs[0])
    return decode(plan, outputs[1:])
