"""`HETaskSpec`: what an HE outsourcing task computes, and its canonical hash.

The canonical JSON is `json.dumps(obj, sort_keys=True, separators=(",", ":"),
ensure_ascii=True)` of::

    {"columns": [...], "formula": <canonical formula>, "kind": "he", "limits": {...},
     "scale": <int>, "scheme": "zpaillier" | "ou" | "ckks", "version": 1}

and the spec hash is **SHA-256** (hashlib.sha256, not keccak) of those UTF-8/ASCII bytes.
The formula is stored in canonical form (`nodes.render`), so two spellings of the same
formula (spaces, redundant parentheses) give the same hash.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from compute.errors import SpecError
from compute.he.encoding import is_column_name
from compute.he.limits import DEFAULT_LIMITS, HELimits
from compute.he.nodes import Expr, render
from compute.he.parser import parse_formula
from compute.he.scheme import CKKS_SCALE, MAX_PAILLIER_SCALE, Scheme
from compute.he.typecheck import FormulaInfo, check_formula

SPEC_VERSION = 1


@dataclass(frozen=True, slots=True)
class HETaskSpec:
    """An HE outsourcing task.

    - `scheme`: zpaillier / ou (exact, additive) or ckks (approximate, multiplies).
    - `formula`: in the formula language (see docs/HE.md); stored canonicalized.
    - `columns`: the columns the owner encrypts and sends (the formula may use a subset).
    - `scale`: the encoding scale, required. Paillier: the fixed-point scale of real
      columns (1 = integer columns only; integer columns are always exact at scale 1).
      CKKS: must be 2^40, the scale of its fixed parameters.
    - `limits`: what nodes accept.
    """

    scheme: Scheme
    formula: str
    columns: tuple[str, ...]
    scale: int
    limits: HELimits = DEFAULT_LIMITS
    info: FormulaInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            scheme = Scheme(self.scheme)
        except ValueError:
            raise SpecError(f"unknown scheme {self.scheme!r} (known: zpaillier, ou, ckks)") from None
        object.__setattr__(self, "scheme", scheme)
        if not isinstance(self.limits, HELimits):
            raise SpecError("limits must be an HELimits")
        columns = tuple(self.columns)
        if not columns or len(columns) > self.limits.max_columns:
            raise SpecError(f"a spec names 1..{self.limits.max_columns} columns, got {len(columns)}")
        for name in columns:
            if not is_column_name(name):
                raise SpecError(f"column name {name!r} is not an identifier")
        if len(set(columns)) != len(columns):
            raise SpecError("duplicate column names")
        object.__setattr__(self, "columns", columns)
        if type(self.scale) is not int:
            raise SpecError("scale must be an integer")
        if scheme is Scheme.CKKS and self.scale != CKKS_SCALE:
            raise SpecError(f"ckks runs at scale 2^40 = {CKKS_SCALE}; got {self.scale}")
        if scheme.is_paillier and not 1 <= self.scale <= MAX_PAILLIER_SCALE:
            raise SpecError(f"Paillier fixed-point scale must be in [1, 10^18], got {self.scale}")
        expr = parse_formula(self.formula, self.limits)
        object.__setattr__(self, "info", check_formula(expr, columns, scheme))
        object.__setattr__(self, "formula", render(expr))

    @property
    def expr(self) -> Expr:
        """The parsed (canonical) formula."""
        return parse_formula(self.formula, self.limits)

    def to_json_obj(self) -> dict[str, Any]:
        """The spec as a JSON object (the input of the canonical encoding)."""
        return {
            "columns": list(self.columns),
            "formula": self.formula,
            "kind": "he",
            "limits": self.limits.to_json(),
            "scale": self.scale,
            "scheme": self.scheme.value,
            "version": SPEC_VERSION,
        }

    def canonical_json(self) -> bytes:
        """Canonical JSON bytes (sorted keys, no whitespace, ASCII)."""
        obj = self.to_json_obj()
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")

    def spec_hash(self) -> bytes:
        """SHA-256 of the canonical JSON: 32 bytes, the on-chain specHash."""
        return hashlib.sha256(self.canonical_json()).digest()


class _LimitsModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    max_formula_chars: int
    max_depth: int
    max_nodes: int
    max_weights: int
    max_columns: int
    max_rows: int
    max_context_bytes: int
    max_columns_bytes: int
    max_result_bytes: int


class _SpecModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    version: int
    kind: str
    scheme: str
    formula: str
    columns: list[str]
    scale: int
    limits: _LimitsModel


def spec_from_json(data: str | bytes) -> HETaskSpec:
    """Read a spec from JSON (any key order or spacing); `SpecError` if invalid."""
    if len(data) > 1024 * 1024:
        raise SpecError("spec JSON is over 1 MiB")
    try:
        model = _SpecModel.model_validate_json(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "spec"
        raise SpecError(f"invalid spec ({where}: {first['msg']})") from None
    if model.version != SPEC_VERSION or model.kind != "he":
        raise SpecError(f"unsupported spec kind/version {model.kind!r}/{model.version}")
    try:
        scheme = Scheme(model.scheme)
    except ValueError:
        raise SpecError(f"unknown scheme {model.scheme!r} (known: zpaillier, ou, ckks)") from None
    return HETaskSpec(
        scheme=scheme,
        formula=model.formula,
        columns=tuple(model.columns),
        scale=model.scale,
        limits=HELimits(**model.limits.model_dump()),
    )
