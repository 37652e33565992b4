"""Errors of the chain edge, and the table that turns revert data into typed exceptions.

`ErrorTable` maps every custom error selector found in the loaded ABIs (plus Solidity's
built-in `Error(string)` and `Panic(uint256)`) to a `ContractRevert` subclass named after
the error, so callers can write ``except revert_type("TaskManager__BadCommittee")`` or
check ``exc.name`` and ``exc.args_by_name``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from eth_abi.abi import decode
from eth_abi.exceptions import DecodingError
from eth_utils.abi import function_signature_to_4byte_selector

from compute.errors import DatumError

__all__ = [
    "ChainError",
    "ContractRevert",
    "ErrorTable",
    "canonical_type",
    "RpcUnavailable",
    "TransactionFailed",
    "UnknownRevert",
    "revert_type",
]

PANIC_REASONS = {
    0x01: "assertion failed",
    0x11: "arithmetic overflow or underflow",
    0x12: "division by zero",
    0x21: "invalid enum value",
    0x22: "bad storage byte array",
    0x31: "pop on an empty array",
    0x32: "array index out of bounds",
    0x41: "out of memory",
    0x51: "call to a zero internal function",
}


class ChainError(DatumError):
    """Anything that went wrong talking to the chain."""


class RpcUnavailable(ChainError, ConnectionError):
    """The RPC endpoint did not answer (timeouts, refused or reset connections), retries spent."""


class TransactionFailed(ChainError):
    """A transaction could not be sent or was mined without success, with no revert data to decode."""


class ContractRevert(ChainError):
    """A contract call reverted with data; subclasses are named after the Solidity error.

    `name` is the error's name, `args_by_name` its decoded arguments (in declaration
    order), `selector` the 4-byte selector and `data` the raw revert data.
    """

    name: str = "ContractRevert"

    def __init__(self, selector: bytes, data: bytes, args_by_name: Mapping[str, Any]) -> None:
        self.selector = selector
        self.data = data
        self.args_by_name: dict[str, Any] = dict(args_by_name)
        super().__init__(self.describe())

    def describe(self) -> str:
        """The error as Solidity would print it: ``Name(arg=value, ...)``."""
        parts = ", ".join(f"{k}={_show(v)}" for k, v in self.args_by_name.items())
        return f"{self.name}({parts})"


class UnknownRevert(ContractRevert):
    """Revert data whose selector is in none of the loaded ABIs."""

    name = "UnknownRevert"

    def describe(self) -> str:
        """The raw revert data, since it cannot be decoded."""
        return f"reverted with unknown data 0x{self.data.hex()}" if self.data else "reverted without data"


def _show(value: Any) -> str:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return str(value)


_REVERT_TYPES: dict[str, type[ContractRevert]] = {}


def revert_type(name: str) -> type[ContractRevert]:
    """The `ContractRevert` subclass for the Solidity error `name` (one class per name)."""
    cls = _REVERT_TYPES.get(name)
    if cls is None:
        cls = type(name, (ContractRevert,), {"name": name, "__module__": __name__})
        _REVERT_TYPES[name] = cls
    return cls


def canonical_type(param: Mapping[str, Any]) -> str:
    """Canonical ABI type of one ABI parameter, tuples expanded: ``(uint8,address)[]``."""
    kind = str(param["type"])
    if kind.startswith("tuple"):
        inner = ",".join(canonical_type(c) for c in param.get("components", []))
        return f"({inner}){kind[len('tuple') :]}"
    return kind


class _ErrorSpec:
    def __init__(self, name: str, names: Sequence[str], types: Sequence[str]) -> None:
        self.name = name
        self.names = list(names)
        self.types = list(types)


class ErrorTable:
    """Selector -> error decoder, built from ABIs."""

    def __init__(self, abis: Iterable[Sequence[Mapping[str, Any]]] = ()) -> None:
        self._specs: dict[bytes, _ErrorSpec] = {}
        self._add("Error", ["message"], ["string"])
        self._add("Panic", ["code"], ["uint256"])
        for abi in abis:
            self.add_abi(abi)

    def _add(self, name: str, names: Sequence[str], types: Sequence[str]) -> None:
        selector = function_signature_to_4byte_selector(f"{name}({','.join(types)})")
        known = self._specs.get(selector)
        if known is not None and (known.name, known.types) != (name, list(types)):
            raise ValueError(f"selector clash: {known.name} and {name}")
        self._specs[selector] = _ErrorSpec(name, names, types)

    def add_abi(self, abi: Sequence[Mapping[str, Any]]) -> None:
        """Add every custom error of one contract ABI."""
        for item in abi:
            if item.get("type") != "error":
                continue
            inputs = item.get("inputs", [])
            names = [str(p.get("name") or f"arg{i}") for i, p in enumerate(inputs)]
            self._add(str(item["name"]), names, [canonical_type(p) for p in inputs])

    def __contains__(self, name: str) -> bool:
        return any(spec.name == name for spec in self._specs.values())

    def __len__(self) -> int:
        return len(self._specs)

    def selector_of(self, name: str) -> bytes:
        """The 4-byte selector of the error called `name`."""
        for selector, spec in self._specs.items():
            if spec.name == name:
                return selector
        raise KeyError(name)

    def decode(self, data: bytes) -> ContractRevert:
        """Turn revert data into the matching `ContractRevert` subclass (never raises)."""
        selector = data[:4]
        spec = self._specs.get(selector) if len(data) >= 4 else None
        if spec is None:
            return UnknownRevert(selector, data, {})
        try:
            values = decode(spec.types, data[4:])
        except (DecodingError, OverflowError, ValueError):
            return UnknownRevert(selector, data, {})
        args = dict(zip(spec.names, values, strict=True))
        if spec.name == "Panic":
            args["reason"] = PANIC_REASONS.get(int(args["code"]), "unknown panic")
        return revert_type(spec.name)(selector, data, args)
