"""The declarative joint-query model: what to compute, over which declared tables, and who
may learn what. Frozen dataclasses with a canonical JSON form and hash.

A `Query` holds the schemas it relies on (declared ranges drive numerics and error bounds,
so the hash binds them), the partition (horizontal: one table whose rows come from several
providers; vertical: several tables whose rows are already aligned, e.g. by a PSI join),
the aggregates, an optional WHERE predicate and GROUP BY category column, and the required
privacy and accuracy parameters: `min_group_size`, `reveal` and `accuracy`.

The canonical JSON is `json.dumps(query.to_json(), sort_keys=True, separators=(",", ":"),
ensure_ascii=True)`; `digest()` is its SHA-256.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, overload

from compute.errors import SpecError
from compute.mpc.expressions import (
    ColRef,
    Expr,
    Predicate,
    expr_from_json,
    expr_to_json,
    json_list,
    predicate_from_json,
    predicate_to_json,
    render,
    render_number,
)
from compute.mpc.limits import (
    MAX_BINS,
    QUANTILE_DENOMINATOR,
)
from compute.mpc.numerics import MAX_FRACTION_BITS, MIN_FRACTION_BITS, Field
from compute.mpc.schema import Column, TableSchema
from compute.mpc.validate import validate_query

QUERY_VERSION = 1


# -- aggregates ----------------------------------------------------------------------------
class Func(StrEnum):
    """Aggregate functions; see docs/MPC.md for each one's method and error bound."""

    COUNT = "count"
    SUM = "sum"
    MEAN = "mean"
    VAR_SAMP = "var_samp"
    VAR_POP = "var_pop"
    STD_SAMP = "stddev_samp"
    STD_POP = "stddev_pop"
    MIN = "min"
    MAX = "max"
    QUANTILE = "quantile"
    HISTOGRAM = "histogram"
    CORR = "corr"
    WEIGHTED_SUM = "weighted_sum"


ARITY: dict[Func, int] = {Func.COUNT: 0, Func.CORR: 2, Func.WEIGHTED_SUM: 2}


@dataclass(frozen=True)
class Aggregate:
    """One output column. `q` is the level of a quantile (0 < q <= 1, a multiple of 1e-6),
    `edges` the strictly increasing bin edges of a histogram (numpy's convention: bins are
    [e_i, e_i+1), the last one closed)."""

    func: Func
    args: tuple[Expr, ...] = ()
    q: float | None = None
    edges: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "func", Func(self.func))
        except ValueError:
            raise SpecError(f"unsupported aggregate {self.func!r}") from None
        object.__setattr__(self, "args", tuple(self.args))
        object.__setattr__(self, "edges", tuple(float(e) for e in self.edges))
        want = ARITY.get(self.func, 1)
        if len(self.args) != want:
            raise SpecError(f"{self.func}() takes {want} argument(s), got {len(self.args)}")
        if (self.func is Func.QUANTILE) != (self.q is not None):
            raise SpecError("q is set for quantile() and only for it")
        if self.q is not None:
            _check_level(self.q)
        if self.func is Func.HISTOGRAM:
            _check_edges(self.edges)
        elif self.edges:
            raise SpecError("edges are set for histogram() only")

    @property
    def label(self) -> str:
        """The SQL-like text of this aggregate, used as its output name."""
        if self.func is Func.COUNT:
            return "count(*)"
        parts = [render(a) for a in self.args]
        if self.q is not None:
            parts.append(render_number(self.q))
        if self.edges:
            parts.append("[" + ", ".join(render_number(e) for e in self.edges) + "]")
        return f"{self.func}({', '.join(parts)})"


def _check_level(q: float) -> None:
    if isinstance(q, bool) or not isinstance(q, int | float) or not 0 < q <= 1:
        raise SpecError(f"quantile level must be in (0, 1], got {q!r}")
    scaled = q * QUANTILE_DENOMINATOR
    if abs(scaled - round(scaled)) > 1e-6:
        raise SpecError("quantile level must be a multiple of 1e-6")


def _check_edges(edges: tuple[float, ...]) -> None:
    if not 2 <= len(edges) <= MAX_BINS + 1:
        raise SpecError(f"a histogram has 1..{MAX_BINS} bins (2..{MAX_BINS + 1} edges)")
    if not all(math.isfinite(e) for e in edges) or any(
        b <= a for a, b in zip(edges, edges[1:], strict=False)
    ):
        raise SpecError("histogram edges must be finite and strictly increasing")


# -- privacy and accuracy parameters ------------------------------------------------------
class Partition(StrEnum):
    """HORIZONTAL: one table, rows from several providers. VERTICAL: several row-aligned tables."""

    HORIZONTAL = "horizontal"
    VERTICAL = "vertical"


