"""The client side: `P2PClient` signs every request with the sender's key, retries transient
failures (each attempt signed afresh), and turns error answers into typed `PeerError`s."""

import asyncio
import hashlib
import json
import logging
import os
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

import aiohttp
from eth_account.signers.local import LocalAccount
from multidict import CIMultiDictProxy
from yarl import URL

from oracle.chain.rpc import RetryPolicy
from oracle.chain.staking import NodeInfo

from .errors import PeerError, PeerFailed, PeerNotFound, PeerRefused, PeerRejected, PeerUnavailable
from .routes import HEADER_UPLOADER, JSON, OCTET_STREAM, ResultSignature
from .signing import HEADER_SHA256, Audience, body_sha256, sign_request

__all__ = ["DEFAULT_RETRY", "BlobReceipt", "P2PClient", "Peer", "PeerResponse"]

log = logging.getLogger(__name__)

DEFAULT_RETRY = RetryPolicy(attempts=4, base_delay_s=0.2, max_delay_s=3.0)
TRANSIENT_STATUSES = frozenset({429, 502, 503, 504})
TRANSIENT_ERRORS = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError)
CHUNK_BYTES = 64 << 10


@dataclass(frozen=True)
class Peer:
    """A node to talk to: its endpoint URL and its identity (what requests are signed for)."""

    url: str
    audience: Audience

    @classmethod
    def of_node(cls, node: NodeInfo, chain_id: int) -> "Peer":
        """From the NodeRegistry record: the registered endpoint and signing key."""
        return cls(node.endpoint, Audience(chain_id, node.signer))


