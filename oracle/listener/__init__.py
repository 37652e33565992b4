"""Reorg-safe follower of contract logs, with a persisted checkpoint (SQLite).

`Listener` dispatches each log matched by its `LogFilter`s to an async handler once the log
is `confirmations` blocks deep and its block is still canonical, at most once per
``(txHash, logIndex)`` across restarts, and calls `on_rollback` when a reorg removes blocks
it had acted on. Design: docs/NODE.md, section "Listener".
"""

from .backoff import Backoff
from .errors import (
    ChainMoved,
    HandlerFailed,
    ListenerError,
    ListenerHalted,
    ListenerRpcError,
    ReorgTooDeep,
    StoreMismatch,
    TransientListenerError,
)
from .heads import HeadWatcher
from .listener import Handler, Listener, ListenerStatus, RollbackHook
from .records import BlockRef, ChainLog, LogFilter
from .rpc import ChainReader, HttpChainReader
from .store import ListenerStore

__all__ = [
    "Backoff",
    "BlockRef",
    "ChainLog",
    "ChainMoved",
    "ChainReader",
    "Handler",
    "HandlerFailed",
    "HeadWatcher",
    "HttpChainReader",
    "Listener",
    "ListenerError",
    "ListenerHalted",
    "ListenerRpcError",
    "ListenerStatus",
    "ListenerStore",
    "LogFilter",
    "ReorgTooDeep",
    "RollbackHook",
    "StoreMismatch",
    "TransientListenerError",
]
