"""Secret shares of a provider part: making them, packing them for one party, and checking
what a party receives against the plan before it enters the MPC.

A provider (co-located with a committee party, or a separate process feeding the committee)
calls `share_part`: it checks and encodes its columns (encode.py), splits every input matrix
into one share per party with SPU's Io (ABY3: replicated shares; CHEETAH: additive), and
returns one blob per party. A blob is bound to the program digest, the part and the
recipient rank; `open_blob` refuses anything else, in particular shares whose shape, type or
protocol differs from what the program expects, with a SpecError naming the part and input.
The same layout serves plans (one part per provider) and custom functions (one part per
input owner).

Blob layout (big-endian): b"DMPC" | version u8 | plan digest (32) | part u16 | rank u16 |
count u16 | per input: meta length u32, chunk count u32, chunk lengths u64... | metas and
chunks in that order.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from compute.errors import SpecError
from compute.mpc.encode import Columns, encode_part
from compute.mpc.engine import Protocol, runtime_config
from compute.mpc.numerics import Numerics
from compute.mpc.plan import InputSpec, Plan

_MAGIC = b"DMPC"
_VERSION = 1
_HEAD = struct.Struct(">4sB32sHHH")
_ENTRY = struct.Struct(">II")
_MAX_CHUNKS = 1 << 12
_META_MAX = 4096


@dataclass(frozen=True)
class ShareLayout:
    """The secret inputs of a program grouped by part (one provider's or owner's inputs)."""

    digest: bytes
    labels: tuple[str, ...]
    inputs: tuple[InputSpec, ...]
    numerics: Numerics

    def part_inputs(self, part: int) -> tuple[InputSpec, ...]:
        """The inputs of one part, in program order."""
        return tuple(spec for spec in self.inputs if spec.part == part)


def plan_layout(plan: Plan) -> ShareLayout:
    """The share layout of a query plan: one part per provider part."""
    labels = tuple(f"part {i} ({p.table}/{p.provider})" for i, p in enumerate(plan.parts))
    return ShareLayout(plan.digest(), labels, plan.inputs, plan.numerics)


def make_shares(layout: ShareLayout, protocol: Protocol, part: int, arrays: dict[str, Any]) -> list[bytes]:
    """One blob per party rank holding that party's shares of one part's input arrays."""
    import spu
    import spu.libspu as libspu

    world = Protocol(protocol).world
    io = spu.Io(world, runtime_config(protocol, layout.numerics))
    per_rank: list[list[Any]] = [[] for _ in range(world)]
    for spec in layout.part_inputs(part):
        shares = io.make_shares(np.ascontiguousarray(arrays[spec.name]), libspu.Visibility.VIS_SECRET)
        for rank in range(world):
            per_rank[rank].append(shares[rank])
    return [pack_blob(layout, part, rank, per_rank[rank]) for rank in range(world)]


def share_part(plan: Plan, protocol: Protocol, part: int, columns: Columns) -> list[bytes]:
    """What an external provider runs: check and encode its columns, return one blob per rank."""
    return make_shares(plan_layout(plan), protocol, part, encode_part(plan, part, columns))


def pack_share(share: Any) -> bytes:
    """One share as bytes: meta length u32, chunk count u32, chunk lengths u64..., meta, chunks."""
    chunks = [bytes(c) for c in share.share_chunks]
    head = _ENTRY.pack(len(share.meta), len(chunks)) + b"".join(struct.pack(">Q", len(c)) for c in chunks)
    return head + bytes(share.meta) + b"".join(chunks)


def unpack_share(payload: bytes, what: str) -> Any:
    """Inverse of `pack_share` (any malformation is a ProtocolAbort-worthy SpecError)."""
    share, end = read_share(payload, 0, what)
    if end != len(payload):
        raise SpecError(f"{what}: trailing bytes after a share")
    return share


def pack_blob(layout: ShareLayout, part: int, rank: int, shares: Sequence[Any]) -> bytes:
    """Serialise one party's shares of one part."""
    head = _HEAD.pack(_MAGIC, _VERSION, layout.digest, part, rank, len(shares))
    return head + b"".join(pack_share(s) for s in shares)


