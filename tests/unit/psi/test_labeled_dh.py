"""Labeled PSI (DH-OPRF): labels exact against a plain dict, table reuse, and the provider's view."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compute.errors import ProtocolAbort, SpecError
from compute.psi import (
    CaseRule,
    DuplicateRule,
    EmptyKeyRule,
    KeyRules,
    LabeledAlgorithm,
    LabeledResult,
    LabeledSpec,
    LabelTable,
    OprfKey,
    PartyData,
    ProviderReport,
    Role,
    Table,
    memory_channel_pair,
    prepare_labeled,
    run_labeled,
)
from compute.psi.channel import MemoryChannel
from compute.psi.keys import encode_key, index_keys, key_digest
from compute.psi.labeled_dh import QueryMessage, blind, evaluate, hash_to_point
from compute.psi.ristretto import multiply

from .helpers import run_both

RULES = KeyRules(CaseRule.CASEFOLD, EmptyKeyRule.DROP, DuplicateRule.FIRST)


def spec(max_query: int = 1000, label_bytes: int = 200) -> LabeledSpec:
    return LabeledSpec(LabeledAlgorithm.DH, RULES, ("income", "segment"), label_bytes, max_query)


def norm(value: str) -> str:
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", value).strip().casefold())


class Recording(MemoryChannel):
    """A channel end that keeps every message it receives (the provider's view)."""

    def __init__(self, inner: MemoryChannel) -> None:
        super().__init__(inner._outbox, inner._inbox, inner._timeout_s)
        self.seen: list[bytes] = []

    def recv(self, max_bytes: int) -> bytes:
        payload = super().recv(max_bytes)
        self.seen.append(payload)
        return payload


def query(
    s: LabeledSpec,
    provider_table: Table,
    requester_table: Table,
    cached: LabelTable | None = None,
    key: OprfKey | None = None,
) -> tuple[LabeledResult, ProviderReport, Recording, MemoryChannel]:
    key = key or OprfKey.generate()
    prepared = prepare_labeled(s, PartyData(provider_table, ("id",)), key)
    req_end, prov_end = memory_channel_pair(timeout_s=30)
    recording = Recording(prov_end)
    out = run_both(
        (
            lambda: run_labeled(
                s,
                role=Role.REQUESTER,
                transport=req_end,
                data=PartyData(requester_table, ("id",)),
                cached_table=cached,
            ),
            lambda: run_labeled(s, role=Role.PROVIDER, transport=recording, prepared=prepared),
        )
    )
    for value in out:
        if isinstance(value, Exception):
            raise value
    assert isinstance(out[0], LabeledResult) and isinstance(out[1], ProviderReport)
    return out[0], out[1], recording, req_end


ids = st.text(min_size=1, max_size=20) | st.sampled_from(
    ["Ann", "ann ", "ANN", "Zoë", "zoe\u0308", "x" * 3000]
)
labels = st.text(max_size=15)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(ids, labels, labels), max_size=25),
    st.lists(ids, max_size=25),
)
def test_labels_exact_for_matches_and_absent_otherwise(
    provider_rows: list[tuple[str, str, str]], requester_ids: list[str]
) -> None:
    provider = Table(("id", "income", "segment"), tuple(provider_rows))
    requester = Table(("id",), tuple((i,) for i in requester_ids))
    expected_labels: dict[str, tuple[str, str]] = {}
    for pid, income, segment in provider_rows:
        if norm(pid):
            expected_labels.setdefault(norm(pid), (income, segment))  # first row wins
    result, report, _, _ = query(spec(), provider, requester)
    expected = {
        i: expected_labels[norm(k)] for i, k in enumerate(requester_ids) if norm(k) in expected_labels
    }
    assert {m.row_index: m.labels for m in result.matches} == expected
    assert [m.row_index for m in result.matches] == sorted(expected)
    assert result.table_size == len(expected_labels)
    distinct = len({norm(k) for k in requester_ids if norm(k)})
    assert report.query_size == result.query_size == distinct


def test_table_is_reused_until_the_key_rotates() -> None:
    provider = Table(("id", "income", "segment"), tuple((f"c{i}", str(i), "s") for i in range(300)))
    requester = Table(("id",), (("c7",), ("nobody",), ("C299",)))
    key = OprfKey.generate()
    first, _, _, first_end = query(spec(), provider, requester, key=key)
    assert first.table is not None and len(first.table) == 300
    cached = LabelTable.from_bytes(first.table.to_bytes())  # what the requester would store
    second, _, _, second_end = query(spec(), provider, requester, cached=cached, key=key)
    assert second.matches == first.matches
    assert second_end.bytes_received < first_end.bytes_received / 20  # no table the second time
    rotated, _, _, rotated_end = query(spec(), provider, requester, cached=cached, key=OprfKey.generate())
    assert rotated.matches == first.matches
    assert rotated.table is not None and rotated.table.key_id != cached.key_id
    assert rotated_end.bytes_received > 20 * second_end.bytes_received


