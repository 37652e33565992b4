"""Output shares for a receiver outside the committee (`Reveal.external()`).

With an external reveal no committee party reconstructs anything. After the disclosure flags
hold, each party packs its shares of every output into one blob (`pack_outputs`, in its
worker) and `run_party` returns it as `OutputShares`; the requester gathers the blob of every
rank and calls `reconstruct_result`, which checks each blob against the plan and rebuilds the
outputs with SPU's `Io.reconstruct`, then decodes them exactly as a committee receiver does
(`result.decode`: same values, same bounds).

One blob is one party's shares: random on their own (ABY3: two of three replicated shares;
CHEETAH: one of two additive shares), re-randomised at every run. Blob layout (big-endian):
b"DMPO" | version u8 | plan digest (32) | run id (16) | protocol u8 | ring bits u16 |
fraction bits u8 | rank u16 | world u16 | output count u16 | per output: name length u8,
name, one share as in shares.pack_share. The run id is agreed by the parties of one run
(a hash of a fresh nonce from each), so blobs of different runs are never mixed.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from compute.errors import SpecError
from compute.mpc.engine import Protocol, runtime_config
from compute.mpc.plan import Plan
from compute.mpc.query import Func
from compute.mpc.result import QueryResult, decode
from compute.mpc.shares import pack_share, read_share

_MAGIC = b"DMPO"
_VERSION = 1
_HEAD = struct.Struct(">4sB32s16sBHBHHH")
_PROTOCOL_CODE = {Protocol.ABY3: 1, Protocol.CHEETAH: 2}
_META_SLACK = 8192
RUN_ID_BYTES = 16


def output_names(plan: Plan) -> tuple[str, ...]:
    """The program's output names after the flags (`out0`): one per aggregate."""
    return tuple(f"out{i + 1}" for i in range(len(plan.aggregates)))


def output_sizes(plan: Plan) -> tuple[int, ...]:
    """Values per output: one per group, times the bins of a histogram."""
    groups = len(plan.groups)
    return tuple(
        groups * (len(agg.aggregate.edges) - 1 if agg.func is Func.HISTOGRAM else 1)
        for agg in plan.aggregates
    )


def output_blob_limit(plan: Plan) -> int:
    """The largest output-share blob accepted for `plan`: two ring elements per value (a
    replicated share holds two), plus 8 KiB per output for metadata."""
    ring_bytes = plan.numerics.ring_bits // 8
    names = output_names(plan)
    return _HEAD.size + sum(
        2 * ring_bytes * n + _META_SLACK + 1 + len(name)
        for n, name in zip(output_sizes(plan), names, strict=True)
    )


def pack_outputs(plan: Plan, protocol: Protocol, rank: int, run_id: bytes, shares: Sequence[Any]) -> bytes:
    """One party's shares of every output (in program order) as one self-describing blob."""
    protocol = Protocol(protocol)
    names = output_names(plan)
    if len(shares) != len(names) or len(run_id) != RUN_ID_BYTES:
        raise SpecError("output shares do not match the plan")
    head = _HEAD.pack(
        _MAGIC,
        _VERSION,
        plan.digest(),
        run_id,
        _PROTOCOL_CODE[protocol],
        plan.numerics.ring_bits,
        plan.numerics.fraction_bits,
        rank,
        protocol.world,
        len(names),
    )
    body = b"".join(
        struct.pack(">B", len(name)) + name.encode("ascii") + pack_share(share)
        for name, share in zip(names, shares, strict=True)
    )
    return head + body


@dataclass(frozen=True)
class _Opened:
    run_id: bytes
    shares: tuple[Any, ...]


