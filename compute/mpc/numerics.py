"""Fixed-point parameters (SPU field and fraction bits) and the arithmetic facts bounds rely on.

SPU encodes a real x as the ring integer trunc(x * 2^f) in Z_{2^k} (k = 64 for FM64, 128 for
FM128). What the bounds in `bounds.py` assume, and where it comes from:

* Encoding truncates toward zero: an encoded value is within one ulp = 2^-f of the real one
  (exact when x * 2^f is an integer).
* Additions and subtractions are exact; a multiplication of two fixed-point values is
  followed by a truncation with at most one ulp of error (ABY3's TruncAPr2 in SPU 0.9.5:
  exact up to the last bit as long as every ring value stays below 2^(k-2); we keep 2^(k-3)).
* Division a / b is Goldschmidt's iteration on b normalised to [0.5, 1) (bit decomposition,
  exact): relative error 0.0858^(2^iters) from the iteration, plus rounding; the division
  also needs b < 2^f and |a| * 2^(2f+1) < 2^(k-3).
* Square roots use SPU's sqrt (measured below 5e-4 relative for inputs >= 2^(2-f); we budget
  2^-6) refined by two Newton steps, so their error is a few ulp (see `bounds.sqrt_error`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from compute.errors import SpecError

HEADROOM_BITS = 3  # every ring value stays below 2^(k - HEADROOM_BITS)
GOLDSCHMIDT_E0 = 0.0858  # |1 - c*w| for SPU's initial guess w = 2.9142 - 2c, c in [0.5, 1)
SQRT_E0 = 2.0**-6  # budgeted relative error of SPU's sqrt for inputs >= SQRT_FLOOR(f)
MAX_FRACTION_BITS = {64: 26, 128: 46}
MIN_FRACTION_BITS = 8


class Field(StrEnum):
    """SPU rings: Z_2^64 (cheaper) and Z_2^128 (more headroom)."""

    FM64 = "FM64"
    FM128 = "FM128"

    @property
    def bits(self) -> int:
        """k, the ring's bit width."""
        return 64 if self is Field.FM64 else 128


@dataclass(frozen=True)
class Numerics:
    """The fixed-point parameters a plan runs with; all parties must use the same."""

    field: Field
    fraction_bits: int
    div_iters: int

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "field", Field(self.field))
        except ValueError:
            raise SpecError(f"unknown field {self.field!r} (FM64 or FM128)") from None
        top = MAX_FRACTION_BITS[self.field.bits]
        if type(self.fraction_bits) is not int or not MIN_FRACTION_BITS <= self.fraction_bits <= top:
            raise SpecError(f"{self.field}: fraction bits must be in [{MIN_FRACTION_BITS}, {top}]")
        if type(self.div_iters) is not int or not 2 <= self.div_iters <= 6:
            raise SpecError("div_iters must be in [2, 6]")

    @staticmethod
    def with_bits(field: Field, fraction_bits: int) -> Numerics:
        """Parameters for (field, f) with enough Goldschmidt iterations for f bits."""
        return Numerics(field, fraction_bits, div_iterations(fraction_bits))

    @property
    def ulp(self) -> float:
        """2^-f, the resolution of an encoded value."""
        return 2.0**-self.fraction_bits

    @property
    def ring_bits(self) -> int:
        """k."""
        return self.field.bits

    def to_json(self) -> dict[str, object]:
        """The parameters as a JSON object."""
        return {"field": str(self.field), "fraction_bits": self.fraction_bits, "div_iters": self.div_iters}


def div_iterations(fraction_bits: int) -> int:
    """Goldschmidt iterations whose error 0.0858^(2^i) is below 2^-(f+2)."""
    iters = 2
    while GOLDSCHMIDT_E0 ** (2**iters) > 2.0 ** -(fraction_bits + 2):
        iters += 1
    return iters


def goldschmidt_error(numerics: Numerics) -> float:
    """Relative error of SPU's reciprocal of a normalised divisor (iteration and rounding)."""
    iteration: float = GOLDSCHMIDT_E0 ** (2**numerics.div_iters)
    return iteration + (2 * numerics.div_iters + 4) * numerics.ulp


def sqrt_floor(numerics: Numerics) -> float:
    """Inputs of sqrt are clamped to at least this value (SPU's sqrt is accurate above it)."""
    return 2.0 ** (2 - numerics.fraction_bits)


def representable(value: float, numerics: Numerics) -> bool:
    """True when `value` encodes exactly (value * 2^f is an integer)."""
    scaled = value * 2.0**numerics.fraction_bits
    return math.isfinite(scaled) and scaled == math.floor(scaled)


def quantization(value: float, numerics: Numerics) -> float:
    """Encoding error of a public constant: 0 when exact, else below one ulp."""
    return 0.0 if representable(value, numerics) else numerics.ulp


def fraction_bit_range(field: Field, rows: int) -> tuple[int, int]:
    """The fraction bits f usable with `rows` rows: divisions need rows < 2^f and
    rows * 2^(2f+1) < 2^(k-3) (a masked sum of normalised values times a reciprocal)."""
    k = field.bits
    log_rows = math.log2(max(rows, 1))
    low = max(MIN_FRACTION_BITS, math.floor(log_rows) + 1)
    high = min(MAX_FRACTION_BITS[k], math.floor((k - HEADROOM_BITS - 1 - log_rows) / 2 - 1e-9))
    return low, high


def ceil_log2(value: float) -> int:
    """The smallest integer e with 2^e >= value (value > 0)."""
    mantissa, exponent = math.frexp(value)
    return exponent - 1 if mantissa == 0.5 else exponent