class _ExternalFlag:
    """`Reveal.external`: on the class, the factory `Reveal.external()`; on an instance, the
    boolean field. (A dataclass field and a static method cannot share a name otherwise.)
    Dataclasses take a descriptor's class-level value as the field default, so that value
    (the factory) is read back as False when the field is not given."""

    @overload
    def __get__(self, obj: None, owner: Any = None) -> Callable[[], Reveal]: ...

    @overload
    def __get__(self, obj: Reveal, owner: Any = None) -> bool: ...

    def __get__(self, obj: Reveal | None, owner: Any = None) -> bool | Callable[[], Reveal]:
        if obj is None:
            return _external_reveal
        value: bool = obj.__dict__.get("_external", False)
        return value

    def __set__(self, obj: Reveal, value: bool) -> None:
        obj.__dict__["_external"] = False if value is _external_reveal else value  # type: ignore[comparison-overlap]


def _external_reveal() -> Reveal:
    """No committee party learns the output; the requester rebuilds it from every party's
    output shares (`reconstruct_result`)."""
    return Reveal(False, None, True)


@dataclass(frozen=True)
class Reveal:
    """Who learns the output: one committee rank (`receiver`), every party (`public`), or
    someone outside the committee (`external`: the requester).

    With `external` no committee party reconstructs anything: each party returns its output
    shares (`run_party` -> `OutputShares`), and whoever gathers every party's blob rebuilds
    the result with `reconstruct_result`. JSON: `{"public": false, "receiver": null,
    "external": true}`; the two other forms keep their two-key JSON (and their spec hashes).
    """

    public: bool
    receiver: int | None
    external: _ExternalFlag = _ExternalFlag()

    @staticmethod
    def to(rank: int) -> Reveal:
        """Only committee rank `rank` reconstructs the output."""
        return Reveal(False, rank)

    @staticmethod
    def everyone() -> Reveal:
        """Every committee party reconstructs the output (a public answer)."""
        return Reveal(True, None)

    def __post_init__(self) -> None:
        if not isinstance(self.public, bool):
            raise SpecError("reveal.public must be a boolean")
        if not isinstance(self.external, bool):
            raise SpecError("reveal.external must be a boolean")
        if self.external:
            if self.public or self.receiver is not None:
                raise SpecError("an external reveal has no committee receiver and is not public")
            return
        if self.public and self.receiver is not None:
            raise SpecError("a public reveal has no single receiver")
        if not self.public and (type(self.receiver) is not int or not 0 <= self.receiver < 16):
            raise SpecError("reveal.receiver must be a committee rank 0..15")

    def receivers(self, world: int) -> tuple[int, ...]:
        """The ranks that reconstruct the output in a committee of `world` parties (none for
        an external reveal)."""
        if self.external:
            return ()
        if self.public:
            return tuple(range(world))
        assert self.receiver is not None
        if self.receiver >= world:
            raise SpecError(f"receiver rank {self.receiver} is not in a committee of {world}")
        return (self.receiver,)

    def to_json(self) -> dict[str, Any]:
        """{"public", "receiver"}, plus "external": true for an external reveal."""
        out: dict[str, Any] = {"public": self.public, "receiver": self.receiver}
        if self.external:
            out["external"] = True
        return out

    @staticmethod
    def from_json(obj: Any) -> Reveal:
        """Inverse of `to_json`; the two-key form means external=false."""
        if not isinstance(obj, dict) or not {"public", "receiver"} <= set(obj) <= {
            "public",
            "receiver",
            "external",
        }:
            raise SpecError("reveal is {public, receiver} or {public, receiver, external}")
        return Reveal(obj["public"], obj["receiver"], obj.get("external", False))


@dataclass(frozen=True)
class Accuracy:
    """The error target, and optionally forced fixed-point parameters.

    Every stated bound must be at most `max_error` times its aggregate's scale (docs/MPC.md:
    the largest magnitude the declared ranges allow for sum and mean-like results, the range
    half-width for spreads, 1 for correlations); the planner picks the cheapest field and the
    fraction bits that achieve it, or refuses. `field` and `fraction_bits` force a choice
    (both or neither). `min_spread`: a correlation's bound assumes each argument's standard
    deviation is at least this fraction of its declared half-width (the result says so); the
    planner also meets the target for standard deviations at least that large (a revealed
    standard deviation carries a bound computed from its own value, with no assumption).
    """

    max_error: float
    field: Field | None = None
    fraction_bits: int | None = None
    min_spread: float = 0.01

    def __post_init__(self) -> None:
        if isinstance(self.max_error, bool) or not isinstance(self.max_error, int | float):
            raise SpecError("accuracy.max_error must be a number")
        if not 1e-15 <= self.max_error <= 1.0:
            raise SpecError("accuracy.max_error must be in [1e-15, 1]")
        if (self.field is None) != (self.fraction_bits is None):
            raise SpecError("force both accuracy.field and accuracy.fraction_bits, or neither")
        if self.field is not None:
            try:
                object.__setattr__(self, "field", Field(self.field))
            except ValueError:
                raise SpecError(f"unknown field {self.field!r}") from None
            top = MAX_FRACTION_BITS[64 if self.field is Field.FM64 else 128]
            if type(self.fraction_bits) is not int or not MIN_FRACTION_BITS <= self.fraction_bits <= top:
                raise SpecError(f"fraction_bits must be in [{MIN_FRACTION_BITS}, {top}] for {self.field}")
        if not 0 < self.min_spread <= 1:
            raise SpecError("min_spread must be in (0, 1]")