def test_provider_view_is_blinded_points_of_the_query_size_only() -> None:
    # keys long enough that their raw text cannot turn up in ~340 random bytes by chance (a
    # 2-byte key did, about once in ten runs)
    provider = Table(("id", "income", "segment"), tuple((f"client-{i:06d}", str(i), "s") for i in range(50)))
    query_a = Table(("id",), tuple((f"client-{i:06d}",) for i in range(10)))  # all match
    query_b = Table(("id",), tuple((f"nobody-{i:06d}",) for i in range(10)))  # none match
    key = OprfKey.generate()
    _, _, view_a, _ = query(spec(), provider, query_a, key=key)
    _, _, view_b, _ = query(spec(), provider, query_b, key=key)
    _, _, view_a2, _ = query(spec(), provider, query_a, key=key)
    assert [len(m) for m in view_a.seen] == [len(m) for m in view_b.seen] == [len(m) for m in view_a2.seen]
    messages = [QueryMessage.from_bytes(v.seen[0], 10) for v in (view_a, view_b, view_a2)]
    assert all(len(m.points) == 10 and m.cached_key_id == b"" for m in messages)
    assert set(messages[0].points).isdisjoint(messages[2].points)  # fresh blinding each time
    for table, message, view in ((query_a, messages[0], view_a), (query_b, messages[1], view_b)):
        keyed = index_keys(table, ("id",), RULES)
        for encoding in keyed.encodings:
            unblinded = hash_to_point(b"datum-lpsi-h2g", encoding)
            assert unblinded not in message.points
            assert multiply(key.scalar, unblinded) not in message.points
            assert encoding not in view.seen[0] and key_digest(encoding) not in view.seen[0]
            assert encoding[6:] not in view.seen[0]  # the raw key text


def test_query_over_the_limit_and_bad_points_abort() -> None:
    provider = Table(("id", "income", "segment"), (("a", "1", "s"),))
    requester = Table(("id",), tuple((str(i),) for i in range(5)))
    requester_end, provider_end = memory_channel_pair(timeout_s=5)
    with pytest.raises(SpecError):  # refused before anything is sent
        run_labeled(
            spec(max_query=4),
            role=Role.REQUESTER,
            transport=requester_end,
            data=PartyData(requester, ("id",)),
        )
    assert requester_end.bytes_sent == 0
    prepared = prepare_labeled(spec(max_query=4), PartyData(provider, ("id",)), OprfKey.generate())
    _, too_many = blind([encode_key([str(i)]) for i in range(5)])
    requester_end.send(QueryMessage(b"", too_many).to_bytes())
    with pytest.raises(ProtocolAbort):  # and the provider enforces its own limit
        run_labeled(spec(max_query=4), role=Role.PROVIDER, transport=provider_end, prepared=prepared)
    with pytest.raises(ProtocolAbort):
        QueryMessage.from_bytes(QueryMessage(b"", (bytes(32),)).to_bytes(), 5)  # identity point
    with pytest.raises(ProtocolAbort):
        QueryMessage.from_bytes(QueryMessage(b"", (b"\xff" * 32,)).to_bytes(), 5)  # not an encoding
    _, points = blind([encode_key(["a"])] * 3)
    with pytest.raises(ProtocolAbort):
        QueryMessage.from_bytes(QueryMessage(b"", points).to_bytes(), 2)
    assert len(evaluate(OprfKey.generate(), points)) == 3


def test_label_too_long_and_silent_peer() -> None:
    provider = Table(("id", "income", "segment"), (("a", "x" * 300, "s"),))
    with pytest.raises(SpecError):
        prepare_labeled(spec(), PartyData(provider, ("id",)), OprfKey.generate())
    with pytest.raises(SpecError):
        LabeledSpec(
            LabeledAlgorithm.DH, KeyRules(CaseRule.EXACT, EmptyKeyRule.DROP, DuplicateRule.ALL), ("a",), 8, 8
        )
    requester_end, _ = memory_channel_pair(timeout_s=0.5)
    with pytest.raises(ProtocolAbort):
        run_labeled(
            spec(),
            role=Role.REQUESTER,
            transport=requester_end,
            data=PartyData(Table(("id",), (("a",),)), ("id",)),
        )


def test_duplicate_provider_keys_reject_rule() -> None:
    strict = LabeledSpec(
        LabeledAlgorithm.DH,
        KeyRules(CaseRule.CASEFOLD, EmptyKeyRule.DROP, DuplicateRule.REJECT),
        ("income",),
        64,
        10,
    )
    provider = Table(("id", "income"), (("a", "1"), ("A", "2")))
    with pytest.raises(SpecError):
        prepare_labeled(strict, PartyData(provider, ("id",)), OprfKey.generate())
