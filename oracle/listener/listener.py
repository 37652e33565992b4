"""The reorg-safe log follower: confirmations, rollback, checkpoint, replay, backoff.

See the "Listener" section of docs/NODE.md for the design. In short: each sync step reads
the head over HTTP, checks the tracked block hashes against the canonical chain (rolling
back through `on_rollback` when they diverge), then dispatches the logs of blocks at least
`confirmations` deep, in order, each at most once per ``(txHash, logIndex)``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal

from .backoff import Backoff
from .canonical import extend_window, find_fork
from .errors import ChainMoved, HandlerFailed, ListenerHalted, TransientListenerError
from .heads import HeadWatcher
from .records import ChainLog, LogFilter, filters_fingerprint
from .rpc import ChainReader, HttpChainReader
from .store import ListenerStore

__all__ = ["Handler", "Listener", "ListenerStatus", "RollbackHook"]

log = logging.getLogger(__name__)

Handler = Callable[[ChainLog], Awaitable[None]]
"""Acts on one confirmed log; must be idempotent per event (see docs/NODE.md)."""

RollbackHook = Callable[[int, Sequence[ChainLog]], Awaitable[None]]
"""Undoes what was started for logs above the fork block, given in dispatch order."""


@dataclass(frozen=True)
class ListenerStatus:
    """A snapshot of the listener's progress.

    `processed_block` is the block up to which every log was dispatched in this run (after a
    restart it starts at the checkpoint minus the replay margin); None before the first step.
    """

    head: int | None
    processed_block: int | None
    transport: Literal["ws", "poll"]
    reorgs: int
    dispatched: int
    rolled_back: int
    consecutive_failures: int


class Listener:
    """Follows the logs selected by `filters` and dispatches each confirmed one to `handler`.

    `rpc_http` is the JSON-RPC URL (or a `ChainReader`, for tests and custom transports);
    `rpc_ws`, when given, is a WebSocket URL used only to be woken on new heads. The
    checkpoint, recent block hashes and the record of dispatched logs live in the SQLite
    file `store_path`. `confirmations` (0 allowed on a devnet) and `on_rollback` are
    required: they decide what the node acts on and how it undoes it.
    """

    def __init__(
        self,
        rpc_http: str | ChainReader,
        rpc_ws: str | None,
        filters: Sequence[LogFilter],
        store_path: Path,
        *,
        confirmations: int,
        handler: Handler,
        on_rollback: RollbackHook,
        start_block: int = 0,
        poll_interval_s: float = 1.0,
        ws_idle_poll_s: float = 15.0,
        hash_window: int = 128,
        replay_margin: int = 32,
        max_block_range: int = 2_000,
        rpc_timeout_s: float = 10.0,
        backoff: Backoff | None = None,
    ) -> None:
        if not filters:
            raise ValueError("at least one LogFilter is needed")
        if confirmations < 0:
            raise ValueError("confirmations must be >= 0")
        if hash_window < 2 or confirmations >= hash_window:
            raise ValueError("need 2 <= hash_window and confirmations < hash_window")
        if not 0 <= replay_margin <= hash_window:
            raise ValueError("need 0 <= replay_margin <= hash_window")
        if max_block_range < 1 or start_block < 0:
            raise ValueError("need max_block_range >= 1 and start_block >= 0")
        if poll_interval_s <= 0 or ws_idle_poll_s <= 0:
            raise ValueError("poll intervals must be positive")
        if isinstance(rpc_http, str):
            self._reader: ChainReader = HttpChainReader(rpc_http, timeout_s=rpc_timeout_s)
            self._owns_reader = True
        else:
            self._reader = rpc_http
            self._owns_reader = False
        self._ws_url = rpc_ws
        self._filters = tuple(filters)
        self._fingerprint = filters_fingerprint(self._filters)
        self._store_path = store_path
        self._confirmations = confirmations
        self._handler = handler
        self._on_rollback = on_rollback
        self._start_block = start_block
        self._poll_interval_s = poll_interval_s
        self._ws_idle_poll_s = ws_idle_poll_s
        self._hash_window = hash_window
        self._replay_margin = replay_margin
        self._max_block_range = max_block_range
        self._backoff = backoff if backoff is not None else Backoff()

        self._store: ListenerStore | None = None
        self._cursor: int | None = None
        self._head: int | None = None
        self._ws_live = False
        self._reorgs = 0
        self._dispatched = 0
        self._rolled_back = 0
        self._failures = 0
        self._stop: asyncio.Event | None = None
        self._bell = asyncio.Event()
        self._progress = asyncio.Event()

    # -- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> Listener:
        """Open the store (for `sync_once`; `run` opens it by itself)."""
        self._open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Close the store and the HTTP session."""
        await self.aclose()

    def _open(self) -> ListenerStore:
        if self._store is None:
            self._store = ListenerStore(self._store_path)
            self._cursor = None  # re-read the checkpoint from the store
        return self._store

    async def aclose(self) -> None:
        """Close the store and, if the listener created it, the HTTP session."""
        if self._store is not None:
            self._store.close()
            self._store = None
        if self._owns_reader:
            await self._reader.close()

    async def run(self, stop: asyncio.Event) -> None:
        """Follow the chain until `stop` is set; raises `ListenerHalted` when the budget is spent.

        Also stops at once with `ReorgTooDeep` or `StoreMismatch`. A handler in progress when
        `stop` is set finishes; nothing after it is dispatched.
        """
        opened_here = self._store is None
        self._open()
        self._stop = stop
        self._failures = 0
        watcher_task: asyncio.Task[None] | None = None
        try:
            if self._ws_url is not None:
                watcher = HeadWatcher(self._ws_url, self._bell, self._backoff, on_live=self._set_ws_live)
                watcher_task = asyncio.create_task(watcher.run(), name="listener-newheads")
            await self._loop(stop, watcher_task)
        finally:
            self._stop = None
            if watcher_task is not None:
                watcher_task.cancel()
                await asyncio.wait([watcher_task])
            self._ws_live = False
            if opened_here:
                await self.aclose()

    async def _loop(self, stop: asyncio.Event, watcher_task: asyncio.Task[None] | None) -> None:
        loop = asyncio.get_running_loop()
        first_failure_at = 0.0
        while not stop.is_set():
            if watcher_task is not None and watcher_task.done() and not watcher_task.cancelled():
                crash = watcher_task.exception()
                if crash is not None:
                    raise crash
            self._bell.clear()
            try:
                await self.sync_once()
            except TransientListenerError as exc:
                self._failures += 1
                if self._failures == 1:
                    first_failure_at = loop.time()
                self._notify()
                if self._backoff.exhausted(self._failures):
                    waited_s = loop.time() - first_failure_at
                    raise ListenerHalted(
                        f"listener gave up after {self._failures} consecutive failures over "
                        f"{waited_s:.1f} s; last: {exc}"
                    ) from exc
                delay_s = self._backoff.delay_s(self._failures)
                log.warning(
                    "listener step failed (%d of %d), retrying in %.2f s: %s",
                    self._failures,
                    self._backoff.failure_budget,
                    delay_s,
                    exc,
                )
                await _wait_any((stop,), delay_s)
                continue
            if self._failures:
                log.info("listener recovered after %d failed steps", self._failures)
                self._failures = 0
                self._notify()
            if self._bell.is_set():
                continue
            timeout_s = self._ws_idle_poll_s if self._ws_live else self._poll_interval_s
            await _wait_any((stop, self._bell), timeout_s)

    def _set_ws_live(self, live: bool) -> None:
        self._ws_live = live
        self._notify()

    # -- observation ----------------------------------------------------------------------

    @property
    def status(self) -> ListenerStatus:
        """Where the listener is now."""
        return ListenerStatus(
            head=self._head,
            processed_block=self._cursor,
            transport="ws" if self._ws_live else "poll",
            reorgs=self._reorgs,
            dispatched=self._dispatched,
            rolled_back=self._rolled_back,
            consecutive_failures=self._failures,
        )

    async def wait_until(self, predicate: Callable[[ListenerStatus], bool]) -> ListenerStatus:
        """Wait until `predicate(status)` holds; returns that status. Bound it with a timeout."""
        while True:
            status = self.status
            if predicate(status):
                return status
            await self._progress.wait()

    def _notify(self) -> None:
        fired, self._progress = self._progress, asyncio.Event()
        fired.set()

    def _stopping(self) -> bool:
        return self._stop is not None and self._stop.is_set()

    # -- one step -------------------------------------------------------------------------

    async def sync_once(self) -> None:
        """One step: read the head, reconcile the tracked chain, dispatch confirmed logs."""
        if self._store is None:
            raise RuntimeError("the listener is not open: use `async with listener` or `run`")
        store = self._store
        if self._cursor is None:
            await self._resume(store)
        assert self._cursor is not None
        head = await self._reader.head()
        self._head = head.number
        fork = await find_fork(self._reader, store, head, self._hash_window)
        if fork is not None:
            await self._roll_back(store, fork)
        await extend_window(self._reader, store, head, self._hash_window)
        self._notify()
        target = head.number - self._confirmations
        while self._cursor < target and not self._stopping():
            low = self._cursor + 1
            high = min(target, low + self._max_block_range - 1)
            for chain_log in await self._fetch(store, low, high):
                if self._stopping():
                    return
                await self._dispatch(store, chain_log)
            store.advance_checkpoint(high, keep_blocks=self._hash_window)
            self._cursor = high
            self._notify()

    async def _resume(self, store: ListenerStore) -> None:
        store.bind(await self._reader.chain_id(), self._fingerprint)
        checkpoint = store.checkpoint
        floor = self._start_block - 1
        if checkpoint is None:
            self._cursor = floor
            log.info("listener starting at block %d", self._start_block)
        else:
            self._cursor = max(floor, checkpoint - self._replay_margin)
            log.info(
                "listener resuming: checkpoint %d, replaying from block %d", checkpoint, self._cursor + 1
            )

    async def _roll_back(self, store: ListenerStore, fork: int) -> None:
        assert self._cursor is not None
        undone = store.events_above(fork)
        checkpoint = store.checkpoint
        log.warning(
            "reorg: blocks above %d left the canonical chain, %d dispatched logs to roll back",
            fork,
            len(undone),
        )
        if undone or (checkpoint is not None and checkpoint > fork):
            try:
                await self._on_rollback(fork, undone)
            except Exception as exc:
                raise HandlerFailed(f"on_rollback({fork}) failed: {type(exc).__name__}: {exc}") from exc
        store.roll_back(fork)
        self._cursor = min(self._cursor, fork)
        self._reorgs += 1
        self._rolled_back += len(undone)

    async def _fetch(self, store: ListenerStore, low: int, high: int) -> list[ChainLog]:
        """Logs of blocks `low`..`high` matching any filter, checked against the tracked hashes."""
        merged: dict[tuple[str, int], ChainLog] = {}
        for log_filter in self._filters:
            for chain_log in await self._reader.logs(log_filter, low, high):
                merged.setdefault(chain_log.key, chain_log)
        found = sorted(merged.values(), key=lambda c: c.position)
        tracked = store.header_hashes(low, high)
        for chain_log in found:
            if not low <= chain_log.block_number <= high:
                raise ChainMoved(f"got a log of block {chain_log.block_number} for blocks {low}..{high}")
            expected = tracked.get(chain_log.block_number)
            if expected is not None and expected != chain_log.block_hash:
                raise ChainMoved(f"block {chain_log.block_number} changed between reading its hash and logs")
        return found

    async def _dispatch(self, store: ListenerStore, chain_log: ChainLog) -> None:
        if store.is_recorded(chain_log.key):
            return
        try:
            await self._handler(chain_log)
        except Exception as exc:
            raise HandlerFailed(
                f"handler failed on log {chain_log.tx_hash}:{chain_log.log_index} of block "
                f"{chain_log.block_number}: {type(exc).__name__}: {exc}"
            ) from exc
        store.record(chain_log)
        self._dispatched += 1
        log.debug(
            "dispatched log %s:%d of block %d", chain_log.tx_hash, chain_log.log_index, chain_log.block_number
        )


async def _wait_any(events: Sequence[asyncio.Event], timeout_s: float) -> None:
    """Return when any of `events` is set or after `timeout_s`."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
