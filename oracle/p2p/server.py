"""The node's HTTP API: the app factory, the verification pipeline in front of every signed
route, and the routes' own work (blob streaming, signature checks, byte answers).

Pipeline per request (``docs/P2P.md``, "Verification order"): route and path parameters,
content type and declared length, headers, clock, signature against this node's audience,
authorization, nonce, then the body under the route's limit and against its signed hash.
"""

import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from pydantic import ValidationError

from oracle.chain.signer import ResultDomain

from .access import Caller, NodeAuthorizer, TaskParties, authorize
from .blobs import BlobStore, StoredBlob, check_blob_name
from .errors import (
    ApiError,
    AuthorizerUnavailable,
    BadRequest,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    UnsupportedMediaType,
)
from .replay import NonceCache
from .routes import HEADER_UPLOADER, OCTET_STREAM, Limits, NodeHandlers, ResultSignature, Route, route_table
from .signing import HEADER_SHA256, PROTOCOL_TAG, Audience, RequestAuth, body_sha256, recover_sender

__all__ = ["P2PServer", "ServerConfig", "create_app"]

log = logging.getLogger(__name__)

CHUNK_BYTES = 64 << 10
_TASK_ID = re.compile(r"0|[1-9][0-9]{0,77}")


@dataclass(frozen=True)
class ServerConfig:
    """One node's API settings. `audience` is this node (its chain and signing address);
    `result_domain` is the TaskManager's EIP-712 domain posted signatures must verify under."""

    audience: Audience
    data_dir: Path
    result_domain: ResultDomain
    limits: Limits = field(default_factory=Limits)
    max_skew_s: int = 60
    nonce_capacity: int = 200_000
    nonce_per_sender: int = 20_000


@dataclass(frozen=True)
class _Context:
    request: web.Request
    route: Route
    task_id: int | None
    name: str | None
    auth: RequestAuth | None = None
    caller: Caller | None = None

    @property
    def signed(self) -> tuple[RequestAuth, Caller]:
        assert self.auth is not None and self.caller is not None, "route is signed"
        return self.auth, self.caller

    @property
    def task(self) -> int:
        assert self.task_id is not None, "route has a task id"
        return self.task_id


def _parse_task_id(raw: str) -> int:
    if not _TASK_ID.fullmatch(raw) or int(raw) >= 2**256:
        raise BadRequest(
            f"invalid task id {raw[:80]!r}: a decimal uint256 without leading zeros", code="bad_task_id"
        )
    return int(raw)


def _error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status, headers=headers)


