"""Tokenizer of the SQL subset (hand-written, ASCII, no regular expressions, no eval)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from compute.errors import SpecError
from compute.mpc.limits import MAX_NAME_CHARS, MAX_SQL_CHARS

TokenKind = Literal["ident", "num", "str", "op", "punct", "end"]

_DIGITS = frozenset("0123456789")
_IDENT_START = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_IDENT_REST = _IDENT_START | _DIGITS
_SPACE = frozenset(" \t\r\n")
_PUNCT = frozenset("(),.[];")
_TWO_CHAR_OPS = ("<=", ">=", "==", "!=", "<>")
_ONE_CHAR_OPS = frozenset("<>=+-*/")
MAX_NUMBER_CHARS = 40


class SqlError(SpecError):
    """The query text does not parse or does not resolve; `pos` is a 0-based offset."""

    def __init__(self, message: str, pos: int) -> None:
        super().__init__(f"SQL error at position {pos}: {message}")
        self.message = message
        self.pos = pos

    def __reduce__(self) -> tuple[type[SqlError], tuple[str, int]]:
        return (SqlError, (self.message, self.pos))


@dataclass(frozen=True, slots=True)
class Token:
    """One token. `text` of an ident keeps its case; `value` is set for numbers and strings."""

    kind: TokenKind
    text: str
    pos: int
    value: float | str | None = None

    def is_word(self, word: str) -> bool:
        """True for the (case-insensitive) keyword `word`."""
        return self.kind == "ident" and self.text.upper() == word


def tokenize(source: str) -> list[Token]:
    """Split a query into tokens, ending with an `end` token."""
    if not isinstance(source, str):
        raise SqlError("the query must be a string", 0)
    if len(source) > MAX_SQL_CHARS:
        raise SqlError(f"query longer than {MAX_SQL_CHARS} characters", 0)
    tokens: list[Token] = []
    i, n = 0, len(source)
    while i < n:
        ch = source[i]
        if ch in _SPACE:
            i += 1
        elif ch == "-" and source.startswith("--", i):
            while i < n and source[i] != "\n":  # a comment runs to the end of the line
                i += 1
        elif ch in _DIGITS or (ch == "." and i + 1 < n and source[i + 1] in _DIGITS):
            end = _scan_number(source, i)
            value = float(source[i:end])
            if not math.isfinite(value):
                raise SqlError("number out of range", i)
            tokens.append(Token("num", source[i:end], i, value))
            i = end
        elif ch in _IDENT_START:
            end = i + 1
            while end < n and source[end] in _IDENT_REST:
                end += 1
            if end - i > MAX_NAME_CHARS:
                raise SqlError(f"name longer than {MAX_NAME_CHARS} characters", i)
            tokens.append(Token("ident", source[i:end], i))
            i = end
        elif ch == "'":
            text, end = _scan_string(source, i)
            tokens.append(Token("str", source[i:end], i, text))
            i = end
        elif source[i : i + 2] in _TWO_CHAR_OPS:
            op = source[i : i + 2]
            tokens.append(Token("op", {"<>": "!=", "==": "=="}.get(op, op), i))
            i += 2
        elif ch in _ONE_CHAR_OPS:
            tokens.append(Token("op", "==" if ch == "=" else ch, i))
            i += 1
        elif ch in _PUNCT:
            tokens.append(Token("punct", ch, i))
            i += 1
        else:
            raise SqlError(f"unexpected character {ch!r}", i)
    tokens.append(Token("end", "", n))
    return tokens


def _scan_number(source: str, start: int) -> int:
    """End of `digits [. digits] [e [+-] digits]` (or `. digits ...`) starting at `start`."""
    n = len(source)
    i = _skip_digits(source, start)
    if i < n and source[i] == ".":
        i = _skip_digits(source, i + 1)
    if i < n and source[i] in "eE":
        j = i + 1
        if j < n and source[j] in "+-":
            j += 1
        k = _skip_digits(source, j)
        if k == j:
            raise SqlError("expected digits in the exponent", j)
        i = k
    if i < n and source[i] in _IDENT_START:
        raise SqlError(f"unexpected character {source[i]!r} after a number", i)
    if i - start > MAX_NUMBER_CHARS:
        raise SqlError(f"number longer than {MAX_NUMBER_CHARS} characters", start)
    return i


def _skip_digits(source: str, i: int) -> int:
    while i < len(source) and source[i] in _DIGITS:
        i += 1
    return i


def _scan_string(source: str, start: int) -> tuple[str, int]:
    """A single-quoted string ('' is a quote inside it); returns (text, end offset)."""
    out: list[str] = []
    i = start + 1
    while i < len(source):
        ch = source[i]
        if ch == "'":
            if source.startswith("''", i):
                out.append("'")
                i += 2
                continue
            return "".join(out), i + 1
        out.append(ch)
        i += 1
    raise SqlError("unterminated string", start)
