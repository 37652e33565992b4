"""Labeled PSI with a Diffie-Hellman OPRF over ristretto255 (our own construction).

Provider, once per key (reused across queries until the key rotates):
    for each provider key x with label record L(x):
        F = k * H(x)                      (H: hash to ristretto255)
        tag || K = BLAKE2b(len(x) || x || F)   (16-byte lookup tag, 32-byte AEAD key)
        table[tag] = ChaCha20-Poly1305_K(nonce 0, pad(L(x)), aad = key_id || tag)
    (K is used for one message only, so the fixed nonce is safe; records are padded to
    `label_bytes` so their sizes say nothing.)

Per query, the requester blinds each of its keys with a fresh scalar r: Q = r * H(x); the
provider answers k * Q; the requester unblinds with r^-1 to get F = k * H(x), derives tag and
K, looks the tag up in the table and decrypts. One round trip: the query carries the key id
of the table the requester has cached, and the answer carries the table only when that id is
stale.

Who learns what (semi-honest, one-more-DH / ROM): the provider sees only the number of
blinded points (each uniform in the group whatever the key) and whether the requester's
cached table is current; the requester learns the labels of its matching keys and the table
size. It cannot test a key without a provider evaluation, so `max_query_keys` is the
provider's rate limit on guesses.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from compute.errors import ComputeError, ProtocolAbort, SpecError
from compute.psi.channel import Channel, pack_frames, unpack_frames
from compute.psi.keys import KeyedRows, encode_key
from compute.psi.ristretto import (
    POINT_BYTES,
    base_multiply,
    hash_to_point,
    invert_scalar,
    multiply,
    random_scalar,
    split_points,
)

TAG_BYTES = 16
AEAD_OVERHEAD = 16
_NONCE = bytes(12)
_PERSON_POINT = b"datum-lpsi-h2g"
_PERSON_OUT = b"datum-lpsi-out"
_PERSON_KEY_ID = b"datum-lpsi-kid"
_TABLE_MAGIC = b"datum-label-table-v1"
_STALE, _CURRENT = b"table", b"same"


@dataclass(frozen=True)
class OprfKey:
    """The provider's OPRF secret; `key_id` (public) names the tables built with it."""

    scalar: bytes = field(repr=False)

    @classmethod
    def generate(cls) -> OprfKey:
        """A fresh random key (rotate by generating a new one and rebuilding the table)."""
        return cls(random_scalar())

    @property
    def key_id(self) -> bytes:
        """16-byte public identifier: a hash of scalar * G."""
        return hashlib.blake2b(base_multiply(self.scalar), digest_size=16, person=_PERSON_KEY_ID).digest()


def derive_tag_and_key(encoding: bytes, evaluated: bytes) -> tuple[bytes, bytes]:
    """OPRF output for a key encoding and its evaluated point F = k*H(x): (tag, AEAD key)."""
    out = hashlib.blake2b(
        struct.pack(">I", len(encoding)) + encoding + evaluated,
        digest_size=TAG_BYTES + 32,
        person=_PERSON_OUT,
    ).digest()
    return out[:TAG_BYTES], out[TAG_BYTES:]


def encode_labels(labels: Sequence[str], label_bytes: int) -> bytes:
    """Length-prefixed label record padded with zeros to label_bytes; SpecError if too long."""
    record = encode_key(labels)
    if len(record) > label_bytes:
        raise SpecError(f"a label record needs {len(record)} bytes, the spec allows {label_bytes}")
    return record + bytes(label_bytes - len(record))


def decode_labels(padded: bytes, count: int) -> tuple[str, ...]:
    """Inverse of encode_labels; ComputeError on a malformed record."""
    try:
        (n,) = struct.unpack_from(">H", padded, 0)
        offset, out = 2, []
        for _ in range(n):
            (length,) = struct.unpack_from(">I", padded, offset)
            offset += 4
            out.append(padded[offset : offset + length].decode("utf-8"))
            offset += length
    except (struct.error, UnicodeDecodeError):
        raise ComputeError("malformed label record") from None
    if n != count or offset > len(padded) or any(padded[offset:]):
        raise ComputeError("malformed label record")
    return tuple(out)