# -- the query -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Query:
    """A joint statistics query; validated against its own schemas on construction."""

    tables: tuple[TableSchema, ...]
    partition: Partition
    select: tuple[Aggregate, ...]
    where: Predicate | None
    group_by: ColRef | None
    min_group_size: int
    reveal: Reveal
    accuracy: Accuracy

    def __post_init__(self) -> None:
        object.__setattr__(self, "tables", tuple(self.tables))
        object.__setattr__(self, "select", tuple(self.select))
        try:
            object.__setattr__(self, "partition", Partition(self.partition))
        except ValueError:
            raise SpecError(f"unknown partition {self.partition!r}") from None
        validate_query(self)

    def schema(self, table: str) -> TableSchema:
        """The declared schema of `table`."""
        for t in self.tables:
            if t.name == table:
                return t
        raise SpecError(f"unknown table {table!r}")

    def column(self, ref: ColRef) -> Column:
        """The declared column behind a reference."""
        return self.schema(ref.table).column(ref.column)

    @property
    def groups(self) -> tuple[str, ...]:
        """Group labels in output order: the declared categories, or ('*',) without GROUP BY."""
        if self.group_by is None:
            return ("*",)
        return self.column(self.group_by).categories

    def to_json(self) -> dict[str, Any]:
        """The canonical JSON object."""
        acc = self.accuracy
        return {
            "version": QUERY_VERSION,
            "tables": [t.to_json() for t in self.tables],
            "partition": str(self.partition),
            "select": [_agg_json(a) for a in self.select],
            "where": None if self.where is None else predicate_to_json(self.where),
            "group_by": None if self.group_by is None else expr_to_json(self.group_by),
            "min_group_size": self.min_group_size,
            "reveal": self.reveal.to_json(),
            "accuracy": {
                "max_error": float(acc.max_error),
                "field": None if acc.field is None else str(acc.field),
                "fraction_bits": acc.fraction_bits,
                "min_spread": float(acc.min_spread),
            },
        }

    def canonical_json(self) -> str:
        """Sorted keys, no spaces, ASCII."""
        return json.dumps(
            self.to_json(), sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
        )

    def digest(self) -> bytes:
        """SHA-256 of the canonical JSON: the spec hash."""
        return hashlib.sha256(self.canonical_json().encode("ascii")).digest()

    @staticmethod
    def from_json(obj: Any) -> Query:
        """Inverse of `to_json` (also accepts the JSON text)."""
        if isinstance(obj, str | bytes):
            try:
                obj = json.loads(obj)
            except ValueError as exc:
                raise SpecError(f"query JSON does not parse: {exc}") from None
        keys = {
            "version",
            "tables",
            "partition",
            "select",
            "where",
            "group_by",
            "min_group_size",
            "reveal",
            "accuracy",
        }
        if not isinstance(obj, dict) or set(obj) != keys:
            raise SpecError("a query JSON object has exactly the keys " + ", ".join(sorted(keys)))
        if obj["version"] != QUERY_VERSION:
            raise SpecError(f"unsupported query version {obj['version']!r}")
        try:
            tables = tuple(TableSchema.from_json(t) for t in json_list(obj["tables"]))
            acc = obj["accuracy"]
            group = obj["group_by"]
            group_ref = None if group is None else expr_from_json(group)
            if group_ref is not None and not isinstance(group_ref, ColRef):
                raise SpecError("group_by must be a column")
            field = acc["field"]
            return Query(
                tables=tables,
                partition=Partition(obj["partition"]),
                select=tuple(_agg_from(a) for a in json_list(obj["select"])),
                where=None if obj["where"] is None else predicate_from_json(obj["where"], 0),
                group_by=group_ref,
                min_group_size=obj["min_group_size"],
                reveal=Reveal.from_json(obj["reveal"]),
                accuracy=Accuracy(
                    acc["max_error"],
                    None if field is None else Field(field),
                    acc["fraction_bits"],
                    acc["min_spread"],
                ),
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, SpecError):
                raise
            raise SpecError(f"malformed query JSON: {exc}") from None


def _agg_json(a: Aggregate) -> dict[str, Any]:
    return {
        "func": str(a.func),
        "args": [expr_to_json(x) for x in a.args],
        "q": None if a.q is None else float(a.q),
        "edges": [float(e) for e in a.edges],
    }


def _agg_from(obj: Any) -> Aggregate:
    if not isinstance(obj, dict) or set(obj) != {"func", "args", "q", "edges"}:
        raise SpecError("an aggregate is {func, args, q, edges}")
    return Aggregate(
        Func(obj["func"]),
        tuple(expr_from_json(x) for x in json_list(obj["args"])),
        obj["q"],
        tuple(json_list(obj["edges"])),
    )
