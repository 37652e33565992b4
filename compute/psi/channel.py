"""Byte channels between two PSI parties, and the framing of multi-part messages.

`Channel` is all the pure-Python protocols (DH cardinality, labeled DH, HE PSI) need: the
node can back it with its p2p transport, `link.py` backs it with an SPU (yacl/brpc) link,
and `memory_channel_pair` connects two threads of one process. Every receive is bounded in
size and in time; a vanished or silent peer surfaces as ProtocolAbort.
"""

from __future__ import annotations

import queue
import struct
from collections.abc import Sequence
from typing import Protocol as TypingProtocol

from compute.errors import ProtocolAbort


class Channel(TypingProtocol):
    """A reliable, ordered, two-party byte-message channel."""

    bytes_sent: int
    bytes_received: int

    def send(self, payload: bytes) -> None:
        """Send one message."""

    def recv(self, max_bytes: int) -> bytes:
        """Receive one message; ProtocolAbort if it is larger than max_bytes or times out."""


class MemoryChannel:
    """One end of an in-process channel (two queues), for running both parties in threads."""

    def __init__(self, outbox: queue.Queue[bytes], inbox: queue.Queue[bytes], timeout_s: float) -> None:
        self._outbox, self._inbox, self._timeout_s = outbox, inbox, timeout_s
        self.bytes_sent = 0
        self.bytes_received = 0

    def send(self, payload: bytes) -> None:
        """Send one message."""
        self.bytes_sent += len(payload)
        self._outbox.put(bytes(payload))

    def recv(self, max_bytes: int) -> bytes:
        """Receive one message within the timeout."""
        try:
            payload = self._inbox.get(timeout=self._timeout_s)
        except queue.Empty:
            raise ProtocolAbort(f"peer sent nothing for {self._timeout_s:.0f} s") from None
        if len(payload) > max_bytes:
            raise ProtocolAbort(f"peer message of {len(payload)} bytes exceeds the {max_bytes} limit")
        self.bytes_received += len(payload)
        return payload


def memory_channel_pair(timeout_s: float) -> tuple[MemoryChannel, MemoryChannel]:
    """Two connected in-process channel ends."""
    a_to_b: queue.Queue[bytes] = queue.Queue()
    b_to_a: queue.Queue[bytes] = queue.Queue()
    return MemoryChannel(a_to_b, b_to_a, timeout_s), MemoryChannel(b_to_a, a_to_b, timeout_s)


def pack_frames(frames: Sequence[bytes]) -> bytes:
    """Join byte strings as u32 count, then per frame a u32 length and the bytes."""
    parts = [struct.pack(">I", len(frames))]
    for frame in frames:
        parts.append(struct.pack(">I", len(frame)))
        parts.append(frame)
    return b"".join(parts)


def unpack_frames(data: bytes, max_frames: int) -> list[bytes]:
    """Inverse of pack_frames; ProtocolAbort on malformed input or too many frames."""
    view = memoryview(data)
    if len(view) < 4:
        raise ProtocolAbort("truncated message")
    (count,) = struct.unpack_from(">I", view, 0)
    if count > max_frames:
        raise ProtocolAbort(f"message has {count} parts, the limit is {max_frames}")
    offset, frames = 4, []
    for _ in range(count):
        if offset + 4 > len(view):
            raise ProtocolAbort("truncated message")
        (length,) = struct.unpack_from(">I", view, offset)
        offset += 4
        if offset + length > len(view):
            raise ProtocolAbort("truncated message")
        frames.append(bytes(view[offset : offset + length]))
        offset += length
    if offset != len(view):
        raise ProtocolAbort("trailing bytes after message")
    return frames