@dataclass(frozen=True)
class LabelTable:
    """The provider's encrypted label table: sorted 16-byte tags and fixed-size sealed records."""

    key_id: bytes
    label_columns: tuple[str, ...]
    label_bytes: int
    tags: bytes = field(repr=False)
    sealed: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.tags) % TAG_BYTES or len(self.sealed) != len(self) * self.record_bytes:
            raise ComputeError("label table sizes are inconsistent")

    def __len__(self) -> int:
        return len(self.tags) // TAG_BYTES

    @property
    def record_bytes(self) -> int:
        """Size of one sealed record."""
        return self.label_bytes + AEAD_OVERHEAD

    def lookup(self, tag: bytes) -> bytes | None:
        """The sealed record under `tag` (binary search), or None."""
        lo, hi = 0, len(self)
        while lo < hi:
            mid = (lo + hi) // 2
            probe = self.tags[mid * TAG_BYTES : (mid + 1) * TAG_BYTES]
            if probe == tag:
                return self.sealed[mid * self.record_bytes : (mid + 1) * self.record_bytes]
            if probe < tag:
                lo = mid + 1
            else:
                hi = mid
        return None

    def to_bytes(self) -> bytes:
        """Serialize (for caching at the requester and for transfer)."""
        return pack_frames(
            [
                _TABLE_MAGIC,
                self.key_id,
                struct.pack(">I", self.label_bytes),
                encode_key(self.label_columns),
                self.tags,
                self.sealed,
            ]
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> LabelTable:
        """Parse a serialized table; ProtocolAbort when malformed."""
        frames = unpack_frames(data, 6)
        if len(frames) != 6 or frames[0] != _TABLE_MAGIC or len(frames[1]) != 16 or len(frames[2]) != 4:
            raise ProtocolAbort("malformed label table")
        (label_bytes,) = struct.unpack(">I", frames[2])
        columns = decode_labels(frames[3], struct.unpack_from(">H", frames[3], 0)[0]) if frames[3] else ()
        try:
            return cls(frames[1], columns, label_bytes, frames[4], frames[5])
        except ComputeError:
            raise ProtocolAbort("malformed label table") from None


@dataclass(frozen=True)
class DhProvider:
    """A provider ready to serve queries: its key and the table built with it."""

    key: OprfKey
    table: LabelTable


def prepare_provider(
    keyed: KeyedRows,
    labels: Sequence[tuple[str, ...]],
    label_columns: tuple[str, ...],
    label_bytes: int,
    key: OprfKey,
) -> DhProvider:
    """Build the encrypted table; `labels[i]` is the label tuple of key position i."""
    if len(labels) != len(keyed):
        raise SpecError("one label tuple per distinct key is needed")
    key_id = key.key_id
    entries = []
    for encoding, label in zip(keyed.encodings, labels, strict=True):
        evaluated = multiply(key.scalar, hash_to_point(_PERSON_POINT, encoding))
        tag, aead_key = derive_tag_and_key(encoding, evaluated)
        sealed = ChaCha20Poly1305(aead_key).encrypt(_NONCE, encode_labels(label, label_bytes), key_id + tag)
        entries.append((tag, sealed))
    entries.sort()
    for (a, _), (b, _) in zip(entries, entries[1:], strict=False):
        if a == b:
            raise ComputeError("two provider keys share a lookup tag (2^-128 event)")
    table = LabelTable(
        key_id, label_columns, label_bytes, b"".join(t for t, _ in entries), b"".join(s for _, s in entries)
    )
    return DhProvider(key, table)


@dataclass(frozen=True)
class QueryMessage:
    """Requester -> provider: the key id of its cached table (or empty) and blinded points."""

    cached_key_id: bytes
    points: tuple[bytes, ...]

    def to_bytes(self) -> bytes:
        """Serialize."""
        return pack_frames([self.cached_key_id, b"".join(self.points)])

    @classmethod
    def from_bytes(cls, data: bytes, max_points: int) -> QueryMessage:
        """Parse and check every point; ProtocolAbort when malformed or over the limit."""
        frames = unpack_frames(data, 2)
        if len(frames) != 2 or len(frames[0]) not in (0, 16):
            raise ProtocolAbort("malformed query")
        return cls(frames[0], split_points(frames[1], max_points))


@dataclass(frozen=True)
class AnswerMessage:
    """Provider -> requester: evaluated points, and the table when the cached one is stale."""

    key_id: bytes
    points: tuple[bytes, ...]
    table: LabelTable | None

    def to_bytes(self) -> bytes:
        """Serialize."""
        if self.table is None:
            return pack_frames([_CURRENT, self.key_id, b"".join(self.points)])
        return pack_frames([_STALE, self.key_id, b"".join(self.points), self.table.to_bytes()])

    @classmethod
    def from_bytes(cls, data: bytes, max_points: int) -> AnswerMessage:
        """Parse and check; ProtocolAbort when malformed."""
        frames = unpack_frames(data, 4)
        if (
            len(frames) < 3
            or len(frames[1]) != 16
            or (frames[0], len(frames)) not in ((_CURRENT, 3), (_STALE, 4))
        ):
            raise ProtocolAbort("malformed answer")
        table = LabelTable.from_bytes(frames[3]) if frames[0] == _STALE else None
        if table is not None and table.key_id != frames[1]:
            raise ProtocolAbort("answer and table were made with different keys")
        return cls(frames[1], split_points(frames[2], max_points), table)


@dataclass(frozen=True)
class QueryState:
    """The requester's secret blinding state for one query (never leaves the requester)."""

    encodings: tuple[bytes, ...] = field(repr=False)
    unblinders: tuple[bytes, ...] = field(repr=False)


def blind(encodings: Sequence[bytes]) -> tuple[QueryState, tuple[bytes, ...]]:
    """Blind each key with a fresh scalar: r * H(x)."""
    scalars = [random_scalar() for _ in encodings]
    points = tuple(
        multiply(r, hash_to_point(_PERSON_POINT, e)) for r, e in zip(scalars, encodings, strict=True)
    )
    return QueryState(tuple(encodings), tuple(invert_scalar(r) for r in scalars)), points


def evaluate(key: OprfKey, points: Sequence[bytes]) -> tuple[bytes, ...]:
    """The provider's only per-query work: k * Q for each (already checked) point."""
    return tuple(multiply(key.scalar, p) for p in points)


def finish(state: QueryState, answers: Sequence[bytes], table: LabelTable) -> dict[int, tuple[str, ...]]:
    """Unblind, derive tags, look up and decrypt: {query position: labels} for matches."""
    if len(answers) != len(state.encodings):
        raise ProtocolAbort("answer size differs from the query size")
    found: dict[int, tuple[str, ...]] = {}
    for position, (encoding, unblinder, answer) in enumerate(
        zip(state.encodings, state.unblinders, answers, strict=True)
    ):
        tag, aead_key = derive_tag_and_key(encoding, multiply(unblinder, answer))
        sealed = table.lookup(tag)
        if sealed is None:
            continue
        try:
            padded = ChaCha20Poly1305(aead_key).decrypt(_NONCE, sealed, table.key_id + tag)
        except InvalidTag:
            raise ProtocolAbort("a label record failed authentication") from None
        found[position] = decode_labels(padded, len(table.label_columns))
    return found


def run_dh_requester(
    channel: Channel, keyed: KeyedRows, max_query_keys: int, cached: LabelTable | None, max_answer_bytes: int
) -> tuple[dict[int, tuple[str, ...]], LabelTable]:
    """Requester side over a channel: {key position: labels} and the (possibly new) table."""
    if len(keyed) > max_query_keys:
        raise SpecError(f"query has {len(keyed)} distinct keys, the limit is {max_query_keys}")
    state, points = blind(keyed.encodings)
    channel.send(QueryMessage(cached.key_id if cached else b"", points).to_bytes())
    answer = AnswerMessage.from_bytes(channel.recv(max_answer_bytes), len(points))
    table = answer.table if answer.table is not None else cached
    if table is None or table.key_id != answer.key_id:
        raise ProtocolAbort("provider did not send the table for its current key")
    return finish(state, answer.points, table), table


def run_dh_provider(channel: Channel, provider: DhProvider, max_query_keys: int) -> int:
    """Provider side over a channel: answer one query; return its size (all it learns)."""
    query = QueryMessage.from_bytes(
        channel.recv(4 + 4 + 16 + 4 + POINT_BYTES * max_query_keys), max_query_keys
    )
    current = provider.key.key_id
    table = None if query.cached_key_id == current else provider.table
    channel.send(AnswerMessage(current, evaluate(provider.key, query.points), table).to_bytes())
    return len(query.points)
