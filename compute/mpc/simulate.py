"""`simulate(query, tables)`: the whole pipeline in one process with SPU's simulator.

Same plan, same provider encoding, same compiled program and same disclosure gate as the
multi-process runtime; only the links are in-memory and every party is a thread.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from compute.errors import SpecError
from compute.mpc.encode import Columns, encode_inputs
from compute.mpc.engine import Compiled, Protocol, compile_function, simulate_compiled
from compute.mpc.plan import PartInfo, Plan, plan_query
from compute.mpc.program import build_function
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


def compile_plan(plan: Plan) -> Compiled:
    """The SPU executable of a plan."""
    examples = [
        np.zeros(spec.shape, dtype=np.float64 if spec.kind == "num" else bool) for spec in plan.inputs
    ]
    return compile_function(build_function(plan), examples, [spec.name for spec in plan.inputs])


def simulate(query: Query, tables: Tables, *, protocol: Protocol = Protocol.ABY3) -> QueryResult:
    """Plan, encode, compile and run `query` on `tables` in SPU's single-process simulator.

    Raises SpecError before any MPC for an invalid query or data, DisclosureRefused when a
    group is below min_group_size (only the per-group flags are looked at).
    """
    parts, data = parts_of(query, tables)
    plan = plan_query(query, parts)
    inputs = encode_inputs(plan, data)
    outputs = simulate_compiled(compile_plan(plan), protocol, plan.numerics, inputs)
    check_flags(plan, outputs[0])
    return decode(plan, outputs[1:])
