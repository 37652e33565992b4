"""The expression and predicate half of the SQL parser (`sql.py` has the statement half).

    pred    := conj (OR conj)*
    conj    := neg (AND neg)*
    neg     := NOT neg | "(" pred ")" | cmp
    cmp     := expr OP literal | literal OP expr      -- OP: < <= > >= = == != <>
    expr    := term (("+" | "-") term)*
    term    := unary (("*" | "/") unary)*
    unary   := "-" unary | NUMBER | column | "(" expr ")"
    column  := NAME ["." NAME]
    literal := ["-"] NUMBER | 'string'

Columns resolve against the FROM tables as they are parsed, so every semantic error carries
the position of its token.
"""

from __future__ import annotations

from compute.errors import SpecError
from compute.mpc.expressions import And, Arith, Cmp, ColRef, Compare, Const, Expr, Neg, Not, Or, Predicate
from compute.mpc.limits import MAX_AGGREGATES, MAX_DEPTH, MAX_EXPR_NODES
from compute.mpc.schema import TableSchema
from compute.mpc.sql_lexer import SqlError, Token

FLIPPED = {Cmp.LT: Cmp.GT, Cmp.LE: Cmp.GE, Cmp.GT: Cmp.LT, Cmp.GE: Cmp.LE, Cmp.EQ: Cmp.EQ, Cmp.NE: Cmp.NE}
RESERVED = frozenset({"SELECT", "FROM", "WHERE", "GROUP", "BY", "JOIN", "AND", "OR", "NOT", "AS", "ON"})


