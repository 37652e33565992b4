"""Compiling a plan, with an optional on-disk cache of compiled SPU executables.

Compiling a plan (trace with JAX, lower, SPU passes) takes seconds and gives the same
executable for the same plan, SPU and JAX versions and engine code. `compile_plan(plan,
protocol=..., cache_dir=...)` keeps executables in `cache_dir` under a key over: the plan
digest (query, parts, numerics), the protocol, the field and fixed-point parameters, the SPU
and JAX versions, and a digest of the engine's own sources (so an engine change never reuses
an old program). Parties still agree on the executable's digest before running, so a cache
can only cost a run, never change one silently.

File: b"DMPCEXE\\0" | version u8 | key (32) | SHA-256 of the rest (32) | header length u32 |
header JSON (input names and specs, output names) | executable. A file that is truncated,
corrupt or for another key is ignored and rewritten; writes go to a temporary file in the
same directory, fsynced, then renamed over the entry (atomic on POSIX). A cache directory
that cannot be written is logged and the run goes on uncached.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import struct
import tempfile
from pathlib import Path

import numpy as np

from compute.errors import SpecError
from compute.mpc.engine import ArraySpec, Compiled, Protocol, compile_function
from compute.mpc.plan import Plan
from compute.mpc.program import build_function

log = logging.getLogger(__name__)

_MAGIC = b"DMPCEXE\0"
_VERSION = 1
_HEAD = struct.Struct(">8sB32s32sI")
_MAX_FILE_BYTES = 512 << 20
SUFFIX = ".spuexe"


@functools.cache
def engine_source_digest() -> bytes:
    """SHA-256 over the sources of this package (any engine change gives new cache keys)."""
    h = hashlib.sha256(b"datum-mpc-engine-sources\0")
    for path in sorted(Path(__file__).parent.glob("*.py")):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.digest()


@functools.cache
def _tool_versions() -> str:
    import jax
    import spu

    return f"spu={spu.__version__};jax={jax.__version__}"


def cache_key(plan: Plan, protocol: Protocol) -> bytes:
    """The cache key of `plan` compiled for `protocol` (see the module docstring)."""
    n = plan.numerics
    h = hashlib.sha256(b"datum-mpc-compile-cache-v1\0")
    h.update(plan.digest())
    h.update(
        f"{Protocol(protocol).value};{n.field};{n.fraction_bits};{n.div_iters};{_tool_versions()}".encode()
    )
    h.update(engine_source_digest())
    return h.digest()


def compile_uncached(plan: Plan) -> Compiled:
    """Trace and compile the plan's program (seconds)."""
    examples = [
        np.zeros(spec.shape, dtype=np.float64 if spec.kind == "num" else bool) for spec in plan.inputs
    ]
    return compile_function(build_function(plan), examples, [spec.name for spec in plan.inputs])


def compile_plan(
    plan: Plan, *, protocol: Protocol = Protocol.ABY3, cache_dir: Path | None = None
) -> Compiled:
    """The SPU executable of a plan: from `cache_dir` when present and intact, else compiled
    (and stored there). `cache_dir=None` always compiles."""
    return load_or_compile(plan, protocol, cache_dir)[0]


def load_or_compile(plan: Plan, protocol: Protocol, cache_dir: Path | None) -> tuple[Compiled, bool]:
    """(executable, whether it came from the cache)."""
    if cache_dir is None:
        return compile_uncached(plan), False
    if not isinstance(cache_dir, str | os.PathLike):
        raise SpecError("cache_dir must be a path or None")
    key = cache_key(plan, protocol)
    path = Path(cache_dir) / (key.hex() + SUFFIX)
    compiled = read_entry(path, key)
    if compiled is not None:
        return compiled, True
    compiled = compile_uncached(plan)
    write_entry(path, key, compiled)
    return compiled, False


def read_entry(path: Path, key: bytes) -> Compiled | None:
    """The executable stored at `path` for `key`, or None if absent, partial or corrupt."""
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_FILE_BYTES + 1)
    except OSError:
        return None
    if len(data) > _MAX_FILE_BYTES or len(data) < _HEAD.size:
        return _ignored(path, "wrong size")
    magic, version, got_key, checksum, head_len = _HEAD.unpack_from(data, 0)
    if magic != _MAGIC or version != _VERSION or got_key != key:
        return _ignored(path, "not an entry of this version and key")
    if hashlib.sha256(data[_HEAD.size :]).digest() != checksum:
        return _ignored(path, "checksum mismatch")
    try:
        header = json.loads(data[_HEAD.size : _HEAD.size + head_len])
        return Compiled(
            data[_HEAD.size + head_len :],
            tuple(str(n) for n in header["input_names"]),
            tuple(
                ArraySpec(tuple(int(d) for d in shape), str(dtype)) for shape, dtype in header["input_specs"]
            ),
            tuple(str(n) for n in header["output_names"]),
        )
    except (ValueError, KeyError, TypeError):
        return _ignored(path, "unreadable header")


def _ignored(path: Path, why: str) -> Compiled | None:
    log.warning("mpc compile cache: ignoring %s (%s); recompiling", path.name, why)
    return None


def write_entry(path: Path, key: bytes, compiled: Compiled) -> None:
    """Store `compiled` at `path` atomically (temporary file, fsync, rename)."""
    header = json.dumps(
        {
            "input_names": list(compiled.input_names),
            "input_specs": [[list(s.shape), s.dtype] for s in compiled.input_specs],
            "output_names": list(compiled.output_names),
        },
        sort_keys=True,
    ).encode()
    body = header + compiled.executable
    data = _HEAD.pack(_MAGIC, _VERSION, key, hashlib.sha256(body).digest(), len(header)) + body
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=SUFFIX, dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        log.warning("mpc compile cache: could not write %s: %s", path.name, exc)
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
