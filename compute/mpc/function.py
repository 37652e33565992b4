"""`run_function`: run a plain numpy/JAX function under MPC (the "change two lines" path).

    result = my_stats(x, y)                                          # plaintext
    result = run_function(my_stats, x, y, numerics=..., reveal=...)  # MPC, same function

The function is traced and compiled by the caller (the requester) into an SPU executable;
committee parties only ever run that executable (they never run requester Python), after
agreeing on its digest. Every input is a secret of its owner (`owners[i]`, default rank
i mod world). There is no disclosure gate and no error bound here: the function decides what
it reveals, and the caller chooses the fixed-point parameters (`numerics`) and checks the
precision it needs; a dataset's consent policy must approve the executable by its digest.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from compute.errors import SpecError
from compute.mpc.engine import Compiled, Protocol, compile_function, simulate_compiled
from compute.mpc.local import committee_links, pick_error, run_concurrently
from compute.mpc.numerics import Numerics
from compute.mpc.party import Program, check_hosts, execute
from compute.mpc.plan import InputSpec
from compute.mpc.query import Reveal
from compute.mpc.shares import ShareLayout


def _as_input(value: npt.ArrayLike, index: int) -> tuple[npt.NDArray[Any], str]:
    arr = np.asarray(value)
    if arr.dtype == np.bool_:
        return arr, "cat"
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64), "int"
    if arr.dtype.kind == "f":
        return arr.astype(np.float64), "num"
    raise SpecError(f"input {index}: dtype {arr.dtype} is not a number or bool array")


def compile_for_committee(fn: Callable[..., Any], inputs: Sequence[npt.ArrayLike]) -> tuple[Compiled, Any]:
    """Trace and compile `fn` for inputs shaped like `inputs`; returns (compiled, output tree)."""
    import jax

    arrays = [_as_input(v, i)[0] for i, v in enumerate(inputs)]
    with jax.experimental.enable_x64():
        shapes = jax.eval_shape(fn, *arrays)
    compiled = compile_function(fn, arrays, [f"x{i}" for i in range(len(arrays))])
    return compiled, jax.tree_util.tree_structure(shapes)


def run_function(
    fn: Callable[..., Any],
    *inputs: npt.ArrayLike,
    numerics: Numerics,
    reveal: Reveal,
    protocol: Protocol = Protocol.ABY3,
    owners: Sequence[int] | None = None,
    processes: bool = False,
    recv_timeout_ms: int = 60_000,
    deadline_s: float = 1800.0,
) -> Any:
    """Run `fn(*inputs)` under MPC and return its outputs (same structure as `fn`'s).

    `processes=False` runs SPU's simulator in this process; `processes=True` runs a real
    committee of local processes (one per party), each owner secret-sharing its inputs, the
    output reconstructed by the receiver(s) of `reveal` only (this call returns the first
    receiver's copy).
    """
    import jax

    protocol = Protocol(protocol)
    if not isinstance(numerics, Numerics) or not isinstance(reveal, Reveal):
        raise SpecError("numerics (Numerics) and reveal (Reveal) are required")
    if reveal.external:
        raise SpecError("run_function does not support Reveal.external(); use Reveal.to(rank) or everyone()")
    receivers = reveal.receivers(protocol.world)
    prepared = [_as_input(v, i) for i, v in enumerate(inputs)]
    arrays = [a for a, _ in prepared]
    compiled, tree = compile_for_committee(fn, arrays)
    if not processes:
        flat = simulate_compiled(compiled, protocol, numerics, arrays)
        return jax.tree_util.tree_unflatten(tree, [np.asarray(x) for x in flat])
    world = protocol.world
    owner_of = tuple(owners) if owners is not None else tuple(i % world for i in range(len(arrays)))
    specs = tuple(InputSpec(f"x{i}", i, kind, tuple(a.shape)) for i, (a, kind) in enumerate(prepared))
    digest = hashlib.sha256(b"datum-mpc-function-v1\0" + compiled.executable).digest()
    layout = ShareLayout(digest, tuple(f"input {i}" for i in range(len(arrays))), specs, numerics)
    links = committee_links(world, recv_timeout_ms=recv_timeout_ms, deadline_s=deadline_s)
    hosts = check_hosts(len(arrays), protocol, links[0], owner_of)
    program = Program(layout, protocol, hosts, receivers, False, None, compiled)

    def party(rank: int) -> Any:
        local = {i: {f"x{i}": arrays[i]} for i, h in enumerate(hosts) if h == rank}
        return execute(program, links[rank], local, {})

    results = run_concurrently([functools.partial(party, r) for r in range(world)])
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        raise pick_error(errors)
    outputs = results[receivers[0]].outputs
    return jax.tree_util.tree_unflatten(tree, list(outputs))