class ExprParser:
    """Token cursor, WHERE predicates, value expressions and column resolution."""

    def __init__(self, tokens: list[Token], catalog: dict[str, TableSchema]) -> None:
        self._tokens = tokens
        self._i = 0
        self._catalog = catalog
        self._from: list[TableSchema] = []
        self._nodes = 0

    # -- helpers -------------------------------------------------------------------------
    @property
    def _tok(self) -> Token:
        return self._tokens[self._i]

    def _advance(self) -> Token:
        tok = self._tokens[self._i]
        if tok.kind != "end":
            self._i += 1
        return tok

    def _keyword(self, word: str) -> Token:
        tok = self._tok
        if not tok.is_word(word):
            raise SqlError(f"expected {word}, found {describe(tok)}", tok.pos)
        return self._advance()

    def _punct(self, ch: str) -> Token:
        tok = self._tok
        if tok.kind != "punct" or tok.text != ch:
            raise SqlError(f"expected {ch!r}, found {describe(tok)}", tok.pos)
        return self._advance()

    def _at_punct(self, ch: str) -> bool:
        return self._tok.kind == "punct" and self._tok.text == ch

    def _count(self, pos: int, depth: int) -> None:
        self._nodes += 1
        if self._nodes > MAX_EXPR_NODES * (MAX_AGGREGATES + 1):
            raise SqlError("query too large", pos)
        if depth > MAX_DEPTH:
            raise SqlError(f"nested deeper than {MAX_DEPTH}", pos)

    def _signed_number(self) -> float:
        sign = 1.0
        if self._tok.kind == "op" and self._tok.text == "-":
            self._advance()
            sign = -1.0
        tok = self._tok
        if tok.kind != "num":
            raise SqlError(f"expected a number, found {describe(tok)}", tok.pos)
        self._advance()
        assert isinstance(tok.value, float)
        return sign * tok.value

    # -- WHERE -----------------------------------------------------------------------------
    def _pred(self, depth: int) -> Predicate:
        self._count(self._tok.pos, depth)
        terms = [self._conj(depth + 1)]
        while self._tok.is_word("OR"):
            self._advance()
            terms.append(self._conj(depth + 1))
        return terms[0] if len(terms) == 1 else Or(tuple(terms))

    def _conj(self, depth: int) -> Predicate:
        terms = [self._neg(depth)]
        while self._tok.is_word("AND"):
            self._advance()
            terms.append(self._neg(depth))
        return terms[0] if len(terms) == 1 else And(tuple(terms))

    def _neg(self, depth: int) -> Predicate:
        self._count(self._tok.pos, depth)
        if self._tok.is_word("NOT"):
            self._advance()
            return Not(self._neg(depth + 1))
        if self._at_punct("("):
            saved = self._i
            self._advance()
            try:
                inner = self._pred(depth + 1)
                self._punct(")")
            except SqlError:
                inner = None
            if inner is not None and not (self._tok.kind == "op" and self._tok.text in _CMP_OPS):
                return inner
            self._i = saved  # "(a + b) > 3": the parenthesis opened an arithmetic expression
        return self._comparison(depth)

    def _comparison(self, depth: int) -> Predicate:
        start = self._tok
        if start.kind == "str" or self._literal_ahead():
            value = self._literal()
            op_tok = self._cmp_op()
            expr_tok = self._tok
            expr = self._expr(depth)
            return self._compare(expr, FLIPPED[Cmp(op_tok.text)], value, expr_tok)
        expr_tok = self._tok
        category = self._category_column()
        expr = category if category is not None else self._expr(depth)
        op_tok = self._cmp_op()
        if not (self._tok.kind in ("num", "str") or (self._tok.kind == "op" and self._tok.text == "-")):
            raise SqlError(f"compare with a constant, found {describe(self._tok)}", self._tok.pos)
        value = self._literal()
        return self._compare(expr, Cmp(op_tok.text), value, expr_tok)

    def _category_column(self) -> ColRef | None:
        """A category column directly followed by a comparison operator, else None (no move)."""
        if self._tok.kind != "ident" or self._tok.text.upper() in RESERVED:
            return None
        saved = self._i
        try:
            ref = self._column()
        except SqlError:
            self._i = saved
            return None
        after = self._tokens[self._i]
        is_cmp = after.kind == "op" and after.text in _CMP_OPS
        if is_cmp and not self._schema(ref.table).column(ref.column).is_number:
            return ref
        self._i = saved
        return None

    def _literal_ahead(self) -> bool:
        """A number (optionally negative) directly followed by a comparison operator."""
        j = self._i
        if self._tokens[j].kind == "op" and self._tokens[j].text == "-":
            j += 1
        return (
            self._tokens[j].kind == "num"
            and self._tokens[j + 1].kind == "op"
            and self._tokens[j + 1].text in _CMP_OPS
        )

    def _literal(self) -> float | str:
        tok = self._tok
        if tok.kind == "str":
            self._advance()
            assert isinstance(tok.value, str)
            return tok.value
        return self._signed_number()

    def _cmp_op(self) -> Token:
        tok = self._tok
        if tok.kind != "op" or tok.text not in _CMP_OPS:
            raise SqlError(f"expected a comparison (<, <=, >, >=, =, !=), found {describe(tok)}", tok.pos)
        return self._advance()

    def _compare(self, expr: Expr, op: Cmp, value: float | str, at: Token) -> Compare:
        if isinstance(expr, ColRef):
            col = self._schema(expr.table).column(expr.column)
            if not col.is_number:
                if op not in (Cmp.EQ, Cmp.NE) or not isinstance(value, str):
                    raise SqlError(
                        f"{expr.table}.{expr.column} is a category column: "
                        "compare it with = or != 'category'",
                        at.pos,
                    )
                if value not in col.categories:
                    raise SqlError(
                        f"{expr.table}.{expr.column} has no category {value!r} "
                        f"(declared: {', '.join(col.categories)})",
                        at.pos,
                    )
                return Compare(expr, op, value)
        if isinstance(value, str):
            raise SqlError("a number expression is compared with a number, not a string", at.pos)
        return Compare(expr, op, value)

    # -- value expressions -------------------------------------------------------------------
    def _expr(self, depth: int) -> Expr:
        self._count(self._tok.pos, depth)
        left = self._term(depth + 1)
        while self._tok.kind == "op" and self._tok.text in "+-":
            op = self._advance()
            right = self._term(depth + 1)
            left = Arith(op.text, left, right)
        return left

    def _term(self, depth: int) -> Expr:
        left = self._unary(depth)
        while self._tok.kind == "op" and self._tok.text in "*/":
            op = self._advance()
            right = self._unary(depth)
            if op.text == "/" and not (isinstance(right, Const) and right.value != 0):
                raise SqlError("division only by a nonzero constant", op.pos)
            left = Arith(op.text, left, right)
        return left

    def _unary(self, depth: int) -> Expr:
        tok = self._tok
        self._count(tok.pos, depth)
        if tok.kind == "op" and tok.text == "-":
            self._advance()
            operand = self._unary(depth + 1)
            if isinstance(operand, Const):
                return Const(-operand.value)
            return Neg(operand)
        if tok.kind == "num":
            self._advance()
            assert isinstance(tok.value, float)
            return Const(tok.value)
        if tok.kind == "ident":
            ref = self._column()
            if not self._schema(ref.table).column(ref.column).is_number:
                raise SqlError(
                    f"{ref.table}.{ref.column} is a category column: "
                    "it can group or be compared with = 'category'",
                    tok.pos,
                )
            return ref
        if tok.kind == "punct" and tok.text == "(":
            self._advance()
            inner = self._expr(depth + 1)
            self._punct(")")
            return inner
        if tok.kind == "str":
            raise SqlError("strings only appear on the right of = or != with a category column", tok.pos)
        raise SqlError(f"expected a number, a column or '(', found {describe(tok)}", tok.pos)

    def _column(self) -> ColRef:
        tok = self._tok
        if tok.kind != "ident" or tok.text.upper() in RESERVED:
            raise SqlError(f"expected a column, found {describe(tok)}", tok.pos)
        self._advance()
        if self._at_punct("."):
            self._advance()
            name_tok = self._tok
            if name_tok.kind != "ident":
                raise SqlError(f"expected a column name after '.', found {describe(name_tok)}", name_tok.pos)
            self._advance()
            if not any(t.name == tok.text for t in self._from):
                raise SqlError(f"table {tok.text!r} is not in FROM", tok.pos)
            table = self._schema(tok.text)
            if not table.has(name_tok.text):
                raise SqlError(f"unknown column {tok.text}.{name_tok.text}", name_tok.pos)
            return ColRef(table.name, name_tok.text)
        owners = [t for t in self._from if t.has(tok.text)]
        if not owners:
            raise SqlError(f"unknown column {tok.text!r}", tok.pos)
        if len(owners) > 1:
            names = " and ".join(t.name for t in owners)
            raise SqlError(f"column {tok.text!r} is ambiguous ({names}): qualify it as table.column", tok.pos)
        return ColRef(owners[0].name, tok.text)

    def _schema(self, name: str) -> TableSchema:
        for t in self._from:
            if t.name == name:
                return t
        raise SpecError(f"unknown table {name!r}")  # pragma: no cover - resolved by _column


_CMP_OPS = frozenset(str(c) for c in Cmp) | {"<>"}


def describe(tok: Token) -> str:
    """How an error message names a token."""
    if tok.kind == "end":
        return "end of query"
    return repr(tok.text)
