"""The replay guard: a bounded memory of the `(sender, nonce)` pairs seen in the skew window.

An entry lives until ``timestamp + window_s``; past that, the timestamp check alone refuses
the request. Entries are never evicted early (that would re-open their replay): a sender
over its share gets `TooManyRequests`, and a full cache answers `Unavailable` until entries
expire.
"""

import heapq
import time
from collections import Counter
from collections.abc import Callable

from .errors import TooManyRequests, Unauthorized, Unavailable

__all__ = ["NonceCache"]


class NonceCache:
    """Remembers nonces per sender for the skew window, within fixed bounds."""

    def __init__(
        self,
        window_s: int,
        *,
        capacity: int = 200_000,
        per_sender: int = 20_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if window_s <= 0 or capacity <= 0 or per_sender <= 0:
            raise ValueError("window_s, capacity and per_sender must be positive")
        self.window_s = window_s
        self.capacity = capacity
        self.per_sender = per_sender
        self._clock = clock
        self._seen: set[tuple[str, str]] = set()
        self._expiries: list[tuple[float, str, str]] = []  # heap of (expires_at, sender, nonce)
        self._per_sender: Counter[str] = Counter()

    def __len__(self) -> int:
        self._purge()
        return len(self._seen)

    def _purge(self) -> None:
        now = self._clock()
        while self._expiries and self._expiries[0][0] < now:
            _, sender, nonce = heapq.heappop(self._expiries)
            self._seen.discard((sender, nonce))
            self._per_sender[sender] -= 1
            if self._per_sender[sender] <= 0:
                del self._per_sender[sender]

    def check_and_record(self, sender: str, nonce: str, timestamp: int) -> None:
        """Record a nonce; `Unauthorized` (replayed_request) when the pair was seen already."""
        self._purge()
        key = (sender.lower(), nonce)
        if key in self._seen:
            raise Unauthorized(
                "this request was already received (nonce reused); sign every request with a fresh nonce",
                code="replayed_request",
            )
        if self._per_sender[key[0]] >= self.per_sender:
            raise TooManyRequests(
                f"{sender} sent more than {self.per_sender} requests in {self.window_s} s; slow down",
                code="sender_quota",
            )
        if len(self._seen) >= self.capacity:
            raise Unavailable("replay cache full; retry shortly", code="replay_cache_full")
        self._seen.add(key)
        self._per_sender[key[0]] += 1
        heapq.heappush(self._expiries, (timestamp + self.window_s, key[0], nonce))
