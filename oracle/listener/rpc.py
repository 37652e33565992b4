"""Reading the chain over HTTP JSON-RPC: heads, block hashes and logs.

`ChainReader` is what the listener needs; `HttpChainReader` implements it over one owned
aiohttp session with an explicit timeout and no retries of its own (the listener's backoff
is the only retry policy). Every failure comes out as `ListenerRpcError`.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from typing import Any, Protocol, cast

import aiohttp

from .errors import ListenerRpcError
from .records import BlockRef, ChainLog, LogFilter, RawBlock, RawLog

__all__ = ["ChainReader", "HttpChainReader"]

log = logging.getLogger(__name__)

_TRANSPORT_ERRORS = (aiohttp.ClientError, TimeoutError, OSError, ValueError)


class ChainReader(Protocol):
    """The chain as the listener reads it."""

    async def chain_id(self) -> int:
        """The chain id (``eth_chainId``)."""
        ...

    async def head(self) -> BlockRef:
        """The latest block."""
        ...

    async def blocks(self, numbers: Sequence[int]) -> list[BlockRef | None]:
        """The canonical blocks at `numbers` (None where the chain is not that long)."""
        ...

    async def logs(self, log_filter: LogFilter, from_block: int, to_block: int) -> list[ChainLog]:
        """Logs matching `log_filter` in blocks `from_block`..`to_block` inclusive."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class HttpChainReader:
    """`ChainReader` over HTTP JSON-RPC.

    `timeout_s` bounds each call; `batch_size` bounds the JSON-RPC batches used to read
    several block headers at once.
    """

    def __init__(self, url: str, *, timeout_s: float = 10.0, batch_size: int = 50) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self._url = url
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._batch_size = batch_size
        self._session: aiohttp.ClientSession | None = None
        self._ids = itertools.count(1)

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def close(self) -> None:
        """Close the HTTP session (a later call opens a new one)."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _post(self, payload: object, what: str) -> Any:
        status = 0
        try:
            async with self._client().post(self._url, json=payload) as response:
                status = response.status
                if status < 400:
                    return await response.json(content_type=None)
        except _TRANSPORT_ERRORS as exc:
            raise ListenerRpcError(f"RPC {what} failed: {type(exc).__name__}: {exc}") from exc
        raise ListenerRpcError(f"RPC {what} failed: HTTP {status}")

    def _request(self, method: str, params: Sequence[object]) -> dict[str, Any]:
        return {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": list(params)}

    @staticmethod
    def _result(method: str, answer: Any) -> Any:
        if not isinstance(answer, dict):
            raise ListenerRpcError(f"RPC {method}: answer is not a JSON-RPC object")
        error = answer.get("error")
        if error is not None:
            message = error.get("message") if isinstance(error, dict) else error
            code = error.get("code") if isinstance(error, dict) else None
            raise ListenerRpcError(f"RPC {method} rejected (code {code}): {message}")
        if "result" not in answer:
            raise ListenerRpcError(f"RPC {method}: answer has neither result nor error")
        return answer["result"]

    async def call(self, method: str, *params: object) -> Any:
        """One JSON-RPC call; its ``result``."""
        return self._result(method, await self._post(self._request(method, params), method))

    async def _batch(self, method: str, params_list: Sequence[Sequence[object]]) -> list[Any]:
        requests = [self._request(method, params) for params in params_list]
        answers = await self._post(requests, f"batch of {len(requests)} {method}")
        if not isinstance(answers, list):
            # A node that refuses the batch answers one error object.
            self._result(method, answers)
            raise ListenerRpcError(f"RPC batch {method}: answer is not a list")
        by_id = {a.get("id"): a for a in answers if isinstance(a, dict)}
        missing = [r["id"] for r in requests if r["id"] not in by_id]
        if missing:
            raise ListenerRpcError(f"RPC batch {method}: {len(missing)} answers missing")
        return [self._result(method, by_id[r["id"]]) for r in requests]

    async def chain_id(self) -> int:
        """The chain id (``eth_chainId``)."""
        answer = await self.call("eth_chainId")
        try:
            return int(answer, 16)
        except (TypeError, ValueError) as exc:
            raise ListenerRpcError(f"RPC eth_chainId: malformed answer {answer!r}") from exc

    async def head(self) -> BlockRef:
        """The latest block."""
        raw = await self.call("eth_getBlockByNumber", "latest", False)
        if raw is None:
            raise ListenerRpcError("RPC eth_getBlockByNumber: no latest block")
        return BlockRef.from_rpc(cast(RawBlock, raw))

    async def blocks(self, numbers: Sequence[int]) -> list[BlockRef | None]:
        """The canonical blocks at `numbers`, read in JSON-RPC batches."""
        found: list[BlockRef | None] = []
        for start in range(0, len(numbers), self._batch_size):
            chunk = numbers[start : start + self._batch_size]
            if len(chunk) == 1:
                raws = [await self.call("eth_getBlockByNumber", hex(chunk[0]), False)]
            else:
                raws = await self._batch("eth_getBlockByNumber", [(hex(n), False) for n in chunk])
            found.extend(None if raw is None else BlockRef.from_rpc(cast(RawBlock, raw)) for raw in raws)
        return found

    async def logs(self, log_filter: LogFilter, from_block: int, to_block: int) -> list[ChainLog]:
        """Logs matching `log_filter` in blocks `from_block`..`to_block` inclusive."""
        raws = await self.call("eth_getLogs", log_filter.query(from_block, to_block))
        if not isinstance(raws, list):
            raise ListenerRpcError("RPC eth_getLogs: answer is not a list")
        return [
            ChainLog.from_rpc(cast(RawLog, raw))
            for raw in raws
            if not (isinstance(raw, dict) and raw.get("removed", False))
        ]
