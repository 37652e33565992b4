"""Joint statistics and joint queries under MPC (SPU: ABY3 by default, CHEETAH for two).

Build a `Query` (or `parse_sql`), then `simulate(query, tables)` in one process or
`run_parties(query, tables)` with a real committee of processes; nodes call `plan_query`
and `run_party`; a requester outside the committee (`Reveal.external()`) rebuilds the
result from every party's `OutputShares` with `reconstruct_result`. Custom numpy/JAX code runs through
`run_function`. See docs/MPC.md.
"""

from compute.mpc.engine import Protocol
from compute.mpc.expressions import And, Arith, Cmp, ColRef, Compare, Const, Neg, Not, Or
from compute.mpc.function import run_function
from compute.mpc.link import CommitteeLink, Prewarmed
from compute.mpc.local import CommitteeRun, run_parties
from compute.mpc.numerics import Field, Numerics
from compute.mpc.party import run_party
from compute.mpc.plan import PartInfo, Plan, plan_query
from compute.mpc.query import Accuracy, Aggregate, Func, Partition, Query, Reveal
from compute.mpc.reconstruct import reconstruct_result
from compute.mpc.result import AggregateResult, DisclosureRefused, OutputShares, PartyReport, QueryResult
from compute.mpc.schema import Column, TableSchema
from compute.mpc.shares import share_part
from compute.mpc.simulate import simulate
from compute.mpc.sql import parse_sql
from compute.mpc.sql_lexer import SqlError

__all__ = [
    "Accuracy",
    "Aggregate",
    "AggregateResult",
    "And",
    "Arith",
    "Cmp",
    "ColRef",
    "Column",
    "CommitteeLink",
    "CommitteeRun",
    "Compare",
    "Const",
    "DisclosureRefused",
    "Field",
    "Func",
    "Neg",
    "Not",
    "Numerics",
    "Or",
    "OutputShares",
    "PartInfo",
    "PartyReport",
    "Prewarmed",
    "Partition",
    "Plan",
    "Protocol",
    "Query",
    "QueryResult",
    "Reveal",
    "SqlError",
    "TableSchema",
    "parse_sql",
    "plan_query",
    "reconstruct_result",
    "run_function",
    "run_party",
    "run_parties",
    "share_part",
    "simulate",
]
