"""A small SQL subset compiled to a `Query` by a recursive-descent parser.

Grammar (keywords case-insensitive, `--` comments)::

    query     := SELECT agg ("," agg)* FROM NAME (JOIN NAME)* [WHERE pred] [GROUP BY column] [";"]
    agg       := NAME "(" [args] ")"       -- count(*), sum(x), quantile(x, 0.9), histogram(x, [0, 10, 20])
    pred      := conj (OR conj)*
    conj      := neg (AND neg)*
    neg       := NOT neg | "(" pred ")" | cmp
    cmp       := expr OP literal | literal OP expr      -- OP: < <= > >= = == != <>
    expr      := term (("+" | "-") term)*
    term      := unary (("*" | "/") unary)*
    unary     := "-" unary | NUMBER | column | "(" expr ")"
    column    := NAME ["." NAME]
    literal   := ["-"] NUMBER | 'string'

`FROM a` is a horizontal query over the providers of table a; `FROM a JOIN b` is vertical:
the rows of a and b are already aligned (a PSI join ran beforehand), so there is no ON.
Every error is a `SqlError` (a SpecError) with the offset of the offending token, raised
before any MPC starts. User text never meets `eval` or Python's parser.
"""

from __future__ import annotations

from collections.abc import Sequence

from compute.errors import SpecError
from compute.mpc.expressions import ColRef, Predicate
from compute.mpc.limits import MAX_AGGREGATES, MAX_GROUPS
from compute.mpc.query import Accuracy, Aggregate, Func, Partition, Query, Reveal
from compute.mpc.schema import TableSchema
from compute.mpc.sql_expr import RESERVED, ExprParser, describe
from compute.mpc.sql_lexer import SqlError, Token, tokenize

FUNCTIONS: dict[str, Func] = {
    "count": Func.COUNT,
    "sum": Func.SUM,
    "avg": Func.MEAN,
    "mean": Func.MEAN,
    "var": Func.VAR_SAMP,
    "variance": Func.VAR_SAMP,
    "var_samp": Func.VAR_SAMP,
    "var_pop": Func.VAR_POP,
    "std": Func.STD_SAMP,
    "stddev": Func.STD_SAMP,
    "stddev_samp": Func.STD_SAMP,
    "stddev_pop": Func.STD_POP,
    "min": Func.MIN,
    "max": Func.MAX,
    "median": Func.QUANTILE,
    "quantile": Func.QUANTILE,
    "histogram": Func.HISTOGRAM,
    "corr": Func.CORR,
    "weighted_sum": Func.WEIGHTED_SUM,
}


def parse_sql(
    sql: str,
    tables: Sequence[TableSchema],
    *,
    min_group_size: int,
    reveal: Reveal,
    accuracy: Accuracy,
) -> Query:
    """Compile `sql` against the declared `tables`; the privacy parameters are required."""
    catalog: dict[str, TableSchema] = {}
    for table in tables:
        if not isinstance(table, TableSchema):
            raise SpecError("tables must be TableSchema objects")
        catalog[table.name] = table
    return _Parser(tokenize(sql), catalog).parse(min_group_size, reveal, accuracy)


