"""Recursive-descent parser of the formula language into the frozen AST of `nodes`.

Grammar (whitespace between tokens is free)::

    expr    := term (("+" | "-") term)*
    term    := unary (("*" | "/") unary)*
    unary   := ("-" | "+") unary | primary
    primary := NUMBER | NAME | NAME "(" args ")" | "(" expr ")"
    args    := arg ("," arg)*
    arg     := expr | "[" [signed ("," signed)*] "]"
    signed  := ["-" | "+"] NUMBER

No `eval`, no Python `ast`: user text only ever meets the tokenizer and this parser.
"""

from __future__ import annotations

from fractions import Fraction

from compute.he.lexer import FormulaError, Token, tokenize
from compute.he.limits import DEFAULT_LIMITS, HELimits
from compute.he.nodes import BinOp, Call, Col, Expr, Neg, Num, WeightList

# name -> number of arguments
FUNCTIONS: dict[str, int] = {"sum": 1, "mean": 1, "count": 1, "dot": 2}


def parse_formula(source: str, limits: HELimits = DEFAULT_LIMITS) -> Expr:
    """Parse `source` into an AST, or raise `FormulaError` (a `SpecError`) with a position."""
    if not isinstance(source, str):
        raise FormulaError("the formula must be a string", 0)
    if len(source) > limits.max_formula_chars:
        raise FormulaError(f"formula longer than {limits.max_formula_chars} characters", 0)
    return _Parser(tokenize(source), limits).parse()


class _Parser:
    def __init__(self, tokens: list[Token], limits: HELimits) -> None:
        self._tokens = tokens
        self._i = 0
        self._limits = limits
        self._depth = 0
        self._nodes = 0
        self._weights = 0

    # -- helpers -----------------------------------------------------------------------
    @property
    def _tok(self) -> Token:
        return self._tokens[self._i]

    def _advance(self) -> Token:
        tok = self._tokens[self._i]
        if self._i < len(self._tokens) - 1:  # the final `end` token is never consumed
            self._i += 1
        return tok

    def _expect(self, kind: str, what: str) -> Token:
        tok = self._tok
        if tok.kind != kind:
            raise FormulaError(f"expected {what}, found {_describe(tok)}", tok.pos)
        return self._advance()

    def _node(self, pos: int) -> None:
        self._nodes += 1
        if self._nodes > self._limits.max_nodes:
            raise FormulaError(f"formula has more than {self._limits.max_nodes} nodes", pos)

    def _enter(self, pos: int) -> None:
        self._depth += 1
        if self._depth > self._limits.max_depth:
            raise FormulaError(f"formula nested deeper than {self._limits.max_depth}", pos)

    # -- grammar: each rule returns (node, height of its subtree) -----------------------
    def parse(self) -> Expr:
        if self._tok.kind == "end":
            raise FormulaError("empty formula", self._tok.pos)
        expr, _ = self._expr()
        last = self._tokens[self._i]
        if last.kind != "end":
            raise FormulaError(f"unexpected {_describe(last)}", last.pos)
        return expr

    def _height(self, height: int, pos: int) -> int:
        if height > self._limits.max_depth:
            raise FormulaError(f"formula nested deeper than {self._limits.max_depth}", pos)
        return height

    def _expr(self) -> tuple[Expr, int]:
        self._enter(self._tok.pos)
        left, height = self._term()
        while self._tok.kind == "op" and self._tok.text in "+-":
            op = self._advance()
            right, right_height = self._term()
            self._node(op.pos)
            left = BinOp("+" if op.text == "+" else "-", left, right, op.pos)
            height = self._height(1 + max(height, right_height), op.pos)
        self._depth -= 1
        return left, height

    def _term(self) -> tuple[Expr, int]:
        left, height = self._unary()
        while self._tok.kind == "op" and self._tok.text in "*/":
            op = self._advance()
            right, right_height = self._unary()
            self._node(op.pos)
            left = BinOp("*" if op.text == "*" else "/", left, right, op.pos)
            height = self._height(1 + max(height, right_height), op.pos)
        return left, height

    def _unary(self) -> tuple[Expr, int]:
        tok = self._tok
        if tok.kind == "op" and tok.text in "+-":
            self._advance()
            self._enter(tok.pos)
            operand, height = self._unary()
            self._depth -= 1
            if tok.text == "+":
                return operand, height
            self._node(tok.pos)
            return Neg(operand, tok.pos), self._height(height + 1, tok.pos)
        return self._primary()

    def _primary(self) -> tuple[Expr, int]:
        tok = self._advance()
        if tok.kind == "num":
            assert tok.number is not None
            self._node(tok.pos)
            return Num(tok.number, tok.pos), 1
        if tok.kind == "ident":
            if self._tok.kind == "(":
                return self._call(tok)
            self._node(tok.pos)
            return Col(tok.text, tok.pos), 1
        if tok.kind == "(":
            inner = self._expr()
            self._expect(")", "')'")
            return inner
        if tok.kind == "[":
            raise FormulaError("a weight list is only allowed as the second argument of dot()", tok.pos)
        raise FormulaError(f"expected a number, a column or '(', found {_describe(tok)}", tok.pos)

    def _call(self, name: Token) -> tuple[Call, int]:
        if name.text not in FUNCTIONS:
            known = ", ".join(sorted(FUNCTIONS))
            raise FormulaError(f"unknown function {name.text!r} (known: {known})", name.pos)
        self._enter(name.pos)
        self._expect("(", "'('")
        args: list[Expr | WeightList] = []
        height = 1
        if self._tok.kind != ")":
            arg, height = self._argument(name.text, 0)
            args.append(arg)
            while self._tok.kind == ",":
                self._advance()
                arg, arg_height = self._argument(name.text, len(args))
                args.append(arg)
                height = max(height, arg_height)
        self._expect(")", "',' or ')'")
        arity = FUNCTIONS[name.text]
        if len(args) != arity:
            plural = "s" if arity > 1 else ""
            raise FormulaError(f"{name.text}() takes {arity} argument{plural}, got {len(args)}", name.pos)
        if name.text == "dot" and not isinstance(args[1], WeightList):
            raise FormulaError("dot() takes a weight list [w1, w2, ...] as its second argument", name.pos)
        self._depth -= 1
        self._node(name.pos)
        return Call(name.text, tuple(args), name.pos), self._height(height + 1, name.pos)

    def _argument(self, func: str, index: int) -> tuple[Expr | WeightList, int]:
        tok = self._tok
        if tok.kind == "[":
            if func != "dot" or index != 1:
                raise FormulaError("a weight list is only allowed as the second argument of dot()", tok.pos)
            return self._weights_list(), 1
        return self._expr()

    def _weights_list(self) -> WeightList:
        start = self._expect("[", "'['")
        values: list[Fraction] = []
        if self._tok.kind != "]":
            values.append(self._signed_number())
            while self._tok.kind == ",":
                self._advance()
                values.append(self._signed_number())
        self._expect("]", "',' or ']'")
        if not values:
            raise FormulaError("empty weight list", start.pos)
        self._node(start.pos)
        return WeightList(tuple(values), start.pos)

    def _signed_number(self) -> Fraction:
        sign = 1
        if self._tok.kind == "op" and self._tok.text in "+-":
            sign = -1 if self._advance().text == "-" else 1
        tok = self._expect("num", "a number")
        assert tok.number is not None
        self._weights += 1
        if self._weights > self._limits.max_weights:
            raise FormulaError(f"more than {self._limits.max_weights} weights", tok.pos)
        return sign * tok.number


def _describe(tok: Token) -> str:
    return "end of formula" if tok.kind == "end" else repr(tok.text)
