"""Errors of the event listener.

`ListenerError` is the listener's subsystem base. Failures the listener retries under its
failure budget derive from `TransientListenerError`; the others stop it at once.
"""

from compute.errors import ConfigError, DatumError

__all__ = [
    "ChainMoved",
    "HandlerFailed",
    "ListenerError",
    "ListenerHalted",
    "ListenerRpcError",
    "ReorgTooDeep",
    "StoreMismatch",
    "TransientListenerError",
]


class ListenerError(DatumError):
    """Anything the event listener raises on purpose."""


class TransientListenerError(ListenerError):
    """A failed sync step that is worth retrying after a backoff delay."""


class ListenerRpcError(TransientListenerError, ConnectionError):
    """An RPC call failed: no connection, a timeout, an HTTP error or a JSON-RPC error answer."""


class HandlerFailed(TransientListenerError):
    """The log handler or the rollback hook raised; the original exception is the cause."""


class ChainMoved(TransientListenerError):
    """The chain changed while the listener was reading it (a reorg in flight)."""


class ListenerHalted(ListenerError):
    """The failure budget is spent; the last failure is the cause."""


class ReorgTooDeep(ListenerError):
    """No tracked block is canonical any more: a reorg deeper than the window, or another chain."""


class StoreMismatch(ListenerError, ConfigError):
    """The checkpoint store belongs to another chain or another set of filters."""
