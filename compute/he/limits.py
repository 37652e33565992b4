"""Bounds on formulas and on bytes received from the wire.

They are part of a task spec (and so of its hash): every node enforces the same ones.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from compute.errors import SpecError

MiB = 1024 * 1024
MAX_DEPTH_CEILING = 128  # keeps every recursive walk of a formula far from the interpreter limit


@dataclass(frozen=True, slots=True)
class HELimits:
    """What a node accepts. Every field is a hard upper bound."""

    max_formula_chars: int = 65_536
    max_depth: int = 32  # height of the formula tree (and nesting of parentheses and calls)
    max_nodes: int = 1_024  # AST nodes (weights in a list are counted by max_weights)
    max_weights: int = 16_384
    max_columns: int = 64
    max_rows: int = 1_048_576
    max_context_bytes: int = 64 * MiB  # a CKKS public context with Galois keys is ~35 MB
    max_columns_bytes: int = 1024 * MiB
    max_result_bytes: int = 1024 * MiB

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if type(value) is not int or value < 1:
                raise SpecError(f"limit {name} must be a positive integer, got {value!r}")
        if self.max_depth > MAX_DEPTH_CEILING:
            raise SpecError(f"limit max_depth must be at most {MAX_DEPTH_CEILING}, got {self.max_depth}")

    def to_json(self) -> dict[str, int]:
        """The limits as a plain JSON object."""
        return asdict(self)


DEFAULT_LIMITS = HELimits()