@dataclass(frozen=True)
class PeerResponse:
    """A successful answer (for a download: the body is empty, the bytes are in the file)."""

    url: str
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON; `PeerFailed` when it is not."""
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise PeerFailed(
                f"answer from {self.url} is not JSON: {exc}", url=self.url, status=self.status
            ) from exc


@dataclass(frozen=True)
class BlobReceipt:
    """A blob a peer holds."""

    task_id: int
    name: str
    sha256: str
    size_bytes: int
    uploader: str | None = None


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _error_of(body: bytes) -> tuple[str | None, str]:
    """(code, message) of an error answer, tolerating answers that are not ours."""
    try:
        parsed = json.loads(body)
        if isinstance(parsed, dict) and isinstance(parsed.get("error"), str):
            return parsed["error"], str(parsed.get("message", ""))
    except ValueError:
        pass
    return None, body[:200].decode("utf-8", "replace")


def _raise_for(url: URL, method: str, status: int, body: bytes) -> None:
    code, message = _error_of(body)
    text = f"{method} {url} answered {status} {code or ''}: {message}".replace("  ", " ")
    kind: type[PeerError]
    if status in (401, 403):
        kind = PeerRefused
    elif status == 404:
        kind = PeerNotFound
    elif 400 <= status < 500:
        kind = PeerRejected
    else:
        kind = PeerFailed
    raise kind(text, url=str(url), status=status, code=code)


class P2PClient:
    """Signs requests with `account` (a node's signing key, or a requester's or provider's key).

    `timeout_s` bounds connecting and each wait for data, not a whole transfer, so a large
    upload that keeps moving is never cut off. Use it as an async context manager, or `close()`.
    """

    def __init__(
        self,
        account: LocalAccount,
        timeout_s: float = 30.0,
        *,
        retry: RetryPolicy = DEFAULT_RETRY,
        max_response_bytes: int = 64 << 20,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if timeout_s <= 0 or max_response_bytes < 0:
            raise ValueError("timeout_s must be positive and max_response_bytes non-negative")
        self.account = account
        self.timeout_s = timeout_s
        self.retry = retry
        self.max_response_bytes = max_response_bytes
        self._sleep = sleep
        self._session: aiohttp.ClientSession | None = None

    @property
    def address(self) -> str:
        """The address requests are signed by."""
        return str(self.account.address)

    async def __aenter__(self) -> "P2PClient":
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection pool."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            timeout = aiohttp.ClientTimeout(
                total=None, connect=self.timeout_s, sock_connect=self.timeout_s, sock_read=self.timeout_s
            )
            self._session = aiohttp.ClientSession(timeout=timeout)
        return self._session

    # -- generic -------------------------------------------------------------------------------

    async def get(self, peer: Peer, path: str, *, query: Mapping[str, str] | None = None) -> PeerResponse:
        """A signed GET."""
        return await self.request("GET", peer, path, query=query)

    async def put(
        self, peer: Peer, path: str, body: bytes | Path, *, content_type: str = OCTET_STREAM
    ) -> PeerResponse:
        """A signed PUT of bytes or of a file (streamed)."""
        return await self.request("PUT", peer, path, body=body, content_type=content_type)

    async def post(self, peer: Peer, path: str, payload: Any) -> PeerResponse:
        """A signed POST of a JSON payload."""
        body = json.dumps(payload, separators=(",", ":")).encode()
        return await self.request("POST", peer, path, body=body, content_type=JSON)

    async def request(
        self,
        method: str,
        peer: Peer,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: bytes | Path | None = None,
        content_type: str | None = None,
        download_to: Path | None = None,
        max_response_bytes: int | None = None,
    ) -> PeerResponse:
        """Send one signed request, retrying transient failures; typed `PeerError`s otherwise.

        With `download_to`, a 200 answer's body is streamed into that file (verified against
        the peer's ``X-Datum-Content-SHA256``) instead of being returned.
        """
        url = URL(peer.url.rstrip("/") + path)
        if query:
            url = url.with_query(dict(query))
        if body is None:
            digest = body_sha256(b"")
        elif isinstance(body, Path):
            digest = await asyncio.to_thread(_file_sha256, body)
        else:
            digest = body_sha256(body)
        limit = self.max_response_bytes if max_response_bytes is None else max_response_bytes
        attempts = self.retry.attempts
        for attempt in range(1, attempts + 1):
            auth = sign_request(
                self.account, peer.audience, method, url.raw_path, url.raw_query_string, digest
            )
            headers = auth.headers()
            if content_type is not None:
                headers["Content-Type"] = content_type
            status: int | None = None
            code: str | None = None
            try:
                if isinstance(body, Path):
                    with body.open("rb") as f:
                        answer = await self._send(method, url, f, headers, limit, download_to)
                else:
                    answer = await self._send(method, url, body, headers, limit, download_to)
            except TRANSIENT_ERRORS as exc:
                reason = f"{type(exc).__name__}: {exc}"
            else:
                if answer.status < 300:
                    return answer
                if answer.status not in TRANSIENT_STATUSES:
                    _raise_for(url, method, answer.status, answer.body)
                status = answer.status
                code, message = _error_of(answer.body)
                reason = f"{status} {code or ''}: {message}"
            if attempt == attempts:
                raise PeerUnavailable(
                    f"{method} {url}: peer unavailable after {attempt} attempts ({reason})",
                    url=str(url),
                    status=status,
                    code=code,
                )
            delay = self.retry.delay_s(attempt)
            log.warning(
                "%s %s: transient failure (%s), retry %d in %.2f s", method, url, reason, attempt, delay
            )
            await self._sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _send(
        self,
        method: str,
        url: URL,
        data: bytes | BinaryIO | None,
        headers: dict[str, str],
        limit: int,
        download_to: Path | None,
    ) -> PeerResponse:
        # never follow redirects: they would hand a signed request to another URL
        request = self._http().request(method, url, data=data, headers=headers, allow_redirects=False)
        async with request as resp:
            if download_to is not None and resp.status == 200:
                await self._download(resp, url, download_to, limit)
                return PeerResponse(str(url), resp.status, resp.headers, b"")
            if resp.content_length is not None and resp.content_length > limit:
                raise PeerFailed(
                    f"{method} {url}: answer of {resp.content_length} bytes is over {limit}", url=str(url)
                )
            parts: list[bytes] = []
            size = 0
            async for chunk in resp.content.iter_chunked(CHUNK_BYTES):
                size += len(chunk)
                if size > limit:
                    raise PeerFailed(f"{method} {url}: answer is over {limit} bytes", url=str(url))
                parts.append(chunk)
            return PeerResponse(str(url), resp.status, resp.headers, b"".join(parts))

    @staticmethod
    async def _download(resp: aiohttp.ClientResponse, url: URL, dest: Path, limit: int) -> None:
        expected = resp.headers.get(HEADER_SHA256)
        if expected is None:
            raise PeerFailed(f"GET {url}: answer carries no {HEADER_SHA256}", url=str(url))
        temp = dest.with_name(f".{dest.name}.{secrets.token_hex(6)}.part")
        digest = hashlib.sha256()
        size = 0
        out = await asyncio.to_thread(temp.open, "wb")
        try:
            async for chunk in resp.content.iter_chunked(1 << 20):
                size += len(chunk)
                if size > limit:
                    raise PeerFailed(f"GET {url}: blob is over {limit} bytes", url=str(url))
                digest.update(chunk)
                await asyncio.to_thread(out.write, chunk)
            await asyncio.to_thread(out.close)
            if digest.hexdigest() != expected.lower():
                raise PeerFailed(f"GET {url}: received bytes do not hash to {expected}", url=str(url))
            await asyncio.to_thread(os.replace, temp, dest)
        finally:
            out.close()
            temp.unlink(missing_ok=True)

    # -- routes --------------------------------------------------------------------------------

    async def health(self, peer: Peer) -> dict[str, Any]:
        """The peer's health answer (unauthenticated)."""
        answer = (await self.get(peer, "/v1/health")).json()
        if not isinstance(answer, dict):
            raise PeerFailed("health answer is not an object", url=peer.url)
        return answer

    async def fetch_spec(self, peer: Peer, task_id: int) -> bytes:
        """The spec bytes of `task_id` (check them against the on-chain spec hash)."""
        return (await self.get(peer, f"/v1/tasks/{task_id}/spec")).body

    async def fetch_result(self, peer: Peer, task_id: int) -> bytes:
        """The private result of `task_id` (the sender must be its receiver)."""
        return (await self.get(peer, f"/v1/tasks/{task_id}/result")).body

    async def upload_blob(self, peer: Peer, task_id: int, name: str, content: bytes | Path) -> BlobReceipt:
        """Upload an input blob (bytes, or a file streamed from disk); the peer's receipt is checked."""
        sent = await self.put(peer, f"/v1/tasks/{task_id}/blobs/{name}", content)
        expected = (
            body_sha256(content)
            if isinstance(content, bytes)
            else await asyncio.to_thread(_file_sha256, content)
        )
        receipt = sent.json()
        try:
            result = BlobReceipt(
                int(receipt["task_id"]),
                str(receipt["name"]),
                str(receipt["sha256"]),
                int(receipt["size_bytes"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise PeerFailed(f"malformed upload receipt: {exc}", url=peer.url, status=sent.status) from exc
        if result.sha256 != expected or result.name != name or result.task_id != task_id:
            raise PeerFailed(
                f"upload receipt {receipt} does not match what was sent", url=peer.url, status=sent.status
            )
        return result

    async def download_blob(
        self, peer: Peer, task_id: int, name: str, dest: Path, *, max_bytes: int
    ) -> BlobReceipt:
        """Stream a blob into `dest` (at most `max_bytes`), verified against its sha256."""
        answer = await self.request(
            "GET", peer, f"/v1/tasks/{task_id}/blobs/{name}", download_to=dest, max_response_bytes=max_bytes
        )
        size = (await asyncio.to_thread(dest.stat)).st_size
        sha = answer.headers[HEADER_SHA256].lower()  # the downloaded bytes were checked against it
        return BlobReceipt(task_id, name, sha, size, answer.headers.get(HEADER_UPLOADER))

    async def post_signature(self, peer: Peer, task_id: int, signature: ResultSignature) -> None:
        """Post this node's Result signature to the task's aggregator."""
        await self.post(peer, f"/v1/tasks/{task_id}/signatures", signature.model_dump())
