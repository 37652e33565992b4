"""Request signing without a network: the canonical string (exact text, injectivity, field
alphabets), signature round trips and what a change to any field does, header parsing, the
replay memory and the authorization cache."""

import asyncio
import hashlib

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from hypothesis import given
from hypothesis import strategies as st

from oracle.p2p.cache import TtlCache
from oracle.p2p.errors import TooManyRequests, Unauthorized, Unavailable
from oracle.p2p.replay import NonceCache
from oracle.p2p.signing import (
    EMPTY_BODY_SHA256,
    HEADER_NONCE,
    HEADER_SENDER,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    Audience,
    RequestAuth,
    body_sha256,
    canonical_query,
    canonical_request,
    recover_sender,
    sign_request,
)


def key(label: str) -> LocalAccount:
    account: LocalAccount = Account.from_key(hashlib.sha256(label.encode()).digest())
    return account


SENDER = key("sender")
NODE_A = Audience(31337, key("node a").address)
NODE_B = Audience(31337, key("node b").address)
NONCE = "00112233445566778899aabbccddeeff"
TS = 1_767_225_600


def fields(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {
        "audience": NODE_A,
        "method": "PUT",
        "raw_path": "/v1/tasks/7/blobs/input.bin",
        "raw_query": "b=2&a=1",
        "body_sha256": body_sha256(b"ciphertext"),
        "timestamp": TS,
        "nonce": NONCE,
        "sender": SENDER.address,
    }
    base.update(changes)
    return base


def test_the_canonical_string_is_exactly_the_documented_lines() -> None:
    text = canonical_request(**fields())  # type: ignore[arg-type]
    assert text.split("\n") == [
        "DATUM-P2P-V1",
        f"eip155:31337:{NODE_A.address.lower()}",
        "PUT",
        "/v1/tasks/7/blobs/input.bin",
        "a=1&b=2",
        hashlib.sha256(b"ciphertext").hexdigest(),
        str(TS),
        NONCE,
        SENDER.address.lower(),
    ]
    assert not text.endswith("\n")


def test_query_items_are_sorted_and_empty_ones_dropped() -> None:
    assert canonical_query("") == ""
    assert canonical_query("z=1&&a=2&a=1&") == "a=1&a=2&z=1"
    assert canonical_query("x=%26&x=a") == "x=%26&x=a"  # an encoded '&' stays one item


@pytest.mark.parametrize(
    "change",
    [
        {"method": "put"},
        {"method": "GET\nX"},
        {"raw_path": "v1/health"},
        {"raw_path": "/v1/a b"},
        {"raw_path": "/v1/a\n"},
        {"raw_query": "a=1\nb=2"},
        {"body_sha256": "AB" * 32},
        {"body_sha256": "ab" * 31},
        {"nonce": NONCE[:-1]},
        {"nonce": NONCE.upper()},
        {"sender": "0x1234"},
        {"timestamp": -1},
    ],
)
def test_fields_outside_their_alphabet_are_refused(change: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        canonical_request(**fields(**change))  # type: ignore[arg-type]


def test_an_audience_needs_a_chain_and_an_address() -> None:
    with pytest.raises(ValueError):
        Audience(0, NODE_A.address)
    with pytest.raises(ValueError):
        Audience(1, "node-a")


_path_segment = st.text(alphabet="abcXYZ019._-%~", min_size=1, max_size=8)
_query_item = st.text(alphabet="ab=%1", min_size=1, max_size=5)
_request_fields = st.fixed_dictionaries(
    {
        "audience": st.builds(Audience, st.integers(1, 3), st.sampled_from([NODE_A.address, NODE_B.address])),
        "method": st.sampled_from(["GET", "PUT", "POST"]),
        "raw_path": st.lists(_path_segment, min_size=1, max_size=3).map(lambda s: "/" + "/".join(s)),
        "raw_query": st.lists(_query_item, max_size=3).map("&".join),
        "body_sha256": st.binary(max_size=4).map(body_sha256),
        "timestamp": st.integers(0, 10**11),
        "nonce": st.binary(min_size=16, max_size=16).map(bytes.hex),
        "sender": st.sampled_from([SENDER.address, NODE_A.address]),
    }
)


def _normal(values: dict[str, object]) -> tuple[object, ...]:
    """The tuple the string must encode (the query only up to order, by design)."""
    out = dict(values)
    out["raw_query"] = canonical_query(str(values["raw_query"]))
    out["audience"] = str(values["audience"])
    out["sender"] = str(values["sender"]).lower()
    return tuple(sorted(out.items()))


@given(_request_fields, _request_fields)
def test_the_canonical_string_is_injective(a: dict[str, object], b: dict[str, object]) -> None:
    same_string = canonical_request(**a) == canonical_request(**b)  # type: ignore[arg-type]
    assert same_string == (_normal(a) == _normal(b))


def test_a_signature_recovers_to_its_signer_and_any_change_breaks_it() -> None:
    auth = sign_request(
        SENDER, NODE_A, "PUT", "/v1/tasks/7/blobs/x", "", body_sha256(b"x"), timestamp=TS, nonce=NONCE
    )
    assert auth.sender == SENDER.address
    text = auth.canonical(NODE_A, "PUT", "/v1/tasks/7/blobs/x", "")
    assert recover_sender(text, auth.signature) == SENDER.address
    changed = [
        auth.canonical(NODE_B, "PUT", "/v1/tasks/7/blobs/x", ""),  # another node
        auth.canonical(Audience(1, NODE_A.address), "PUT", "/v1/tasks/7/blobs/x", ""),  # another chain
        auth.canonical(NODE_A, "POST", "/v1/tasks/7/blobs/x", ""),
        auth.canonical(NODE_A, "PUT", "/v1/tasks/8/blobs/x", ""),
        auth.canonical(NODE_A, "PUT", "/v1/tasks/7/blobs/x", "a=1"),
        canonical_request(**fields(raw_path="/v1/tasks/7/blobs/x", raw_query="", timestamp=TS + 1)),  # type: ignore[arg-type]
    ]
    for text in changed:
        assert recover_sender(text, auth.signature) != SENDER.address
    assert recover_sender(text, b"\x00" * 65) is None
    assert recover_sender(text, b"\x01" * 10) is None


def test_headers_round_trip_and_malformed_ones_are_refused() -> None:
    auth = sign_request(SENDER, NODE_A, "GET", "/v1/health", "", EMPTY_BODY_SHA256)
    headers = auth.headers()
    assert RequestAuth.from_headers(headers) == auth
    lower = {HEADER_SENDER: SENDER.address.lower()}
    assert RequestAuth.from_headers({**headers, **lower}).sender == SENDER.address

    with pytest.raises(Unauthorized) as missing:
        RequestAuth.from_headers({k: v for k, v in headers.items() if k != HEADER_SIGNATURE})
    assert missing.value.code == "missing_auth" and HEADER_SIGNATURE in missing.value.message
    for name, bad in [
        (HEADER_TIMESTAMP, "1.5"),
        (HEADER_TIMESTAMP, "0123"),
        (HEADER_NONCE, "xyz"),
        (HEADER_SIGNATURE, "0x1234"),
        (HEADER_SENDER, "alice"),
    ]:
        with pytest.raises(Unauthorized) as malformed:
            RequestAuth.from_headers({**headers, name: bad})
        assert malformed.value.code == "malformed_auth"


def test_fresh_signatures_use_fresh_nonces() -> None:
    a = sign_request(SENDER, NODE_A, "GET", "/v1/health", "", EMPTY_BODY_SHA256)
    b = sign_request(SENDER, NODE_A, "GET", "/v1/health", "", EMPTY_BODY_SHA256)
    assert a.nonce != b.nonce and len(a.nonce) == 32


# -- replay memory ---------------------------------------------------------------------------------


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_nonce_is_accepted_once_per_sender_until_the_window_ends() -> None:
    clock = Clock(TS)
    cache = NonceCache(60, clock=clock)
    cache.check_and_record(SENDER.address, NONCE, TS)
    with pytest.raises(Unauthorized) as replay:
        cache.check_and_record(SENDER.address.lower(), NONCE, TS)
    assert replay.value.code == "replayed_request"
    cache.check_and_record(NODE_A.address, NONCE, TS)  # another sender's nonce space
    clock.now = TS + 60  # still inside the window: still remembered
    with pytest.raises(Unauthorized):
        cache.check_and_record(SENDER.address, NONCE, TS)
    clock.now = TS + 61  # past it: forgotten (the timestamp check refuses such a request anyway)
    assert len(cache) == 0
    cache.check_and_record(SENDER.address, NONCE, TS + 61)


def test_the_replay_memory_is_bounded_without_evicting_live_entries() -> None:
    clock = Clock(TS)
    cache = NonceCache(60, capacity=3, per_sender=2, clock=clock)
    cache.check_and_record("0x" + "01" * 20, "a" * 32, TS)
    cache.check_and_record("0x" + "01" * 20, "b" * 32, TS)
    with pytest.raises(TooManyRequests) as quota:
        cache.check_and_record("0x" + "01" * 20, "c" * 32, TS)
    assert quota.value.code == "sender_quota"
    cache.check_and_record("0x" + "02" * 20, "a" * 32, TS)
    with pytest.raises(Unavailable) as full:
        cache.check_and_record("0x" + "03" * 20, "a" * 32, TS)
    assert full.value.code == "replay_cache_full"
    with pytest.raises(Unauthorized):  # nothing was evicted to make room
        cache.check_and_record("0x" + "01" * 20, "a" * 32, TS)
    clock.now = TS + 61
    cache.check_and_record("0x" + "03" * 20, "a" * 32, TS + 61)


# -- authorization cache ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_the_ttl_cache_loads_once_for_concurrent_callers_and_expires() -> None:
    clock = Clock(0.0)
    cache: TtlCache[str, int] = TtlCache(ttl_s=10, max_entries=2, clock=clock)
    loads: list[str] = []
    gate = asyncio.Event()

    async def load(key: str) -> int:
        loads.append(key)
        await gate.wait()
        return len(loads)

    first = asyncio.create_task(cache.get("a", lambda: load("a")))
    second = asyncio.create_task(cache.get("a", lambda: load("a")))
    await asyncio.sleep(0)
    gate.set()
    assert await first == await second == 1
    assert loads == ["a"]
    assert await cache.get("a", lambda: load("a")) == 1  # cached
    clock.now = 10.0
    assert await cache.get("a", lambda: load("a")) == 2  # expired: loaded again
    await cache.get("b", lambda: load("b"))
    await cache.get("c", lambda: load("c"))
    assert len(cache) == 2  # least recently used ("a") went out


@pytest.mark.asyncio
async def test_the_ttl_cache_does_not_keep_failures() -> None:
    cache: TtlCache[str, int] = TtlCache(ttl_s=10, max_entries=4)
    attempts = 0

    async def flaky() -> int:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise ConnectionError("rpc down")
        return 7

    with pytest.raises(ConnectionError):
        await cache.get("k", flaky)
    assert await cache.get("k", flaky) == 7
