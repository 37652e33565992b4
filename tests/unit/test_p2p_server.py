"""The node API over real HTTP on 127.0.0.1 with in-memory authorization: every refusal of
the verification pipeline (tampering, replay, skew, cross-node replay, limits, content
types, authorization), the routes' own work (streamed blobs, signature checks, private
results) and the client (signing, retries, typed errors)."""

import asyncio
import hashlib
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from eth_account import Account
from eth_account.signers.local import LocalAccount
from yarl import URL

from oracle.chain.rpc import RetryPolicy
from oracle.chain.signer import ResultDomain, public_output_hash, sign_result
from oracle.p2p import (
    Audience,
    Caller,
    Limits,
    P2PClient,
    P2PServer,
    Peer,
    PeerFailed,
    PeerNotFound,
    PeerRefused,
    PeerRejected,
    PeerUnavailable,
    ResultSignature,
    ServerConfig,
    StaticAuthorizer,
    StaticTaskParties,
    StoredBlob,
    TaskPartySet,
)
from oracle.p2p.access import NodeStanding
from oracle.p2p.errors import AuthorizerUnavailable, Conflict, NotFound, Unavailable
from oracle.p2p.signing import (
    HEADER_NONCE,
    HEADER_SENDER,
    HEADER_TIMESTAMP,
    body_sha256,
    sign_request,
)

CHAIN_ID = 31337
MIN_STAKE = 1_000
TASK = 7
DOMAIN = ResultDomain(CHAIN_ID, "0x" + "ab" * 20)
SMALL = Limits(blob_max_bytes=4 << 20, json_max_bytes=2_048)
FAST_RETRY = RetryPolicy(attempts=3, base_delay_s=0.01, max_delay_s=0.02)


def key(label: str) -> LocalAccount:
    account: LocalAccount = Account.from_key(hashlib.sha256(label.encode()).digest())
    return account


SERVER = key("server node signer")
OTHER_SERVER = key("other server node signer")
MEMBER = key("committee member signer")  # active node, committee member of TASK
NODE = key("plain node signer")  # active node, no part in TASK
LOW = key("low-stake node signer")  # registered, stake below the minimum
PROVIDER_NODE = key("provider node signer")  # its operator owns a dataset of TASK (stake below minimum)
REQUESTER = key("requester")
PROVIDER = key("data provider owner key")
STRANGER = key("stranger")
OPERATOR = {who.address: key(f"operator of {label}").address for who, label in [
    (SERVER, "server"), (OTHER_SERVER, "other"), (MEMBER, "member"), (NODE, "node"),
    (LOW, "low"), (PROVIDER_NODE, "provider node"),
]}  # fmt: skip


class MemoryHandlers:
    """A daemon's handlers, in memory."""

    def __init__(self) -> None:
        self.specs: dict[int, bytes] = {TASK: b'{"kind":"stats"}'}
        self.results: dict[int, bytes] = {TASK: b"encrypted result"}
        self.signatures: list[tuple[int, ResultSignature, Caller]] = []
        self.blobs: list[tuple[StoredBlob, Caller]] = []
        self.refuse_blob: str | None = None
        self.busy_answers = 0
        self.crash = False
        self.callers: list[Caller] = []

    async def task_spec(self, task_id: int, caller: Caller) -> bytes:
        self.callers.append(caller)
        if self.crash:
            raise RuntimeError("handler bug")
        if self.busy_answers > 0:
            self.busy_answers -= 1
            raise Unavailable("spec store warming up")
        if task_id not in self.specs:
            raise NotFound(f"no spec for task {task_id}", code="no_such_task")
        return self.specs[task_id]

    async def blob_received(self, blob: StoredBlob, caller: Caller) -> None:
        assert blob.path.read_bytes() != b"" or blob.size_bytes == 0
        if blob.name == self.refuse_blob:
            raise Conflict(f"blob {blob.name} is not expected", code="unexpected_blob")
        self.blobs.append((blob, caller))

    async def signature_received(self, task_id: int, signature: ResultSignature, caller: Caller) -> None:
        self.signatures.append((task_id, signature, caller))

    async def task_result(self, task_id: int, caller: Caller) -> bytes:
        if task_id not in self.results:
            raise NotFound(f"no result for task {task_id} yet")
        return self.results[task_id]