def open_outputs(plan: Plan, protocol: Protocol, rank: int, blob: bytes) -> _Opened:
    """Check one rank's blob against the plan (digest, protocol, field, rank, names, shapes,
    size) and return its shares; SpecError naming what is wrong otherwise."""
    protocol = Protocol(protocol)
    where = f"output shares of rank {rank}"
    if not isinstance(blob, bytes | bytearray | memoryview):
        raise SpecError(f"{where}: not bytes")
    blob = bytes(blob)
    limit = output_blob_limit(plan)
    if len(blob) > limit:
        raise SpecError(f"{where}: {len(blob)} bytes, more than the {limit} this plan allows")
    try:
        magic, version, digest, run_id, code, ring, frac, got_rank, world, count = _HEAD.unpack_from(blob, 0)
    except struct.error:
        raise SpecError(f"{where}: truncated blob ({len(blob)} bytes)") from None
    if magic != _MAGIC or version != _VERSION:
        raise SpecError(f"{where}: not an output-share blob of this version")
    if digest != plan.digest():
        raise SpecError(f"{where}: made for a different plan (digest {digest.hex()[:16]}...)")
    if code != _PROTOCOL_CODE[protocol] or world != protocol.world:
        raise SpecError(f"{where}: made by a different protocol or committee size, not {protocol}")
    if ring != plan.numerics.ring_bits or frac != plan.numerics.fraction_bits:
        raise SpecError(f"{where}: made with field {ring} bits and f={frac}, the plan has {plan.numerics}")
    if got_rank != rank:
        raise SpecError(f"{where}: the blob is rank {got_rank}'s")
    names = output_names(plan)
    if count != len(names):
        raise SpecError(f"{where}: {count} outputs, the plan has {len(names)}")
    offset = _HEAD.size
    shares = []
    for name, size in zip(names, output_sizes(plan), strict=True):
        if offset >= len(blob):
            raise SpecError(f"{where}: truncated blob (no output {name})")
        length = blob[offset]
        got = blob[offset + 1 : offset + 1 + length]
        if got != name.encode("ascii"):
            raise SpecError(f"{where}: output {got!r} where the plan has {name}")
        share, offset = read_share(blob, offset + 1 + length, f"{where}, output {name}")
        _check_output_meta(protocol, plan, bytes(share.meta), size, f"{where}, output {name}")
        shares.append(share)
    if offset != len(blob):
        raise SpecError(f"{where}: trailing bytes after the last output")
    return _Opened(run_id, tuple(shares))


def _check_output_meta(protocol: Protocol, plan: Plan, meta: bytes, size: int, where: str) -> None:
    import spu.libspu as libspu

    info = libspu.ValueMeta()
    if not info.ParseFromString(meta):
        raise SpecError(f"{where}: unreadable share metadata")
    shape = tuple(int(d) for d in info.shape.dims)
    if int(np.prod(shape)) != size:
        raise SpecError(f"{where}: shares have shape {shape}, the plan expects {size} values")
    if info.visibility != libspu.Visibility.VIS_SECRET:
        raise SpecError(f"{where}: not a secret share")
    storage = str(info.storage_type)
    if not storage.startswith(f"{protocol.value}."):
        raise SpecError(f"{where}: shares of type {storage}, the plan runs {protocol}")


def reconstruct_result(plan: Plan, protocol: Protocol, blobs: Mapping[int, bytes]) -> QueryResult:
    """The requester's side of `Reveal.external()`: rebuild the result from the output-share
    blob of every committee rank (`OutputShares.blob`, keyed by rank).

    Every rank 0..world-1 is needed; each blob must be bound to this plan, protocol, field and
    its rank, and all must come from the same run. Values and bounds are decoded exactly as a
    committee receiver decodes them. SpecError on anything missing or mismatched.
    """
    if not isinstance(plan, Plan):
        raise SpecError("reconstruct_result takes the Plan the committee ran")
    try:
        protocol = Protocol(protocol)
    except ValueError:
        raise SpecError(f"unknown protocol {protocol!r}") from None
    if not plan.query.reveal.external:
        raise SpecError("the query does not reveal to an external receiver (Reveal.external())")
    if not isinstance(blobs, Mapping):
        raise SpecError("blobs must map each committee rank to its output-share blob")
    world = protocol.world
    missing = [r for r in range(world) if r not in blobs]
    extra = sorted(str(r) for r in blobs if r not in range(world))
    if missing or extra:
        raise SpecError(
            f"reconstruction needs the output shares of every rank 0..{world - 1} of the {protocol} "
            f"committee; missing rank(s) {missing}" + (f", unknown key(s) {extra}" if extra else "")
        )
    opened = [open_outputs(plan, protocol, rank, blobs[rank]) for rank in range(world)]
    for rank, o in enumerate(opened[1:], start=1):
        if o.run_id != opened[0].run_id:
            raise SpecError(f"output shares of rank {rank} come from a different run than rank 0's")
    for i, name in enumerate(output_names(plan)):
        metas = {bytes(o.shares[i].meta) for o in opened}
        if len(metas) != 1:
            raise SpecError(f"output {name}: the ranks' shares disagree on shape or type")
    import spu

    io = spu.Io(world, runtime_config(protocol, plan.numerics))
    outputs = []
    for i, name in enumerate(output_names(plan)):
        try:
            outputs.append(np.asarray(io.reconstruct([o.shares[i] for o in opened])))
        except RuntimeError as exc:
            raise SpecError(
                f"output {name}: the shares do not reconstruct: {str(exc).strip()[:200]}"
            ) from None
    return decode(plan, outputs)
