"""Error bounds of each aggregate, in normalised units (multiply by the form's scale).

Notation: u = 2^-f (one ulp), eg = relative error of SPU's reciprocal (`goldschmidt_error`),
delta = the per-row error of the aggregated value's form, N = rows of the joined table,
m = min_group_size (every revealed group has at least m rows, or nothing is revealed).
Masked sums are matrix products of the 0/1 group masks with the stored values: exact
additions and one truncation per output. Derivations are in docs/MPC.md.
"""

from __future__ import annotations

import math

from compute.mpc.numerics import SQRT_E0, Numerics, goldschmidt_error, sqrt_floor


def division_error(n: Numerics, q_max: float, b_min: float, prescale: int = 0) -> float:
    """|computed a/b - a/b| for |a/b| <= q_max and |b| >= b_min (a pre-scaled by 2^prescale)."""
    return q_max * goldschmidt_error(n) + 2 * n.ulp * 2.0**-prescale / b_min + 3 * n.ulp


def newton_prescale(n: Numerics) -> int:
    """t: numerators of the Newton and correlation divisions are multiplied by 2^t so that a
    small divisor does not amplify their last-bit error; |a| * 2^(t+2f+2) stays below 2^(k-3)."""
    return max(0, min(n.fraction_bits, n.ring_bits - 6 - 2 * n.fraction_bits))


def mean_error(n: Numerics, delta: float) -> float:
    """A masked mean S/n of stored values (|stored| <= 1)."""
    return delta + n.ulp + division_error(n, 1.0, 1.0)


def second_moment_error(n: Numerics, delta_x: float, delta_y: float) -> float:
    """A masked mean of products x*y of stored values."""
    return delta_x + delta_y + delta_x * delta_y + 2 * n.ulp + division_error(n, 1.0, 1.0)


def variance_error(n: Numerics, delta: float, min_rows: int, ddof: int) -> float:
    """E[x^2] - E[x]^2 from two masked means (population), times n/(n-1) when ddof = 1."""
    u = n.ulp
    d_mean = mean_error(n, delta)
    d_pop = second_moment_error(n, delta, delta) + 2 * d_mean + d_mean**2 + u
    if ddof == 0:
        return d_pop
    ratio = min_rows / (min_rows - ddof)
    return ratio * d_pop + 1.01 * division_error(n, ratio, 1.0) + u


def sqrt_error(n: Numerics, y_lo: float, y_hi: float) -> float:
    """|computed - exact| of sqrt(v) for sqrt(v) in [y_lo, y_hi]: SPU's sqrt (relative error
    at most SQRT_E0 above the clamp) followed by two Newton steps y <- (y + v/y) / 2."""
    u, eg, t = n.ulp, goldschmidt_error(n), newton_prescale(n)

    def rounding(s: float, rel: float) -> float:
        divisor = s * (1 - rel)
        return (1.5 * eg + 3 * u + 2 * u * 2.0**-t / divisor) / 2 + u

    def after_two_steps(s: float) -> float:
        e1 = SQRT_E0**2 / (2 * (1 - SQRT_E0)) + rounding(s, SQRT_E0) / s
        if e1 >= 0.5:
            return math.inf
        return s * e1**2 / (2 * (1 - e1)) + rounding(s, e1)

    y_lo = max(y_lo, math.sqrt(sqrt_floor(n)))
    if y_hi <= y_lo:
        return after_two_steps(y_lo)
    ratio = (y_hi / y_lo) ** (1 / 64)
    return max(after_two_steps(y_lo * ratio**i) for i in range(65))


def std_error_static(n: Numerics, var_delta: float, min_std: float, max_std: float) -> float:
    """Bound for a standard deviation of at least `min_std` (the planner's target check)."""
    spread = var_delta + sqrt_floor(n)
    lipschitz = spread / min_std if min_std > 0 else math.inf
    return min(math.sqrt(spread), lipschitz) + sqrt_error(n, min_std, max_std)


def std_error_revealed(n: Numerics, var_delta: float, value: float, max_std: float) -> float:
    """Bound for a revealed (normalised) standard deviation `value`: uses only public data."""
    e_sqrt = sqrt_error(n, math.sqrt(sqrt_floor(n)), max_std)
    spread = var_delta + sqrt_floor(n)
    lower = value - e_sqrt
    lipschitz = spread / lower if lower > 0 else math.inf
    return min(math.sqrt(spread), lipschitz) + e_sqrt


def corr_error(n: Numerics, delta_x: float, delta_y: float, min_std_x: float, min_std_y: float) -> float:
    """Pearson r = cov / (sx * sy) when the normalised standard deviations are at least
    min_std_x and min_std_y (the query's min_spread assumption)."""
    u = n.ulp
    d_mx, d_my = mean_error(n, delta_x), mean_error(n, delta_y)
    d_cov = second_moment_error(n, delta_x, delta_y) + d_mx + d_my + d_mx * d_my + u
    d_vx = second_moment_error(n, delta_x, delta_x) + 2 * d_mx + d_mx**2 + u
    d_vy = second_moment_error(n, delta_y, delta_y) + 2 * d_my + d_my**2 + u
    floor = sqrt_floor(n)
    rel_x = ((d_vx + floor) / min_std_x + sqrt_error(n, min_std_x, 1.5)) / min_std_x
    rel_y = ((d_vy + floor) / min_std_y + sqrt_error(n, min_std_y, 1.5)) / min_std_y
    den_min = min_std_x * min_std_y
    rel_den = rel_x + rel_y + rel_x * rel_y + u / den_min
    if rel_den >= 0.5:
        return math.inf
    t = newton_prescale(n)
    core = (d_cov / den_min + rel_den) / (1 - rel_den)
    return core + division_error(n, 1.0, den_min * (1 - rel_den), t)


BISECTION_START = 1.0 + 2.0**-8  # the search starts from [-START, START] in stored units


def bisection_width(n: Numerics, steps: int) -> float:
    """Width of the bracket after `steps` halvings (each midpoint loses at most one ulp)."""
    return 2 * BISECTION_START * 2.0**-steps + 2 * n.ulp