class FailingAuthorizer:
    """A NodeRegistry that cannot be read."""

    async def standing_of(self, signer: str) -> NodeStanding:
        raise AuthorizerUnavailable("rpc down")


def make_authorizer() -> StaticAuthorizer:
    nodes = StaticAuthorizer(MIN_STAKE)
    stakes = [(SERVER, 5_000), (OTHER_SERVER, 5_000), (MEMBER, 2_000), (NODE, 3_000), (LOW, 999)]
    for signer, stake in [*stakes, (PROVIDER_NODE, 1)]:
        nodes.set_node(signer.address, OPERATOR[signer.address], stake)
    return nodes


def make_parties() -> StaticTaskParties:
    parties = StaticTaskParties()
    parties.tasks[TASK] = TaskPartySet(
        requester=REQUESTER.address,
        committee=(OPERATOR[MEMBER.address],),
        data_providers=(PROVIDER.address, OPERATOR[PROVIDER_NODE.address]),
    )
    return parties


@dataclass
class Node:
    server: P2PServer
    handlers: MemoryHandlers
    url: str
    peer: Peer
    runner: web.AppRunner
    authorizer: Any = None
    calls: list[str] = field(default_factory=list)


@asynccontextmanager
async def serving(
    data_dir: Path,
    signer: LocalAccount = SERVER,
    *,
    authorizer: Any = None,
    clock: Callable[[], float] | None = None,
) -> AsyncIterator[Node]:
    handlers = MemoryHandlers()
    audience = Audience(CHAIN_ID, signer.address)
    config = ServerConfig(audience=audience, data_dir=data_dir, result_domain=DOMAIN, limits=SMALL)
    server = P2PServer(
        config,
        handlers,
        authorizer=authorizer or make_authorizer(),
        parties=make_parties(),
        **({"clock": clock} if clock else {}),
    )
    runner = web.AppRunner(server.app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    url = f"http://127.0.0.1:{port}"
    try:
        yield Node(server, handlers, url, Peer(url, audience), runner)
    finally:
        await runner.cleanup()


@pytest_asyncio.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    async with serving(tmp_path / "server") as running:
        yield running


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def signed(
    account: LocalAccount,
    audience: Audience,
    method: str,
    url: str,
    body: bytes = b"",
    **kw: Any,
) -> dict[str, str]:
    """Headers for one request as a client would sign it."""
    target = URL(url)
    return sign_request(
        account, audience, method, target.raw_path, target.raw_query_string, body_sha256(body), **kw
    ).headers()


async def answer(resp: aiohttp.ClientResponse) -> tuple[int, dict[str, Any]]:
    assert resp.content_type == "application/json"
    return resp.status, await resp.json()


def client(account: LocalAccount, sleeps: list[float] | None = None) -> P2PClient:
    async def record(delay: float) -> None:
        if sleeps is not None:
            sleeps.append(delay)

    return P2PClient(account, 5.0, retry=FAST_RETRY, sleep=record)


# -- authentication ------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_health_needs_no_signature_and_names_the_node(node: Node, http: aiohttp.ClientSession) -> None:
    async with http.get(node.url + "/v1/health") as resp:
        status, body = await answer(resp)
    assert status == 200
    assert body["node"] == f"eip155:{CHAIN_ID}:{SERVER.address.lower()}"
    assert body["protocol"] == "DATUM-P2P-V1"
    assert abs(body["time"] - time.time()) < 5


@pytest.mark.asyncio
async def test_an_active_node_fetches_a_spec_and_the_handler_sees_who_called(node: Node) -> None:
    async with client(NODE) as c:
        assert await c.fetch_spec(node.peer, TASK) == b'{"kind":"stats"}'
    (caller,) = node.handlers.callers
    assert caller.address == NODE.address
    assert caller.operator == OPERATOR[NODE.address]
    assert caller.standing.active and caller.roles == frozenset()


@pytest.mark.asyncio
async def test_unsigned_requests_are_refused_with_a_clear_error(
    node: Node, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{node.url}/v1/tasks/{TASK}/spec") as resp:
        status, body = await answer(resp)
    assert status == 401 and body["error"] == "missing_auth"
    assert "X-Datum-Signature" in body["message"]
    assert node.handlers.callers == []


@pytest.mark.asyncio
async def test_a_tampered_path_query_timestamp_nonce_or_sender_is_refused(
    node: Node, http: aiohttp.ClientSession
) -> None:
    spec = f"{node.url}/v1/tasks/{TASK}/spec"
    good = signed(NODE, node.peer.audience, "GET", spec)
    tampered = [
        (f"{node.url}/v1/tasks/8/spec", good),  # signed for task 7
        (spec + "?x=1", good),  # query added
        (spec, {**good, HEADER_TIMESTAMP: str(int(good[HEADER_TIMESTAMP]) + 1)}),
        (spec, {**good, HEADER_NONCE: "f" * 32}),
        (spec, {**good, HEADER_SENDER: MEMBER.address}),  # claims another registered node
    ]
    for url, headers in tampered:
        async with http.get(url, headers=headers) as resp:
            status, body = await answer(resp)
        assert (status, body["error"]) == (401, "bad_signature"), url
    assert node.handlers.callers == []
    async with http.get(spec, headers=good) as resp:  # the untouched request still works
        assert resp.status == 200


@pytest.mark.asyncio
async def test_a_tampered_body_is_discarded(node: Node, http: aiohttp.ClientSession) -> None:
    url = f"{node.url}/v1/tasks/{TASK}/blobs/input.bin"
    headers = signed(REQUESTER, node.peer.audience, "PUT", url, b"the signed bytes")
    headers["Content-Type"] = "application/octet-stream"
    async with http.put(url, data=b"other bytes here", headers=headers) as resp:
        status, body = await answer(resp)
    assert (status, body["error"]) == (400, "body_hash_mismatch")
    assert node.server.blobs.get(TASK, "input.bin") is None
    assert node.handlers.blobs == []
    leftovers = list((node.server.blobs.root / str(TASK) / "tmp").iterdir())
    assert leftovers == []

    sig_url = f"{node.url}/v1/tasks/{TASK}/signatures"
    headers = signed(MEMBER, node.peer.audience, "POST", sig_url, b'{"a":1}')
    headers["Content-Type"] = "application/json"
    async with http.post(sig_url, data=b'{"a":2}', headers=headers) as resp:
        status, body = await answer(resp)
    assert (status, body["error"]) == (400, "body_hash_mismatch")
    assert node.handlers.signatures == []


@pytest.mark.asyncio
async def test_the_client_never_follows_a_redirect(tmp_path: Path) -> None:
    hits: list[str] = []

    async def redirect(request: web.Request) -> web.Response:
        hits.append(request.path)
        raise web.HTTPFound("/elsewhere")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", redirect)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        peer = Peer(f"http://127.0.0.1:{runner.addresses[0][1]}", Audience(CHAIN_ID, SERVER.address))
        async with client(NODE) as c:
            with pytest.raises(PeerFailed) as moved:
                await c.fetch_spec(peer, TASK)
    finally:
        await runner.cleanup()
    assert moved.value.status == 302
    assert hits == [f"/v1/tasks/{TASK}/spec"]


@pytest.mark.asyncio
async def test_a_replayed_request_is_refused_once_it_was_served(
    node: Node, http: aiohttp.ClientSession
) -> None:
    url = f"{node.url}/v1/tasks/{TASK}/spec"
    headers = signed(NODE, node.peer.audience, "GET", url)
    async with http.get(url, headers=headers) as resp:
        assert resp.status == 200
    async with http.get(url, headers=headers) as resp:
        status, body = await answer(resp)
    assert (status, body["error"]) == (401, "replayed_request")
    assert len(node.handlers.callers) == 1


@pytest.mark.asyncio
async def test_timestamps_outside_the_skew_window_are_refused(
    node: Node, http: aiohttp.ClientSession
) -> None:
    url = f"{node.url}/v1/tasks/{TASK}/spec"
    now = int(time.time())
    for offset in (-3_600, -61, 120):
        headers = signed(NODE, node.peer.audience, "GET", url, timestamp=now + offset)
        async with http.get(url, headers=headers) as resp:
            status, body = await answer(resp)
        assert (status, body["error"]) == (401, "stale_request"), offset
        assert "clock" in body["message"]
    assert node.handlers.callers == []


@pytest.mark.asyncio
async def test_requests_signed_before_the_node_started_are_refused(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    now = int(time.time())
    async with serving(tmp_path, clock=lambda: now + 0.5) as running:
        assert running.server.started_at == now
        url = f"{running.url}/v1/tasks/{TASK}/spec"
        before = signed(NODE, running.peer.audience, "GET", url, timestamp=now - 1)  # inside the window
        async with http.get(url, headers=before) as resp:
            status, body = await answer(resp)
        assert (status, body["error"]) == (401, "stale_request")
        assert "before this node started" in body["message"]
        after = signed(NODE, running.peer.audience, "GET", url, timestamp=now)
        async with http.get(url, headers=after) as resp:
            assert resp.status == 200


@pytest.mark.asyncio
async def test_a_request_for_one_node_is_refused_by_another(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with serving(tmp_path / "a") as a, serving(tmp_path / "b", OTHER_SERVER) as b:
        path = f"/v1/tasks/{TASK}/spec"
        for_a = signed(NODE, a.peer.audience, "GET", a.url + path)
        async with http.get(b.url + path, headers=for_a) as resp:  # B first: no nonce was seen
            status, body = await answer(resp)
        assert (status, body["error"]) == (401, "bad_signature")
        async with http.get(a.url + path, headers=for_a) as resp:
            assert resp.status == 200
        async with http.get(b.url + path, headers=for_a) as resp:  # and B after A served it
            assert resp.status == 401
        other_chain = signed(NODE, Audience(1, SERVER.address), "GET", a.url + path)
        async with http.get(a.url + path, headers=other_chain) as resp:
            status, body = await answer(resp)
        assert (status, body["error"]) == (401, "bad_signature")
        assert b.handlers.callers == [] and len(a.handlers.callers) == 1


# -- authorization -------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_unregistered_and_under_staked_keys_are_forbidden(node: Node) -> None:
    async with client(STRANGER) as stranger, client(LOW) as low:
        with pytest.raises(PeerRefused) as unknown:
            await stranger.fetch_spec(node.peer, TASK)
        with pytest.raises(PeerRefused) as under:
            await low.fetch_spec(node.peer, TASK)
    assert (unknown.value.status, unknown.value.code) == (403, "not_a_node")
    assert "not the signing key of a registered node" in str(unknown.value)
    assert (under.value.status, under.value.code) == (403, "stake_below_minimum")
    assert "999" in str(under.value) and str(MIN_STAKE) in str(under.value)
    assert node.handlers.callers == []


@pytest.mark.asyncio
async def test_the_requester_and_providers_fetch_specs_without_being_nodes(node: Node) -> None:
    async with client(REQUESTER) as requester, client(PROVIDER) as provider, client(STRANGER) as stranger:
        assert await requester.fetch_spec(node.peer, TASK) == b'{"kind":"stats"}'
        assert await provider.fetch_spec(node.peer, TASK) == b'{"kind":"stats"}'
        with pytest.raises(PeerRefused):  # a party of task 7 only
            await requester.fetch_spec(node.peer, 8)
        with pytest.raises(PeerNotFound) as missing:
            await client(NODE).fetch_spec(node.peer, 8)
        with pytest.raises(PeerRefused):
            await stranger.fetch_spec(node.peer, TASK)
    assert missing.value.code == "no_such_task"


@pytest.mark.asyncio
async def test_only_the_requester_and_providers_upload_blobs(node: Node) -> None:
    async with client(NODE) as plain, client(MEMBER) as member, client(PROVIDER_NODE) as provider_node:
        for other in (plain, member):  # active nodes, but not parties allowed to upload
            with pytest.raises(PeerRefused) as refused:
                await other.upload_blob(node.peer, TASK, "input.bin", b"x")
            assert refused.value.code == "not_task_party"
            assert "requester or a data provider of task 7" in str(refused.value)
        # a provider's node signs with its node key; its operator owns the dataset (stake irrelevant)
        receipt = await provider_node.upload_blob(node.peer, TASK, "provider.bin", b"provider data")
    assert receipt.sha256 == body_sha256(b"provider data")
    ((blob, caller),) = node.handlers.blobs
    assert caller.operator == OPERATOR[PROVIDER_NODE.address] and blob.uploader == PROVIDER_NODE.address


@pytest.mark.asyncio
async def test_only_the_receiver_fetches_the_private_result(node: Node) -> None:
    async with client(REQUESTER) as requester, client(MEMBER) as member, client(PROVIDER) as provider:
        assert await requester.fetch_result(node.peer, TASK) == b"encrypted result"
        for other in (member, provider):
            with pytest.raises(PeerRefused) as refused:
                await other.fetch_result(node.peer, TASK)
            assert (refused.value.status, refused.value.code) == (403, "not_task_party")
            assert "the receiver of task 7" in str(refused.value)


@pytest.mark.asyncio
async def test_the_server_answers_503_when_it_cannot_read_the_registry(tmp_path: Path) -> None:
    async with serving(tmp_path, authorizer=FailingAuthorizer()) as running:
        sleeps: list[float] = []
        async with client(NODE, sleeps) as c:
            with pytest.raises(PeerUnavailable) as down:
                await c.fetch_spec(running.peer, TASK)
    assert (down.value.status, down.value.code) == (503, "authorizer_unavailable")
    assert sleeps == [0.01, 0.02]  # retried with backoff, then gave up
    assert running.handlers.callers == []


# -- limits and content types ----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_oversized_bodies_get_413(node: Node, http: aiohttp.ClientSession) -> None:
    blob_url = f"{node.url}/v1/tasks/{TASK}/blobs/big.bin"
    big = b"\x00" * (SMALL.blob_max_bytes + 1)
    declared = signed(REQUESTER, node.peer.audience, "PUT", blob_url, big)
    declared["Content-Type"] = "application/octet-stream"
    async with http.put(blob_url, data=big, headers=declared) as resp:
        status, body = await answer(resp)
    assert (status, body["error"]) == (413, "body_too_large")

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the limit holds while streaming
        for _ in range(5):
            yield b"\x01" * (1 << 20)

    streamed = signed(REQUESTER, node.peer.audience, "PUT", blob_url, b"\x01" * (5 << 20))
    streamed["Content-Type"] = "application/octet-stream"
    async with http.put(blob_url, data=chunks(), headers=streamed) as resp:
        status, body = await answer(resp)
    assert (status, body["error"]) == (413, "body_too_large")
    assert node.server.blobs.get(TASK, "big.bin") is None
    assert list((node.server.blobs.root / str(TASK) / "tmp").iterdir()) == []

    sig_url = f"{node.url}/v1/tasks/{TASK}/signatures"
    payload = b"{" + b" " * SMALL.json_max_bytes + b"}"
    headers = signed(MEMBER, node.peer.audience, "POST", sig_url, payload)
    async with http.post(
        sig_url, data=payload, headers={**headers, "Content-Type": "application/json"}
    ) as resp:
        status, body = await answer(resp)
    assert (status, body["error"]) == (413, "body_too_large")

    spec_url = f"{node.url}/v1/tasks/{TASK}/spec"
    async with http.get(
        spec_url, data=b"x", headers=signed(NODE, node.peer.audience, "GET", spec_url, b"x")
    ) as resp:
        status, body = await answer(resp)
    assert (status, body["error"]) == (413, "body_too_large")
    assert node.handlers.blobs == [] and node.handlers.signatures == [] and node.handlers.callers == []


@pytest.mark.asyncio
async def test_wrong_content_types_get_415(node: Node, http: aiohttp.ClientSession) -> None:
    url = f"{node.url}/v1/tasks/{TASK}/blobs/input.bin"
    headers = signed(REQUESTER, node.peer.audience, "PUT", url, b"{}")
    async with http.put(url, data=b"{}", headers={**headers, "Content-Type": "application/json"}) as resp:
        status, body = await answer(resp)
    assert (status, body["error"]) == (415, "unsupported_media_type")


@pytest.mark.asyncio
async def test_bad_routes_and_parameters_get_json_errors(node: Node, http: aiohttp.ClientSession) -> None:
    cases = [
        ("GET", "/v1/nothing", 404, "not_found"),
        ("DELETE", f"/v1/tasks/{TASK}/spec", 405, "method_not_allowed"),
        ("GET", "/v1/tasks/007/spec", 400, "bad_task_id"),
        ("GET", f"/v1/tasks/{2**256}/spec", 400, "bad_task_id"),
        ("GET", f"/v1/tasks/{TASK}/blobs/.hidden", 400, "bad_blob_name"),
    ]
    for method, path, status, code in cases:
        async with http.request(method, node.url + path) as resp:
            assert await answer(resp) == (status, {"error": code, "message": (await resp.json())["message"]})


# -- routes ----------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_blobs_stream_to_disk_and_back_with_their_hash(node: Node, tmp_path: Path) -> None:
    source = tmp_path / "ciphertexts.bin"
    content = os.urandom(3 << 20)
    source.write_bytes(content)
    async with client(REQUESTER) as requester, client(MEMBER) as member, client(NODE) as plain:
        receipt = await requester.upload_blob(node.peer, TASK, "cipher.bin", source)
        assert (receipt.sha256, receipt.size_bytes) == (hashlib.sha256(content).hexdigest(), len(content))
        stored = node.server.blobs.get(TASK, "cipher.bin")
        assert stored is not None and stored.path.read_bytes() == content

        again = await requester.upload_blob(node.peer, TASK, "cipher.bin", content)  # idempotent retry
        assert again == receipt and len(node.handlers.blobs) == 1
        with pytest.raises(PeerRejected) as conflict:
            await requester.upload_blob(node.peer, TASK, "cipher.bin", b"different")
        assert (conflict.value.status, conflict.value.code) == (409, "blob_exists")

        fetched = await member.download_blob(
            node.peer, TASK, "cipher.bin", tmp_path / "copy.bin", max_bytes=4 << 20
        )
        assert (tmp_path / "copy.bin").read_bytes() == content
        assert fetched.sha256 == receipt.sha256 and fetched.uploader == REQUESTER.address
        with pytest.raises(PeerFailed):  # over the caller's own cap: nothing left behind
            await member.download_blob(
                node.peer, TASK, "cipher.bin", tmp_path / "small.bin", max_bytes=1 << 20
            )
        assert not (tmp_path / "small.bin").exists()
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
        with pytest.raises(PeerRefused):  # not a party of the task
            await plain.download_blob(node.peer, TASK, "cipher.bin", tmp_path / "x.bin", max_bytes=4 << 20)
        with pytest.raises(PeerNotFound):
            await member.download_blob(node.peer, TASK, "missing.bin", tmp_path / "x.bin", max_bytes=4 << 20)


@pytest.mark.asyncio
async def test_a_blob_the_daemon_refuses_is_not_kept(node: Node) -> None:
    node.handlers.refuse_blob = "unexpected.bin"
    async with client(REQUESTER) as requester:
        with pytest.raises(PeerRejected) as refused:
            await requester.upload_blob(node.peer, TASK, "unexpected.bin", b"data")
        assert refused.value.code == "unexpected_blob"
        assert node.server.blobs.get(TASK, "unexpected.bin") is None
        assert not (node.server.blobs.root / str(TASK) / "data" / "unexpected.bin").exists()
        node.handlers.refuse_blob = None
        await requester.upload_blob(node.peer, TASK, "unexpected.bin", b"other data")  # not blocked


@pytest.mark.asyncio
async def test_committee_members_post_their_result_signatures(node: Node) -> None:
    result_hash, output = hashlib.sha256(b"result").digest(), b"42"
    mine = sign_result(MEMBER.key, DOMAIN, TASK, result_hash, public_output_hash(output), 1)
    payload = ResultSignature.from_signed(mine, result_hash, public_output_hash(output), 1)
    async with client(MEMBER) as member, client(NODE) as plain:
        await member.post_signature(node.peer, TASK, payload)
        await member.post_signature(node.peer, TASK, payload)  # a retry delivers it again
        with pytest.raises(PeerRefused) as refused:
            await plain.post_signature(node.peer, TASK, payload)
        assert refused.value.code == "not_task_party"

        other = sign_result(NODE.key, DOMAIN, TASK, result_hash, public_output_hash(output), 1)
        wrong_domain = sign_result(MEMBER.key, ResultDomain(1, DOMAIN.verifying_contract), TASK, result_hash,
                                   public_output_hash(output), 1)  # fmt: skip
        raw = bytearray(mine.signature)  # the same signature with s -> n - s (high s)
        n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
        raw[32:64] = (n - int.from_bytes(raw[32:64], "big")).to_bytes(32, "big")
        raw[64] = 55 - raw[64]
        high_s = payload.model_copy(update={"signature": "0x" + bytes(raw).hex()})
        for bad in (
            ResultSignature.from_signed(other, result_hash, public_output_hash(output), 1),
            ResultSignature.from_signed(wrong_domain, result_hash, public_output_hash(output), 1),
            payload.model_copy(update={"config_epoch": 2}),
            high_s,
        ):
            with pytest.raises(PeerRejected) as mismatch:
                await member.post_signature(node.peer, TASK, bad)
            assert (mismatch.value.status, mismatch.value.code) == (400, "signature_mismatch")
        with pytest.raises(PeerRejected) as malformed:
            await member.post(node.peer, f"/v1/tasks/{TASK}/signatures", {"result_hash": "0x12"})
        assert malformed.value.code == "bad_payload"
    assert [(t, s, c.address) for t, s, c in node.handlers.signatures] == [
        (TASK, payload, MEMBER.address)
    ] * 2


# -- client behaviour ------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_the_client_retries_a_busy_peer_with_a_fresh_signature(node: Node) -> None:
    node.handlers.busy_answers = 1  # the first attempt's nonce is recorded, then 503
    sleeps: list[float] = []
    async with client(NODE, sleeps) as c:
        assert await c.fetch_spec(node.peer, TASK) == b'{"kind":"stats"}'
    assert sleeps == [0.01]
    assert len(node.handlers.callers) == 2


@pytest.mark.asyncio
async def test_an_unreachable_peer_is_retried_then_reported(tmp_path: Path) -> None:
    async with serving(tmp_path) as running:
        peer = running.peer
    sleeps: list[float] = []  # the server is stopped: its port refuses connections
    async with client(NODE, sleeps) as c:
        with pytest.raises(PeerUnavailable) as down:
            await c.fetch_spec(peer, TASK)
    assert isinstance(down.value, ConnectionError)
    assert down.value.status is None and "after 3 attempts" in str(down.value)
    assert sleeps == [0.01, 0.02]


@pytest.mark.asyncio
async def test_a_handler_bug_is_a_500_and_the_node_keeps_serving(node: Node) -> None:
    node.handlers.crash = True
    async with client(NODE) as c:
        with pytest.raises(PeerFailed) as failed:
            await c.fetch_spec(node.peer, TASK)
        assert (failed.value.status, failed.value.code) == (500, "internal_error")
        assert "handler bug" not in str(failed.value)  # internals stay in the node's log
        node.handlers.crash = False
        assert await c.fetch_spec(node.peer, TASK) == b'{"kind":"stats"}'
        assert (await c.health(node.peer))["status"] == "ok"


@pytest.mark.asyncio
async def test_answers_over_the_client_limit_are_refused(node: Node) -> None:
    node.handlers.specs[TASK] = b"s" * 10_000
    async with P2PClient(NODE, 5.0, max_response_bytes=1_000) as c:
        with pytest.raises(PeerFailed) as large:
            await c.fetch_spec(node.peer, TASK)
    assert "over 1000" in str(large.value)


@pytest.mark.asyncio
async def test_concurrent_requests_from_many_senders_are_all_verified(node: Node) -> None:
    senders = [NODE, MEMBER, REQUESTER, PROVIDER, STRANGER, LOW] * 3
    clients = [client(s) for s in senders]
    try:
        outcomes = await asyncio.gather(
            *(c.fetch_spec(node.peer, TASK) for c in clients), return_exceptions=True
        )
    finally:
        await asyncio.gather(*(c.close() for c in clients))
    for sender, outcome in zip(senders, outcomes, strict=True):
        if sender in (STRANGER, LOW):
            assert isinstance(outcome, PeerRefused)
        else:
            assert outcome == b'{"kind":"stats"}'
    assert len(node.handlers.callers) == 12
