"""The public output of a statistics task for an oracle consumer: which aggregates of the
`QueryResult` are published, and their ABI encoding.

Each published value is named by its aggregate label as `compute.mpc` prints it
(``mean(income)``, ``count(*)``, ``quantile(age, 0.9)``); with GROUP BY, one group's value is
``label@group`` (``mean(income)@north``; labels never contain ``@``, so the group is
everything after the first one). Without GROUP BY the only group is ``*`` and ``label`` alone
names it. Every value is scaled by ``10**decimals``, rounded half to even from the exact binary
value of the float (so every node computes the same integer from the same result), and the
integers are ABI-encoded as one tuple of the declared types:
``abi.encode(uint256 a, int256 b, ...)``, what ``abi.decode(publicOutput, (uint256, int256))``
reads in Solidity.
"""

from __future__ import annotations

import math
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from typing import Annotated, Literal

from eth_abi.abi import decode, encode
from eth_abi.exceptions import DecodingError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from compute.errors import SpecError
from compute.mpc.result import QueryResult

__all__ = [
    "GROUP_SEPARATOR",
    "MAX_PUBLIC_VALUES",
    "OutputType",
    "PublicOutputSpec",
    "decode_public_output",
    "encode_public_output",
    "output_values",
    "parse_output_spec",
]

GROUP_SEPARATOR = "@"
MAX_PUBLIC_VALUES = 32
NO_GROUP = "*"

OutputType = Literal["uint256", "int256"]
_RANGES: dict[str, tuple[int, int]] = {
    "uint256": (0, 2**256 - 1),
    "int256": (-(2**255), 2**255 - 1),
}


class PublicOutputSpec(BaseModel):
    """Which aggregates a consumer receives, as which ABI types, with how many decimals.

    Every field is required: what is published is a privacy decision.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    values: Annotated[list[str], Field(min_length=1, max_length=MAX_PUBLIC_VALUES)]
    types: Annotated[list[OutputType], Field(min_length=1, max_length=MAX_PUBLIC_VALUES)]
    decimals: Annotated[int, Field(ge=0, le=18, strict=True)]

    @model_validator(mode="after")
    def _consistent(self) -> PublicOutputSpec:
        if len(self.values) != len(self.types):
            raise ValueError(f"{len(self.values)} values but {len(self.types)} types")
        for name in self.values:
            label, _, group = name.partition(GROUP_SEPARATOR)
            if not label.strip() or (GROUP_SEPARATOR in name and not group):
                raise ValueError(f"bad value name {name!r}: use 'label' or 'label@group'")
        if len(set(self.values)) != len(self.values):
            raise ValueError("a value is named twice")
        return self

    def addresses(self) -> list[tuple[str, str | None]]:
        """(label, group or None) of every value, in output order."""
        out: list[tuple[str, str | None]] = []
        for name in self.values:
            label, sep, group = name.partition(GROUP_SEPARATOR)
            out.append((label, group if sep else None))
        return out


def parse_output_spec(raw: object) -> PublicOutputSpec:
    """Validate a JSON-shaped output spec; `SpecError` with pydantic's reasons otherwise."""
    try:
        return PublicOutputSpec.model_validate(raw)
    except ValidationError as exc:
        reasons = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'spec'}: {e['msg']}" for e in exc.errors())
        raise SpecError(f"invalid public output spec: {reasons}") from None


def _lookup(result: QueryResult, label: str, group: str | None) -> float | int:
    try:
        column = result.column(label)
    except KeyError:
        known = ", ".join(a.label for a in result.aggregates)
        raise SpecError(f"the result has no aggregate {label!r} (it has: {known})") from None
    if group is None:
        if result.groups != (NO_GROUP,):
            raise SpecError(
                f"{label!r} is grouped; name one group as '{label}@<group>' "
                f"(groups: {', '.join(result.groups)})"
            )
        group = NO_GROUP
    if group not in result.groups:
        raise SpecError(f"the result has no group {group!r} (groups: {', '.join(result.groups)})")
    value = column.values[result.groups.index(group)]
    if isinstance(value, tuple):
        raise SpecError(f"{label!r} is a histogram; only single numbers can be published")
    return value


def _scaled(name: str, value: float | int, decimals: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SpecError(f"{name}: not a number ({type(value).__name__})")
    if isinstance(value, float) and not math.isfinite(value):
        raise SpecError(f"{name}: the value is not finite")
    with localcontext() as ctx:
        ctx.prec = 800  # exact: a double's decimal expansion has at most 767 significant digits
        exact = Decimal(value) * (Decimal(10) ** decimals)  # Decimal(float) is the float's exact value
        return int(exact.to_integral_value(rounding=ROUND_HALF_EVEN))


def output_values(result: QueryResult, spec: PublicOutputSpec) -> list[int]:
    """The scaled integers the output carries, checked against their types."""
    ints: list[int] = []
    for name, (label, group), kind in zip(spec.values, spec.addresses(), spec.types, strict=True):
        scaled = _scaled(name, _lookup(result, label, group), spec.decimals)
        low, high = _RANGES[kind]
        if scaled < 0 and kind == "uint256":
            raise SpecError(f"{name} is negative; declare it int256 to publish it")
        if not low <= scaled <= high:
            raise SpecError(f"{name} scaled by 10^{spec.decimals} does not fit {kind}")
        ints.append(scaled)
    return ints


def encode_public_output(result: QueryResult, spec: PublicOutputSpec) -> bytes:
    """``abi.encode(v1, v2, ...)`` of the scaled values (`SpecError` on any refusal)."""
    return bytes(encode(list(spec.types), output_values(result, spec)))


def decode_public_output(data: bytes, spec: PublicOutputSpec) -> dict[str, Decimal]:
    """The published values by name, unscaled (``Decimal``: exact, no float rounding)."""
    expected = 32 * len(spec.types)
    if len(data) != expected:
        raise SpecError(f"the public output is {len(data)} bytes; {len(spec.types)} values take {expected}")
    try:
        ints = decode(list(spec.types), data)
    except DecodingError as exc:
        raise SpecError(f"the public output does not decode as ({', '.join(spec.types)}): {exc}") from None
    scale = Decimal(10) ** spec.decimals
    with localcontext() as ctx:
        ctx.prec = 100
        return {name: Decimal(int(v)) / scale for name, v in zip(spec.values, ints, strict=True)}
