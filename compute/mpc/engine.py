"""SPU glue: protocols, runtime configuration and compilation of a JAX function.

SPU, JAX and the x64 mode are imported lazily: building and checking a query does not need
them. Compilation traces with 64-bit types (float64 in, float64 out: without it JAX would
round inputs to float32 before they are even encoded) and disables two SPU rewrites that
replace exact divisions and square roots with lower-precision reciprocal square roots.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np

from compute.errors import SpecError
from compute.mpc.numerics import Field, Numerics


class Protocol(StrEnum):
    """Dealer-free SPU protocols: ABY3 (3 parties, honest majority) and CHEETAH (2 parties).

    SEMI2K is left out on purpose: in SPU it relies on a trusted dealer for Beaver triples.
    """

    ABY3 = "aby3"
    CHEETAH = "cheetah"

    @property
    def world(self) -> int:
        """Number of committee parties."""
        return 3 if self is Protocol.ABY3 else 2


@dataclass(frozen=True)
class ArraySpec:
    """Shape and dtype of one program input or output."""

    shape: tuple[int, ...]
    dtype: str

    @staticmethod
    def of(array: Any) -> ArraySpec:
        """The spec of a numpy array."""
        arr = np.asarray(array)
        return ArraySpec(tuple(int(d) for d in arr.shape), arr.dtype.str)


@dataclass(frozen=True)
class Compiled:
    """An SPU executable (serialised) and its input/output names and specs."""

    executable: bytes
    input_names: tuple[str, ...]
    input_specs: tuple[ArraySpec, ...]
    output_names: tuple[str, ...]


def runtime_config(protocol: Protocol, numerics: Numerics) -> Any:
    """The libspu.RuntimeConfig of a run (every party builds the same)."""
    import spu.libspu as libspu

    field = libspu.FieldType.FM64 if numerics.field is Field.FM64 else libspu.FieldType.FM128
    kind = libspu.ProtocolKind.ABY3 if Protocol(protocol) is Protocol.ABY3 else libspu.ProtocolKind.CHEETAH
    config = libspu.RuntimeConfig(protocol=kind, field=field, fxp_fraction_bits=numerics.fraction_bits)
    config.fxp_div_goldschmidt_iters = numerics.div_iters
    return config


def compile_function(fn: Callable[..., Any], examples: Sequence[Any], names: Sequence[str]) -> Compiled:
    """Trace `fn` on arrays shaped like `examples` (all secret) and compile it for SPU."""
    import jax
    import spu.libspu as libspu
    from spu.utils import frontend

    if len(examples) != len(names) or len(set(names)) != len(names):
        raise SpecError("one unique name per input")
    options = libspu.CompilerOptions()
    options.disable_div_sqrt_rewrite = True
    options.disable_sqrt_plus_epsilon_rewrite = True
    arrays = [np.asarray(x) for x in examples]
    with jax.experimental.enable_x64():
        executable, _ = frontend.compile(
            frontend.Kind.JAX,
            fn,
            arrays,
            {},
            list(names),
            [libspu.Visibility.VIS_SECRET] * len(arrays),
            lambda outs: [f"out{i}" for i in range(len(outs))],
            copts=options,
        )
    return Compiled(
        executable.SerializeToString(),
        tuple(names),
        tuple(ArraySpec.of(a) for a in arrays),
        tuple(executable.output_names),
    )


def load_executable(compiled: Compiled) -> Any:
    """The libspu.Executable of a compiled program."""
    import spu.libspu as libspu

    executable = libspu.Executable()
    executable.ParseFromString(compiled.executable)
    return executable


def simulate_compiled(
    compiled: Compiled, protocol: Protocol, numerics: Numerics, inputs: Sequence[Any]
) -> list[Any]:
    """Run all parties in this process (spu.utils.simulation, in-memory links); return every
    output reconstructed (a simulator has no receiver: it is one process)."""
    import jax
    from spu.utils.simulation import Simulator

    _check_inputs(compiled, inputs)
    simulator = Simulator(Protocol(protocol).world, runtime_config(protocol, numerics))
    with jax.experimental.enable_x64():
        return list(simulator(load_executable(compiled), *[np.asarray(x) for x in inputs]))


def _check_inputs(compiled: Compiled, inputs: Sequence[Any]) -> None:
    if len(inputs) != len(compiled.input_specs):
        raise SpecError(f"the program takes {len(compiled.input_specs)} inputs, got {len(inputs)}")
    for name, spec, value in zip(compiled.input_names, compiled.input_specs, inputs, strict=True):
        got = ArraySpec.of(value)
        if got != spec:
            raise SpecError(
                f"input {name}: shape {got.shape} {got.dtype}, the program expects {spec.shape} {spec.dtype}"
            )