class _Parser(ExprParser):
    # -- statement -------------------------------------------------------------------------
    def parse(self, min_group_size: int, reveal: Reveal, accuracy: Accuracy) -> Query:
        self._keyword("SELECT")
        select_start = self._i
        self._skip_select_list()  # the select list resolves its columns once FROM is known
        self._from_clause()
        after_from = self._i
        self._i = select_start
        select = self._select_list()
        self._i = after_from
        where: Predicate | None = None
        if self._tok.is_word("WHERE"):
            self._advance()
            where = self._pred(0)
        group: ColRef | None = None
        if self._tok.is_word("GROUP"):
            group = self._group_by()
        if self._at_punct(";"):
            self._advance()
        if self._tok.kind != "end":
            raise SqlError(f"unexpected {describe(self._tok)}", self._tok.pos)
        partition = Partition.HORIZONTAL if len(self._from) == 1 else Partition.VERTICAL
        return Query(
            tables=tuple(self._from),
            partition=partition,
            select=select,
            where=where,
            group_by=group,
            min_group_size=min_group_size,
            reveal=reveal,
            accuracy=accuracy,
        )

    def _skip_select_list(self) -> None:
        depth = 0
        start = self._tok
        while True:
            tok = self._tok
            if tok.kind == "end":
                raise SqlError("unclosed '(' or '['" if depth > 0 else "expected FROM", tok.pos)
            if depth == 0 and tok.is_word("FROM"):
                if tok is start:
                    raise SqlError("expected an aggregate after SELECT", tok.pos)
                return
            if tok.kind == "punct" and tok.text in "([":
                depth += 1
            elif tok.kind == "punct" and tok.text in ")]":
                depth -= 1
            self._advance()

    def _from_clause(self) -> None:
        self._keyword("FROM")
        self._from.append(self._table())
        while self._tok.is_word("JOIN"):
            self._advance()
            self._from.append(self._table())
            if self._tok.is_word("ON"):
                raise SqlError(
                    "JOIN has no ON: the rows of joined tables are aligned by a PSI join beforehand",
                    self._tok.pos,
                )
        if self._at_punct(","):
            raise SqlError("write FROM a JOIN b for row-aligned tables", self._tok.pos)

    def _table(self) -> TableSchema:
        tok = self._tok
        if tok.kind != "ident" or tok.text.upper() in RESERVED:
            raise SqlError(f"expected a table name, found {describe(tok)}", tok.pos)
        self._advance()
        if tok.text not in self._catalog:
            known = ", ".join(sorted(self._catalog)) or "none"
            raise SqlError(f"unknown table {tok.text!r} (declared: {known})", tok.pos)
        if any(t.name == tok.text for t in self._from):
            raise SqlError(f"table {tok.text!r} appears twice", tok.pos)
        return self._catalog[tok.text]

    def _group_by(self) -> ColRef:
        self._keyword("GROUP")
        self._keyword("BY")
        tok = self._tok
        ref = self._column()
        col = self._schema(ref.table).column(ref.column)
        if col.is_number:
            raise SqlError(f"GROUP BY {ref.table}.{ref.column}: only a category column can group", tok.pos)
        if len(col.categories) > MAX_GROUPS:
            raise SqlError(
                f"GROUP BY {ref.table}.{ref.column}: {len(col.categories)} groups, "
                f"more than the limit {MAX_GROUPS}",
                tok.pos,
            )
        if self._at_punct(","):
            raise SqlError("GROUP BY takes one column", self._tok.pos)
        return ref

    # -- SELECT ----------------------------------------------------------------------------
    def _select_list(self) -> tuple[Aggregate, ...]:
        aggs = [self._aggregate()]
        while self._at_punct(","):
            self._advance()
            aggs.append(self._aggregate())
            if len(aggs) > MAX_AGGREGATES:
                raise SqlError(f"more than {MAX_AGGREGATES} aggregates", self._tok.pos)
        if not self._tok.is_word("FROM"):
            if self._tok.is_word("AS"):
                raise SqlError(
                    "aliases (AS) are not supported: outputs are named by their text", self._tok.pos
                )
            raise SqlError(f"expected ',' or FROM, found {describe(self._tok)}", self._tok.pos)
        return tuple(aggs)

    def _aggregate(self) -> Aggregate:
        tok = self._tok
        if tok.kind != "ident":
            raise SqlError(f"expected an aggregate function, found {describe(tok)}", tok.pos)
        name = tok.text.lower()
        if name not in FUNCTIONS:
            if self._tokens[self._i + 1].kind == "punct" and self._tokens[self._i + 1].text == "(":
                known = ", ".join(sorted(FUNCTIONS))
                raise SqlError(f"unsupported function {tok.text!r} (supported: {known})", tok.pos)
            raise SqlError(
                f"{tok.text!r} is not an aggregate: every output must aggregate rows (e.g. sum({tok.text}))",
                tok.pos,
            )
        self._advance()
        self._punct("(")
        func = FUNCTIONS[name]
        try:
            if func is Func.COUNT:
                return self._count_args(tok)
            if func is Func.HISTOGRAM:
                arg = self._expr(0)
                self._punct(",")
                edges = self._edge_list()
                self._punct(")")
                return Aggregate(func, (arg,), edges=edges)
            args = [self._expr(0)]
            level: float | None = 0.5 if name == "median" else None
            if func is Func.QUANTILE and name == "quantile":
                self._punct(",")
                level = self._signed_number()
            while self._at_punct(","):
                self._advance()
                args.append(self._expr(0))
            self._punct(")")
            return Aggregate(func, tuple(args), q=level)
        except SqlError:
            raise
        except SpecError as exc:
            raise SqlError(str(exc), tok.pos) from None

    def _count_args(self, name: Token) -> Aggregate:
        if self._tok.kind == "op" and self._tok.text == "*":
            self._advance()
        else:
            self._expr(0)  # count(x) counts rows too: there are no NULLs
        self._punct(")")
        return Aggregate(Func.COUNT)

    def _edge_list(self) -> tuple[float, ...]:
        self._punct("[")
        edges = [self._signed_number()]
        while self._at_punct(","):
            self._advance()
            edges.append(self._signed_number())
        self._punct("]")
        return tuple(edges)
