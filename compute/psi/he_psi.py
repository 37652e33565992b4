"""PSI and labeled PSI by homomorphic polynomial evaluation (BFV through TenSEAL).

Design (after Chen-Laine-Rindal 2017, unbalanced PSI), our own implementation:

* Items. Each key digest d gives, under a public seed, a value v(d) in Z_t, a 31-bit check
  value c(d), and `hash_count` candidate buckets among the N slots of a BFV plaintext.
* Receiver (the querying side): cuckoo-hashes at most `batch_size` keys per batch so each
  bucket holds at most one key, fills the other slots with random values, and sends
  Enc(X^j) for j = 1..degree (X = the slot vector of values): no ciphertext products needed.
* Sender (prepared once per set): simple-hashes every key into all its candidate buckets;
  each bucket's items are split into columns of at most `degree` items with distinct v.
  Per column it keeps the coefficients of P(x) = prod (x - v_i) (roots = its items) and, per
  value channel (the check value, then the label record in `label_chunk_bytes` chunks), the
  interpolation polynomial L with L(v_i) = channel value of item i.
* Answer, per batch and column, with fresh uniform non-zero masks r, r' per slot:
  Enc(r * P(X)) and Enc(L(X) + r' * P(X)) per channel, each a plaintext-weighted sum of the
  received powers, re-randomized with a fresh encryption of zero. Where X is not a root,
  P(X) != 0, so every output is uniform; where it is, the match output is 0 and the channels
  carry the item's check value and label chunks.
* Decoding: a key matches when a column's match output is 0 AND its check channel equals
  c(key). A false match needs v and c to collide: <= (compared items) * 2^-63 per query
  (with t ~ 2^32 and 31 check bits).

Who learns what (semi-honest): the sender sees only ciphertexts and the number of batches
(the query size rounded up to `batch_size`). The receiver learns its matches and labels,
and the number of columns (a bound on the sender's largest bucket, so roughly its set
size). Known limit: outputs are re-randomized but not noise-flooded (TenSEAL exposes no
noise flooding), so BFV noise is not proven to hide the sender's coefficients.
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tenseal as ts

from compute.errors import ComputeError, ProtocolAbort, SpecError
from compute.psi import he_poly
from compute.psi.channel import Channel, pack_frames, unpack_frames
from compute.psi.he_params import HeParams
from compute.psi.labeled_dh import decode_labels, encode_labels

_PERSON = b"datum-he-item"
_MAGIC = b"datum-he-psi-v1"
_CHECK_MASK = 0x7FFFFFFF
_MAX_CIPHERTEXT_BYTES = 4 << 20
_MAX_CONTEXT_BYTES = 16 << 20
_CUCKOO_MAX_KICKS = 2000
U64 = np.uint64


@dataclass(frozen=True)
class HeItem:
    """A key digest as HE PSI sees it."""

    value: int
    check: int
    buckets: tuple[int, ...]


def hash_item(digest: bytes, params: HeParams) -> HeItem:
    """Value in Z_t, check value and candidate buckets of a key digest (public seeded hash)."""
    out = hashlib.blake2b(
        digest, digest_size=12 + 4 * params.hash_count, key=params.hash_seed, person=_PERSON
    ).digest()
    value = int.from_bytes(out[:8], "big") % params.plain_modulus
    check = int.from_bytes(out[8:12], "big") & _CHECK_MASK
    buckets = tuple(
        int.from_bytes(out[12 + 4 * i : 16 + 4 * i], "big") % params.slot_count
        for i in range(params.hash_count)
    )
    return HeItem(value, check, buckets)


def chunk_count(label_bytes: int, params: HeParams) -> int:
    """Label channels needed for a record of label_bytes."""
    return math.ceil(label_bytes / params.label_chunk_bytes) if label_bytes else 0


@dataclass(frozen=True)
class HeSenderTable:
    """The sender's prepared polynomials (reusable across queries; rebuild when the set changes).

    match_coeffs: (columns, degree + 1, N); value_coeffs: (columns, channels, degree, N).
    """

    params: HeParams
    label_columns: tuple[str, ...]
    label_bytes: int
    size: int
    match_coeffs: np.ndarray[Any, np.dtype[np.uint64]] = field(repr=False)
    value_coeffs: np.ndarray[Any, np.dtype[np.uint64]] = field(repr=False)

    @property
    def columns(self) -> int:
        """Polynomials per bucket (what the receiver learns about the sender's load)."""
        return int(self.match_coeffs.shape[0])

    @property
    def channels(self) -> int:
        """Value channels: the check value, then label chunks."""
        return int(self.value_coeffs.shape[1])


def prepare_sender(
    digests: Sequence[bytes],
    labels: Sequence[tuple[str, ...]] | None,
    label_columns: tuple[str, ...],
    label_bytes: int,
    params: HeParams,
) -> HeSenderTable:
    """Simple-hash the sender's distinct keys and build the column polynomials."""
    if labels is not None and len(labels) != len(digests):
        raise SpecError("one label tuple per distinct key is needed")
    n_slots, degree, t = params.slot_count, params.degree, params.plain_modulus
    channels = 1 + (chunk_count(label_bytes, params) if labels is not None else 0)
    buckets: list[list[list[tuple[int, list[int]]]]] = [[] for _ in range(n_slots)]
    for i, digest in enumerate(digests):
        item = hash_item(digest, params)
        record = [item.check]
        if labels is not None:
            record += _chunks(encode_labels(labels[i], label_bytes), params.label_chunk_bytes)
        for b in dict.fromkeys(item.buckets):
            _place(buckets[b], item.value, record, degree)
    columns = max(1, max(len(cols) for cols in buckets))
    roots = np.zeros((columns, degree, n_slots), dtype=U64)
    mask = np.zeros((columns, degree, n_slots), dtype=bool)
    values = np.zeros((columns, channels, degree, n_slots), dtype=U64)
    for b, cols in enumerate(buckets):
        for a, col in enumerate(cols):
            for j, (value, record) in enumerate(col):
                roots[a, j, b], mask[a, j, b] = value, True
                values[a, :, j, b] = record
    match = np.stack([he_poly.roots_to_coeffs(roots[a], mask[a], t) for a in range(columns)])
    interp = np.stack([he_poly.interpolate(roots[a], mask[a], values[a], t) for a in range(columns)])
    return HeSenderTable(
        params, label_columns, label_bytes if labels is not None else 0, len(digests), match, interp
    )


def _place(columns: list[list[tuple[int, list[int]]]], value: int, record: list[int], degree: int) -> None:
    for col in columns:
        if len(col) < degree and all(v != value for v, _ in col):
            col.append((value, record))
            return
    columns.append([(value, record)])


def _chunks(record: bytes, size: int) -> list[int]:
    padded = record + bytes(-len(record) % size)
    return [int.from_bytes(padded[i : i + size], "big") for i in range(0, len(padded), size)]


@dataclass(frozen=True)
class _Batch:
    slots: dict[int, int]  # slot -> position in the receiver's key list
    x: np.ndarray[Any, np.dtype[np.uint64]] = field(repr=False)


def _cuckoo(items: Sequence[HeItem], positions: Sequence[int], params: HeParams) -> _Batch:
    table: list[int | None] = [None] * params.slot_count
    for start in range(len(items)):
        current, choice = start, 0
        for _ in range(_CUCKOO_MAX_KICKS):
            bucket = items[current].buckets[choice]
            occupant = table[bucket]
            table[bucket] = current
            if occupant is None:
                break
            current = occupant
            choice = (items[current].buckets.index(bucket) + 1) % params.hash_count
        else:
            raise ComputeError("cuckoo hashing failed for this batch; lower batch_size")
    x = he_poly.random_residues((params.slot_count,), params.plain_modulus, nonzero=False)
    slots = {}
    for bucket, local in enumerate(table):
        if local is not None:
            x[bucket] = items[local].value
            slots[bucket] = positions[local]
    return _Batch(slots, x)


def _context(params: HeParams) -> Any:
    ctx = ts.context(
        ts.SCHEME_TYPE.BFV,
        poly_modulus_degree=params.poly_modulus_degree,
        plain_modulus=params.plain_modulus,
        coeff_mod_bit_sizes=list(params.coeff_mod_bit_sizes),
    )
    ctx.auto_mod_switch = False
    return ctx


def _check_context(ctx: Any, params: HeParams) -> None:
    data = ctx.seal_context().data.key_context_data()
    plain = 2 * int(data.plain_upper_half_threshold()) - 1
    if (
        not ctx.is_public()
        or int(data.parms().poly_modulus_degree()) != params.poly_modulus_degree
        or plain != params.plain_modulus
        or int(data.total_coeff_modulus_bit_count()) != sum(params.coeff_mod_bit_sizes)
    ):
        raise ProtocolAbort("receiver's HE context does not match the agreed parameters")


def run_he_receiver(
    channel: Channel,
    digests: Sequence[bytes],
    params: HeParams,
    label_columns: tuple[str, ...],
    label_bytes: int,
    max_answer_bytes: int = 1 << 31,
) -> dict[int, tuple[str, ...]]:
    """Querying side: {position in digests: labels} for matches (labels empty for plain PSI)."""
    ctx = _context(params)
    items = [hash_item(d, params) for d in digests]
    positions = list(range(len(items)))
    batches = [
        _cuckoo(items[i : i + params.batch_size], positions[i : i + params.batch_size], params)
        for i in range(0, len(items), params.batch_size)
    ]
    public = ctx.serialize(
        save_public_key=True, save_secret_key=False, save_galois_keys=False, save_relin_keys=False
    )
    channel.send(pack_frames([_MAGIC, public, struct.pack(">I", len(batches))]))
    head = unpack_frames(channel.recv(64), 2)
    if len(head) != 2 or head[0] != _MAGIC or len(head[1]) != 8:
        raise ProtocolAbort("malformed HE PSI setup answer")
    columns, channels = struct.unpack(">II", head[1])
    expected_channels = 1 + (chunk_count(label_bytes, params) if label_columns else 0)
    if channels != expected_channels or not 1 <= columns <= 1 << 16:
        raise ProtocolAbort("sender's table does not match the agreed labels")
    t = params.plain_modulus
    found: dict[int, tuple[str, ...]] = {}
    for batch in batches:
        powers, current = [], batch.x.copy()
        for _ in range(params.degree):
            powers.append(ts.bfv_vector(ctx, current.tolist()).serialize())
            current = he_poly.mulmod(current, batch.x, t)
        channel.send(pack_frames(powers))
        outputs = unpack_frames(channel.recv(max_answer_bytes), columns * (1 + channels))
        if len(outputs) != columns * (1 + channels):
            raise ProtocolAbort("sender answered with a wrong number of ciphertexts")
        plain = [_decrypt(ctx, blob, t) for blob in outputs]
        for a in range(columns):
            match, chans = plain[a * (1 + channels)], plain[a * (1 + channels) + 1 : (a + 1) * (1 + channels)]
            for slot, position in batch.slots.items():
                if match[slot] == 0 and chans[0][slot] == items[position].check:
                    found[position] = _labels_of(chans[1:], slot, params, label_columns, label_bytes)
    return found


def _decrypt(ctx: Any, blob: bytes, t: int) -> np.ndarray[Any, np.dtype[np.uint64]]:
    try:
        vector = ts.bfv_vector_from(ctx, blob)
    except Exception:  # noqa: BLE001 - TenSEAL raises bare exceptions on bad input
        raise ProtocolAbort("malformed ciphertext") from None
    return (np.asarray(vector.decrypt(), dtype=np.int64) % t).astype(U64)


def _labels_of(
    chans: Sequence[Any], slot: int, params: HeParams, columns: tuple[str, ...], size: int
) -> tuple[str, ...]:
    if not columns:
        return ()
    limit = 1 << (8 * params.label_chunk_bytes)
    raw = b""
    for chan in chans:
        value = int(chan[slot])
        if value >= limit:
            raise ComputeError("label chunk out of range")
        raw += value.to_bytes(params.label_chunk_bytes, "big")
    return decode_labels(raw[:size], len(columns))


def run_he_sender(channel: Channel, table: HeSenderTable, max_batches: int) -> int:
    """Answering side; returns the number of batches served (all it learns of the query)."""
    params = table.params
    setup = unpack_frames(channel.recv(_MAX_CONTEXT_BYTES), 3)
    if len(setup) != 3 or setup[0] != _MAGIC or len(setup[2]) != 4:
        raise ProtocolAbort("malformed HE PSI setup")
    try:
        ctx = ts.context_from(setup[1])
    except Exception:  # noqa: BLE001 - TenSEAL raises bare exceptions on bad input
        raise ProtocolAbort("malformed HE context") from None
    _check_context(ctx, params)
    batches: int = struct.unpack(">I", setup[2])[0]
    if batches > max_batches:
        raise ProtocolAbort(f"query of {batches} batches exceeds the limit of {max_batches}")
    channel.send(pack_frames([_MAGIC, struct.pack(">II", table.columns, table.channels)]))
    for _ in range(batches):
        blobs = unpack_frames(channel.recv(params.degree * (_MAX_CIPHERTEXT_BYTES + 4) + 4), params.degree)
        if len(blobs) != params.degree:
            raise ProtocolAbort("query batch has a wrong number of ciphertexts")
        try:
            powers = [ts.bfv_vector_from(ctx, blob) for blob in blobs]
        except Exception:  # noqa: BLE001
            raise ProtocolAbort("malformed ciphertext") from None
        channel.send(pack_frames(_answer_batch(ctx, powers, table)))
    return batches


def _answer_batch(ctx: Any, powers: Sequence[Any], table: HeSenderTable) -> list[bytes]:
    t, n_slots = table.params.plain_modulus, table.params.slot_count
    out = []
    for a in range(table.columns):
        match = table.match_coeffs[a]
        mask = he_poly.random_residues((n_slots,), t, nonzero=True)
        out.append(_weighted_sum(ctx, powers, he_poly.mulmod(match, np.broadcast_to(mask, match.shape), t)))
        for ch in range(table.channels):
            mask = he_poly.random_residues((n_slots,), t, nonzero=True)
            weights = he_poly.mulmod(match, np.broadcast_to(mask, match.shape), t)
            weights[:-1] = (weights[:-1] + table.value_coeffs[a, ch]) % U64(t)
            out.append(_weighted_sum(ctx, powers, weights))
    return out


def _weighted_sum(ctx: Any, powers: Sequence[Any], weights: np.ndarray[Any, np.dtype[np.uint64]]) -> bytes:
    """Enc(sum_j weights[j] * X^j) with X^0 = 1, re-randomized by a fresh Enc(0)."""
    acc = ts.bfv_vector(ctx, [0] * weights.shape[1])
    acc = acc + weights[0].tolist()
    for j, power in enumerate(powers, start=1):
        acc += power * weights[j].tolist()
    return bytes(acc.serialize())
