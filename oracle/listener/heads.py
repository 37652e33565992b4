"""The WebSocket doorbell: an ``eth_subscribe("newHeads")`` that wakes the listener.

Notifications carry no data the listener trusts: it reads heads and logs over HTTP when
woken. A dropped connection is reconnected with capped exponential backoff for as long as
the listener runs (the HTTP poll covers the gap); a node that rejects the subscription is
left alone for the rest of the run.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

from .backoff import Backoff

__all__ = ["HeadWatcher"]

log = logging.getLogger(__name__)

_SUBSCRIBE_ID = 1
_MAX_MESSAGE_BYTES = 1 << 20


class _SubscriptionRejected(Exception):
    """The node answered eth_subscribe with an error."""


class HeadWatcher:
    """Sets `bell` on every new head, and whenever the connection comes up or goes down.

    `on_live` is called with the new state when the subscription starts or stops.
    """

    def __init__(
        self,
        url: str,
        bell: asyncio.Event,
        backoff: Backoff,
        *,
        open_timeout_s: float = 5.0,
        on_live: Callable[[bool], None] | None = None,
    ) -> None:
        self._url = url
        self._bell = bell
        self._backoff = backoff
        self._open_timeout_s = open_timeout_s
        self._on_live = on_live
        self._live = False
        self.heads_seen = 0

    @property
    def live(self) -> bool:
        """Whether the subscription is up right now."""
        return self._live

    def _set_live(self, live: bool) -> None:
        if live == self._live:
            return
        self._live = live
        self._bell.set()
        if self._on_live is not None:
            self._on_live(live)

    async def run(self) -> None:
        """Watch until cancelled (or until the node rejects the subscription)."""
        failures = 0
        while True:
            try:
                async with connect(
                    self._url,
                    open_timeout=self._open_timeout_s,
                    ping_interval=10,
                    ping_timeout=10,
                    close_timeout=1,
                    max_size=_MAX_MESSAGE_BYTES,
                    proxy=None,
                ) as ws:
                    subscription = await self._subscribe(ws)
                    failures = 0
                    log.info("newHeads subscription up")
                    self._set_live(True)
                    async for message in ws:
                        if _is_notification(message, subscription):
                            self.heads_seen += 1
                            self._bell.set()
                log.warning("newHeads subscription closed by the node")
            except _SubscriptionRejected as exc:
                log.warning("node rejected eth_subscribe(newHeads) (%s): polling only", exc)
                self._set_live(False)
                return
            except (OSError, TimeoutError, WebSocketException, ValueError) as exc:
                level = logging.WARNING if failures == 0 else logging.DEBUG
                log.log(level, "newHeads subscription unavailable: %s: %s", type(exc).__name__, exc)
            finally:
                self._set_live(False)
            failures += 1
            await asyncio.sleep(self._backoff.delay_s(failures))

    async def _subscribe(self, ws: ClientConnection) -> str:
        request = {"jsonrpc": "2.0", "id": _SUBSCRIBE_ID, "method": "eth_subscribe", "params": ["newHeads"]}
        await ws.send(json.dumps(request))
        async with asyncio.timeout(self._open_timeout_s):
            while True:
                answer = _decode(await ws.recv())
                if answer.get("id") != _SUBSCRIBE_ID:
                    continue
                if answer.get("error") is not None:
                    raise _SubscriptionRejected(str(answer["error"]))
                subscription = answer.get("result")
                if not isinstance(subscription, str):
                    raise _SubscriptionRejected(f"unexpected answer {answer!r}")
                return subscription


def _decode(message: str | bytes) -> dict[str, Any]:
    decoded = json.loads(message)
    if not isinstance(decoded, dict):
        raise ValueError("WebSocket message is not a JSON object")
    return decoded


def _is_notification(message: str | bytes, subscription: str) -> bool:
    try:
        decoded = _decode(message)
    except ValueError:
        return False
    params = decoded.get("params")
    return (
        decoded.get("method") == "eth_subscription"
        and isinstance(params, dict)
        and params.get("subscription") == subscription
    )
