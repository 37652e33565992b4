"""Size-only PSI (PSI cardinality) with Diffie-Hellman over ristretto255.

libpsi's ECDH/KKRT/RR22 reveal the intersecting elements to their receiver, so reveal=size
uses this protocol instead (receiver R with items X, sender S with items Y):

1. R picks a secret a and sends {a*H(x)} in random order.
2. S picks a secret b and returns {b*a*H(x)} shuffled (which breaks R's link from a point
   back to its x) together with {b*H(y)} shuffled.
3. R computes {a*b*H(y)} and counts the common points.

R learns |X ∩ Y| and |Y|; S learns |X|. Semi-honest (DDH in ristretto255). When both ranks
receive, R sends the count to S at the end.
"""

from __future__ import annotations

import secrets
import struct
from collections.abc import Sequence

from compute.errors import ProtocolAbort
from compute.psi.channel import Channel
from compute.psi.ristretto import hash_to_point, multiply, random_scalar, split_points

_PERSON = b"datum-psi-ca-v1"
MAX_ITEMS = 1 << 24


def _shuffled(items: Sequence[bytes]) -> list[bytes]:
    out = list(items)
    for i in range(len(out) - 1, 0, -1):
        j = secrets.randbelow(i + 1)
        out[i], out[j] = out[j], out[i]
    return out


def run_cardinality_receiver(channel: Channel, digests: Sequence[bytes], tell_peer: bool) -> tuple[int, int]:
    """Receiver side; returns (intersection size, peer set size)."""
    secret = random_scalar()
    masked = [multiply(secret, hash_to_point(_PERSON, d)) for d in digests]
    channel.send(b"".join(_shuffled(masked)))
    doubly_mine = set(split_points(channel.recv(32 * len(digests)), len(digests)))
    if len(doubly_mine) != len(digests):
        raise ProtocolAbort("sender returned a wrong number of points")
    theirs = split_points(channel.recv(32 * MAX_ITEMS), MAX_ITEMS)
    size = sum(1 for p in theirs if multiply(secret, p) in doubly_mine)
    if tell_peer:
        channel.send(struct.pack(">Q", size))
    return size, len(theirs)


def run_cardinality_sender(channel: Channel, digests: Sequence[bytes], told: bool) -> tuple[int | None, int]:
    """Sender side; returns (intersection size if the receiver tells it, else None; peer size)."""
    secret = random_scalar()
    theirs = split_points(channel.recv(32 * MAX_ITEMS), MAX_ITEMS)
    channel.send(b"".join(_shuffled([multiply(secret, p) for p in theirs])))
    channel.send(b"".join(_shuffled([multiply(secret, hash_to_point(_PERSON, d)) for d in digests])))
    if not told:
        return None, len(theirs)
    raw = channel.recv(8)
    if len(raw) != 8:
        raise ProtocolAbort("malformed size message")
    (size,) = struct.unpack(">Q", raw)
    if size > min(len(theirs), len(digests)):
        raise ProtocolAbort("peer reported an impossible intersection size")
    return int(size), len(theirs)