@web.middleware
async def _json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every failure becomes ``{"error": code, "message": ...}``; unexpected ones are logged as 500."""
    try:
        return await handler(request)
    except ApiError as exc:
        level = logging.WARNING if exc.status >= 500 else logging.INFO
        log.log(level, "p2p %s %s: %d %s", request.method, request.path, exc.status, exc.code)
        return _error_response(exc.status, exc.code, exc.message)
    except AuthorizerUnavailable as exc:
        return _error_response(
            503, "authorizer_unavailable", f"cannot check the sender right now ({exc}); retry"
        )
    except web.HTTPException as exc:  # the router's 404/405, aiohttp's own 413
        codes = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}
        allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        message = f"{request.method} {request.path}: {exc.reason}"
        return _error_response(exc.status, codes.get(exc.status, "http_error"), message, allow)
    except Exception:
        log.exception("p2p %s %s failed", request.method, request.path)
        return _error_response(500, "internal_error", "the node failed to handle the request")


class P2PServer:
    """The API of one node; `app` is the aiohttp application, `blobs` its blob store."""

    def __init__(
        self,
        config: ServerConfig,
        handlers: NodeHandlers,
        *,
        authorizer: NodeAuthorizer,
        parties: TaskParties,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.handlers = handlers
        self.authorizer = authorizer
        self.parties = parties
        self._clock = clock
        self.started_at = int(clock())
        self.blobs = BlobStore(config.data_dir / "p2p" / "blobs")
        self.nonces = NonceCache(
            config.max_skew_s, capacity=config.nonce_capacity, per_sender=config.nonce_per_sender, clock=clock
        )
        self.routes = route_table(config.limits)
        impls: dict[str, Callable[[_Context], Awaitable[web.StreamResponse]]] = {
            "health": self._health,
            "spec": self._spec,
            "put_blob": self._put_blob,
            "get_blob": self._get_blob,
            "signatures": self._signatures,
            "result": self._result,
        }
        # the JSON limit bounds anything aiohttp itself would buffer; blobs are streamed
        self.app = web.Application(middlewares=[_json_errors], client_max_size=config.limits.json_max_bytes)
        for route in self.routes:
            self.app.router.add_route(
                route.method, route.path, self._endpoint(route, impls[route.name]), name=route.name
            )

    # -- pipeline ------------------------------------------------------------------------------

    def _endpoint(
        self, route: Route, impl: Callable[[_Context], Awaitable[web.StreamResponse]]
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            info = request.match_info
            task_id = _parse_task_id(info["task_id"]) if "task_id" in info else None
            name = check_blob_name(info["name"]) if "name" in info else None
            self._check_declared_body(route, request)
            if route.access is None:
                return await impl(_Context(request, route, task_id, name))
            auth, caller = await self._authenticate(route, request, task_id)
            return await impl(_Context(request, route, task_id, name, auth, caller))

        return handle

    @staticmethod
    def _check_declared_body(route: Route, request: web.Request) -> None:
        if route.content_type is not None and request.content_type != route.content_type:
            raise UnsupportedMediaType(
                f"{route.method} {route.path} takes {route.content_type}, not {request.content_type}"
            )
        length = request.content_length
        if length is not None and length > route.max_body_bytes:
            raise PayloadTooLarge(
                f"{route.method} {route.path} takes at most {route.max_body_bytes} bytes; got {length}"
            )

    async def _authenticate(
        self, route: Route, request: web.Request, task_id: int | None
    ) -> tuple[RequestAuth, Caller]:
        assert route.access is not None
        auth = RequestAuth.from_headers(request.headers)
        now = self._clock()
        skew = self.config.max_skew_s
        if abs(now - auth.timestamp) > skew:
            raise Unauthorized(
                f"timestamp {auth.timestamp} is {now - auth.timestamp:+.0f} s off this node's clock "
                f"(limit {skew} s); check the sender's clock and sign again",
                code="stale_request",
            )
        if auth.timestamp < self.started_at:
            raise Unauthorized(
                "request signed before this node started (replay protection across restarts); sign it again",
                code="stale_request",
            )
        url = request.rel_url
        try:
            canonical = auth.canonical(
                self.config.audience, request.method, url.raw_path, url.raw_query_string
            )
        except ValueError as exc:
            raise BadRequest(f"request cannot be signed canonically: {exc}", code="bad_request") from exc
        signer = recover_sender(canonical, auth.signature)
        if signer is None or signer.lower() != auth.sender.lower():
            raise Unauthorized(
                f"signature does not match {auth.sender} for this request to {self.config.audience}: "
                "signed by another key, for another node, or changed after signing",
                code="bad_signature",
            )
        caller = await authorize(route.access, auth.sender, task_id, self.authorizer, self.parties)
        self.nonces.check_and_record(auth.sender, auth.nonce, auth.timestamp)
        return auth, caller

    async def _read_body(self, ctx: _Context) -> bytes:
        """The whole (small) body under the route's limit, checked against its signed hash."""
        auth, _ = ctx.signed
        limit = ctx.route.max_body_bytes
        parts: list[bytes] = []
        size = 0
        async for chunk in ctx.request.content.iter_chunked(CHUNK_BYTES):
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"{ctx.route.method} {ctx.route.path} takes at most {limit} bytes")
            parts.append(chunk)
        body = b"".join(parts)
        if body_sha256(body) != auth.body_sha256:
            raise BadRequest("body does not match its signed sha256", code="body_hash_mismatch")
        return body

    # -- routes --------------------------------------------------------------------------------

    async def _health(self, ctx: _Context) -> web.StreamResponse:
        return web.json_response(
            {
                "status": "ok",
                "protocol": PROTOCOL_TAG,
                "node": str(self.config.audience),
                "time": int(self._clock()),
            }
        )

    @staticmethod
    def _bytes(content: bytes) -> web.Response:
        return web.Response(
            body=content, content_type=OCTET_STREAM, headers={HEADER_SHA256: body_sha256(content)}
        )

    async def _spec(self, ctx: _Context) -> web.StreamResponse:
        await self._read_body(ctx)
        return self._bytes(await self.handlers.task_spec(ctx.task, ctx.signed[1]))

    async def _result(self, ctx: _Context) -> web.StreamResponse:
        await self._read_body(ctx)
        return self._bytes(await self.handlers.task_result(ctx.task, ctx.signed[1]))

    async def _put_blob(self, ctx: _Context) -> web.StreamResponse:
        auth, caller = ctx.signed
        assert ctx.name is not None

        async def accept(blob: StoredBlob) -> None:
            await self.handlers.blob_received(blob, caller)

        stored, created = await self.blobs.receive(
            ctx.task,
            ctx.name,
            ctx.request.content.iter_chunked(CHUNK_BYTES),
            expected_sha256=auth.body_sha256,
            max_bytes=ctx.route.max_body_bytes,
            uploader=caller.address,
            accept=accept,
        )
        return web.json_response(stored.receipt(), status=201 if created else 200)

    async def _get_blob(self, ctx: _Context) -> web.StreamResponse:
        await self._read_body(ctx)
        assert ctx.name is not None
        blob = self.blobs.get(ctx.task, ctx.name)
        if blob is None:
            raise NotFound(f"task {ctx.task} has no blob {ctx.name!r} here", code="no_such_blob")
        headers = {HEADER_SHA256: blob.sha256, HEADER_UPLOADER: blob.uploader, "Content-Type": OCTET_STREAM}
        return web.FileResponse(blob.path, headers=headers)

    async def _signatures(self, ctx: _Context) -> web.StreamResponse:
        _, caller = ctx.signed
        body = await self._read_body(ctx)
        try:
            posted = ResultSignature.model_validate_json(body)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            raise BadRequest(
                f"invalid signature payload at {where}: {first['msg']}", code="bad_payload"
            ) from None
        signer = posted.signer(self.config.result_domain, ctx.task)
        if signer is None or signer.lower() != caller.address.lower():
            raise BadRequest(
                f"the Result signature is not a valid low-s signature by {caller.address} for task "
                f"{ctx.task} under this TaskManager's EIP-712 domain",
                code="signature_mismatch",
            )
        await self.handlers.signature_received(ctx.task, posted, caller)
        return web.json_response({"task_id": str(ctx.task), "signer": caller.address})


def create_app(
    config: ServerConfig,
    handlers: NodeHandlers,
    *,
    authorizer: NodeAuthorizer,
    parties: TaskParties,
    clock: Callable[[], float] = time.time,
) -> web.Application:
    """The aiohttp application of one node (build a `P2PServer` to reach its blob store too)."""
    return P2PServer(config, handlers, authorizer=authorizer, parties=parties, clock=clock).app
