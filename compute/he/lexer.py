"""Tokenizer of the formula language (ASCII only, hand-written, no regular expressions)."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

from compute.errors import SpecError

TokenKind = Literal["num", "ident", "op", "(", ")", "[", "]", ",", "end"]

_DIGITS = frozenset("0123456789")
_IDENT_START = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_IDENT_REST = _IDENT_START | _DIGITS
_OPERATORS = frozenset("+-*/")
_PUNCTUATION = frozenset("()[],")
_SPACE = frozenset(" \t\r\n")

MAX_NUMBER_CHARS = 40
MAX_EXPONENT = 30
MAX_IDENT_CHARS = 64


class FormulaError(SpecError):
    """A formula does not parse or does not type-check; `pos` is a 0-based offset."""

    def __init__(self, message: str, pos: int) -> None:
        super().__init__(f"formula error at position {pos}: {message}")
        self.pos = pos


@dataclass(frozen=True, slots=True)
class Token:
    """One token; `number` is set for `num` tokens only."""

    kind: TokenKind
    text: str
    pos: int
    number: Fraction | None = None


def tokenize(source: str) -> list[Token]:
    """Split a formula into tokens, ending with an `end` token."""
    tokens: list[Token] = []
    i, n = 0, len(source)
    while i < n:
        ch = source[i]
        if ch in _SPACE:
            i += 1
        elif ch in _DIGITS:
            end = _scan_number(source, i)
            tokens.append(Token("num", source[i:end], i, _number_value(source[i:end], i)))
            i = end
        elif ch in _IDENT_START:
            end = i + 1
            while end < n and source[end] in _IDENT_REST:
                end += 1
            if end - i > MAX_IDENT_CHARS:
                raise FormulaError(f"name longer than {MAX_IDENT_CHARS} characters", i)
            tokens.append(Token("ident", source[i:end], i))
            i = end
        elif ch in _OPERATORS:
            tokens.append(Token("op", ch, i))
            i += 1
        elif ch in _PUNCTUATION:
            tokens.append(Token(ch, ch, i))  # type: ignore[arg-type]
            i += 1
        else:
            raise FormulaError(f"unexpected character {ch!r}", i)
    tokens.append(Token("end", "", n))
    return tokens


def _scan_number(source: str, start: int) -> int:
    """End offset of the decimal literal `digits [. digits] [e [+-] digits]` at start."""
    n = len(source)
    i = _skip_digits(source, start)
    if i < n and source[i] == ".":
        j = _skip_digits(source, i + 1)
        if j == i + 1:
            raise FormulaError("expected digits after the decimal point", i + 1)
        i = j
    if i < n and source[i] in "eE":
        j = i + 1
        if j < n and source[j] in "+-":
            j += 1
        k = _skip_digits(source, j)
        if k == j:
            raise FormulaError("expected digits in the exponent", j)
        i = k
    if i < n and (source[i] in _IDENT_START or source[i] == "."):
        raise FormulaError(f"unexpected character {source[i]!r} after a number", i)
    return i


def _skip_digits(source: str, i: int) -> int:
    while i < len(source) and source[i] in _DIGITS:
        i += 1
    return i


def _number_value(text: str, pos: int) -> Fraction:
    if len(text) > MAX_NUMBER_CHARS:
        raise FormulaError(f"number longer than {MAX_NUMBER_CHARS} characters", pos)
    mantissa, _, exponent = text.lower().partition("e")
    if exponent and abs(int(exponent)) > MAX_EXPONENT:
        raise FormulaError(f"exponent beyond +-{MAX_EXPONENT}", pos)
    value = Fraction(mantissa)
    if exponent:
        value *= Fraction(10) ** int(exponent)
    return value
