"""run_function: a plain numpy-style JAX function runs under MPC unchanged."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from compute.errors import SpecError
from compute.mpc import Field, Numerics, Protocol, Reveal, run_function


def joint_stats(x: jnp.ndarray, y: jnp.ndarray, flags: jnp.ndarray) -> dict[str, jnp.ndarray]:
    """Ordinary array code: no MPC in sight."""
    both = jnp.concatenate([x, y])
    return {
        "total": jnp.sum(both),
        "dot": jnp.dot(x, y),
        "above": jnp.sum(both > 0.5),
        "flagged": jnp.sum(jnp.where(flags, x, 0.0)),
    }


def test_the_same_function_gives_the_plaintext_answer_in_the_simulator() -> None:
    rng = np.random.default_rng(3)
    x, y, flags = rng.uniform(0, 1, 500), rng.uniform(0, 1, 500), rng.random(500) < 0.3
    plain = joint_stats(x, y, flags)
    secure = run_function(
        joint_stats, x, y, flags, numerics=Numerics.with_bits(Field.FM64, 20), reveal=Reveal.to(0)
    )
    assert set(secure) == set(plain)
    assert int(secure["above"]) == int(plain["above"])  # comparisons are exact
    for key in ("total", "dot", "flagged"):
        assert abs(float(secure[key]) - float(plain[key])) < 1000 * 2.0**-20, key


def test_two_party_cheetah_runs_the_same_code() -> None:
    x, y = np.arange(10.0), np.arange(10.0)[::-1].copy()
    out = run_function(
        lambda a, b: jnp.sum(a * b),
        x,
        y,
        numerics=Numerics.with_bits(Field.FM64, 18),
        reveal=Reveal.everyone(),
        protocol=Protocol.CHEETAH,
    )
    assert abs(float(out) - float(np.dot(x, y))) < 1e-3


def test_inputs_must_be_numbers_and_parameters_are_required() -> None:
    with pytest.raises(SpecError, match="not a number or bool array"):
        run_function(
            jnp.sum, np.array(["a", "b"]), numerics=Numerics.with_bits(Field.FM64, 18), reveal=Reveal.to(0)
        )
    with pytest.raises(TypeError):
        run_function(jnp.sum, np.ones(3))  # type: ignore[call-arg]
