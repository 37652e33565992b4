"""Declared table schemas: what a provider publishes about its columns, never the data.

A number column declares a closed range `[lo, hi]` (and whether it holds integers); a
category column declares its categories. The engine derives every numeric parameter and
every error bound from these declarations, and a provider's rows are checked against them
before a single share leaves its node.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from compute.errors import SpecError
from compute.mpc.limits import MAX_ABS_VALUE, MAX_CATEGORIES, MAX_COLUMNS, MAX_NAME_CHARS

_IDENT_START = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_IDENT_REST = _IDENT_START | frozenset("0123456789")


def is_identifier(name: object) -> bool:
    """True for an ASCII identifier of at most MAX_NAME_CHARS characters."""
    return (
        isinstance(name, str)
        and 0 < len(name) <= MAX_NAME_CHARS
        and name[0] in _IDENT_START
        and all(ch in _IDENT_REST for ch in name)
    )


class ColumnKind(StrEnum):
    """A number (range-declared) or a category (categories declared)."""

    NUMBER = "number"
    CATEGORY = "category"


@dataclass(frozen=True)
class Column:
    """One declared column. Build with `Column.number(...)` or `Column.category(...)`."""

    name: str
    kind: ColumnKind
    lo: float = 0.0
    hi: float = 0.0
    integer: bool = False
    categories: tuple[str, ...] = ()

    @staticmethod
    def number(name: str, lo: float, hi: float, *, integer: bool = False) -> Column:
        """A number column whose values all lie in [lo, hi] (integers when `integer`)."""
        return Column(name, ColumnKind.NUMBER, float(lo), float(hi), integer, ())

    @staticmethod
    def category(name: str, categories: tuple[str, ...] | list[str]) -> Column:
        """A category column whose values are among `categories` (order is the group order)."""
        return Column(name, ColumnKind.CATEGORY, 0.0, 0.0, False, tuple(categories))

    def __post_init__(self) -> None:
        if not is_identifier(self.name):
            raise SpecError(
                f"column name {self.name!r} is not an identifier of at most {MAX_NAME_CHARS} chars"
            )
        try:
            object.__setattr__(self, "kind", ColumnKind(self.kind))
        except ValueError:
            raise SpecError(f"column {self.name}: unknown kind {self.kind!r}") from None
        if self.kind is ColumnKind.NUMBER:
            self._check_number()
        else:
            self._check_category()

    def _check_number(self) -> None:
        for bound in (self.lo, self.hi):
            if isinstance(bound, bool) or not isinstance(bound, int | float) or not math.isfinite(bound):
                raise SpecError(f"column {self.name}: lo and hi must be finite numbers")
        if not -MAX_ABS_VALUE <= self.lo <= self.hi <= MAX_ABS_VALUE:
            raise SpecError(f"column {self.name}: need -2^40 <= lo <= hi <= 2^40, got [{self.lo}, {self.hi}]")
        if self.integer and (self.lo != math.floor(self.lo) or self.hi != math.floor(self.hi)):
            raise SpecError(f"column {self.name}: an integer column needs integer bounds")
        if self.categories:
            raise SpecError(f"column {self.name}: a number column has no categories")
        object.__setattr__(self, "lo", float(self.lo))
        object.__setattr__(self, "hi", float(self.hi))

    def _check_category(self) -> None:
        cats = tuple(self.categories)
        if not 1 <= len(cats) <= MAX_CATEGORIES:
            raise SpecError(f"column {self.name}: declare 1..{MAX_CATEGORIES} categories")
        for cat in cats:
            if not isinstance(cat, str) or not 0 < len(cat) <= MAX_NAME_CHARS or not cat.isprintable():
                raise SpecError(f"column {self.name}: categories are printable strings of 1..64 chars")
        if len(set(cats)) != len(cats):
            raise SpecError(f"column {self.name}: duplicate categories")
        object.__setattr__(self, "categories", cats)
        if self.lo or self.hi or self.integer:
            raise SpecError(f"column {self.name}: a category column has no range")

    @property
    def is_number(self) -> bool:
        """True for a number column."""
        return self.kind is ColumnKind.NUMBER

    def to_json(self) -> dict[str, Any]:
        """The declaration as a JSON object."""
        if self.is_number:
            return {
                "name": self.name,
                "kind": "number",
                "lo": self.lo,
                "hi": self.hi,
                "integer": self.integer,
            }
        return {"name": self.name, "kind": "category", "categories": list(self.categories)}

    @staticmethod
    def from_json(obj: Any) -> Column:
        """Inverse of `to_json`."""
        if not isinstance(obj, dict):
            raise SpecError("a column is a JSON object")
        kind = obj.get("kind")
        if kind == "number" and set(obj) == {"name", "kind", "lo", "hi", "integer"}:
            if not isinstance(obj["integer"], bool):
                raise SpecError("column 'integer' must be a boolean")
            return Column.number(obj["name"], obj["lo"], obj["hi"], integer=obj["integer"])
        if kind == "category" and set(obj) == {"name", "kind", "categories"}:
            if not isinstance(obj["categories"], list):
                raise SpecError("column 'categories' must be a list")
            return Column.category(obj["name"], tuple(obj["categories"]))
        raise SpecError(f"malformed column declaration (keys {sorted(obj)})")


@dataclass(frozen=True)
class TableSchema:
    """A logical table: its name and declared columns (the same for every provider part)."""

    name: str
    columns: tuple[Column, ...]

    def __post_init__(self) -> None:
        if not is_identifier(self.name):
            raise SpecError(f"table name {self.name!r} is not an identifier")
        cols = tuple(self.columns)
        if not 1 <= len(cols) <= MAX_COLUMNS or not all(isinstance(c, Column) for c in cols):
            raise SpecError(f"table {self.name}: declare 1..{MAX_COLUMNS} Column objects")
        names = [c.name for c in cols]
        if len(set(names)) != len(names):
            raise SpecError(f"table {self.name}: duplicate column names")
        object.__setattr__(self, "columns", cols)

    def column(self, name: str) -> Column:
        """The declared column `name`, or SpecError."""
        for col in self.columns:
            if col.name == name:
                return col
        raise SpecError(f"table {self.name} has no column {name!r}")

    def has(self, name: str) -> bool:
        """True when the table declares column `name`."""
        return any(c.name == name for c in self.columns)

    def to_json(self) -> dict[str, Any]:
        """The schema as a JSON object."""
        return {"name": self.name, "columns": [c.to_json() for c in self.columns]}

    @staticmethod
    def from_json(obj: Any) -> TableSchema:
        """Inverse of `to_json`."""
        if (
            not isinstance(obj, dict)
            or set(obj) != {"name", "columns"}
            or not isinstance(obj["columns"], list)
        ):
            raise SpecError("a table schema is {name, columns: [...]}")
        return TableSchema(obj["name"], tuple(Column.from_json(c) for c in obj["columns"]))