def blob_limit(layout: ShareLayout, part: int) -> int:
    """The largest blob a party accepts for a part (two ring elements per value, plus slack)."""
    ring_bytes = layout.numerics.ring_bits // 8
    specs = layout.part_inputs(part)
    values = sum(int(np.prod(spec.shape)) for spec in specs)
    return _HEAD.size + values * 2 * ring_bytes + 8192 * (len(specs) + 1)


def open_blob(layout: ShareLayout, protocol: Protocol, part: int, rank: int, blob: bytes) -> list[Any]:
    """This party's shares of `part`, checked against the layout; SpecError on any mismatch."""
    where = layout.labels[part]
    specs = layout.part_inputs(part)
    if len(blob) > blob_limit(layout, part):
        raise SpecError(f"{where}: share blob of {len(blob)} bytes is larger than the program allows")
    try:
        magic, version, digest, got_part, got_rank, count = _HEAD.unpack_from(blob, 0)
    except struct.error:
        raise SpecError(f"{where}: truncated share blob") from None
    if magic != _MAGIC or version != _VERSION:
        raise SpecError(f"{where}: not a share blob of this version")
    if digest != layout.digest:
        raise SpecError(f"{where}: shares were made for a different plan or program")
    if got_part != part or got_rank != rank:
        raise SpecError(f"{where}: shares are for part {got_part}, rank {got_rank}; this is rank {rank}")
    if count != len(specs):
        raise SpecError(f"{where}: {count} shared inputs, the program expects {len(specs)}")
    offset = _HEAD.size
    shares = []
    for spec in specs:
        share, offset = read_share(blob, offset, f"{where} input {spec.name}")
        _check_meta(layout, protocol, spec, bytes(share.meta), f"{where} input {spec.name}")
        shares.append(share)
    if offset != len(blob):
        raise SpecError(f"{where}: trailing bytes in the share blob")
    return shares


def read_share(data: bytes, offset: int, what: str) -> tuple[Any, int]:
    """One share packed by `pack_share` at `offset`, and the offset after it (SpecError if
    malformed or truncated)."""
    import spu.libspu as libspu

    try:
        meta_len, n_chunks = _ENTRY.unpack_from(data, offset)
        offset += _ENTRY.size
        if meta_len > _META_MAX or n_chunks > _MAX_CHUNKS:
            raise SpecError(f"{what}: malformed share")
        sizes = [struct.unpack_from(">Q", data, offset + 8 * i)[0] for i in range(n_chunks)]
    except struct.error:
        raise SpecError(f"{what}: truncated share") from None
    offset += 8 * n_chunks
    end = offset + meta_len + sum(sizes)
    if end > len(data):
        raise SpecError(f"{what}: truncated share")
    share = libspu.Share()
    share.meta = data[offset : offset + meta_len]
    offset += meta_len
    chunks = []
    for size in sizes:
        chunks.append(data[offset : offset + size])
        offset += size
    share.share_chunks = chunks
    return share, offset


def _check_meta(layout: ShareLayout, protocol: Protocol, spec: InputSpec, meta: bytes, where: str) -> None:
    import spu.libspu as libspu

    info = libspu.ValueMeta()
    if not info.ParseFromString(meta):
        raise SpecError(f"{where}: unreadable share metadata")
    shape = tuple(int(d) for d in info.shape.dims)
    if shape != spec.shape:
        raise SpecError(f"{where}: shares have shape {shape}, the program expects {spec.shape}")
    want_type = {
        "num": libspu.DataType.DT_F64,
        "int": libspu.DataType.DT_I64,
        "cat": libspu.DataType.DT_I1,
    }[spec.kind]
    if info.data_type != want_type:
        raise SpecError(f"{where}: shares hold {info.data_type.name}, the program expects {want_type.name}")
    if info.visibility != libspu.Visibility.VIS_SECRET:
        raise SpecError(f"{where}: shares are not secret")
    storage = str(info.storage_type)
    arithmetic = f"<{layout.numerics.field}>"
    if not storage.startswith(f"{Protocol(protocol).value}.") or (
        spec.kind != "cat" and arithmetic not in storage
    ):
        raise SpecError(
            f"{where}: shares of type {storage}, the program runs {protocol} on {layout.numerics.field}"
        )
