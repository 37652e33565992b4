"""HE (BFV) PSI and labeled PSI: polynomial algebra, exact labels, batching and checks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compute.errors import ProtocolAbort, SpecError
from compute.psi import (
    CaseRule,
    DuplicateRule,
    EmptyKeyRule,
    HeParams,
    KeyRules,
    LabeledAlgorithm,
    LabeledResult,
    LabeledSpec,
    PartyData,
    ProviderReport,
    Role,
    Table,
    he_poly,
    memory_channel_pair,
    prepare_labeled,
    run_labeled,
)
from compute.psi.he_psi import prepare_sender, run_he_receiver, run_he_sender
from compute.psi.keys import key_digest

from .helpers import run_both

T = HeParams().plain_modulus
RULES = KeyRules(CaseRule.EXACT, EmptyKeyRule.DROP, DuplicateRule.FIRST)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(0, T - 1), min_size=0, max_size=6, unique=True), min_size=1, max_size=5))
def test_polynomials_vanish_on_roots_and_interpolate(buckets: list[list[int]]) -> None:
    k, width = 6, len(buckets)
    roots = np.zeros((k, width), dtype=np.uint64)
    mask = np.zeros((k, width), dtype=bool)
    values = np.zeros((2, k, width), dtype=np.uint64)
    for b, items in enumerate(buckets):
        for j, v in enumerate(items):
            roots[j, b], mask[j, b] = v, True
            values[:, j, b] = (v * 7 + 1) % T, (v ^ 0xABCDE) % T
    match = he_poly.roots_to_coeffs(roots, mask, T)
    interp = he_poly.interpolate(roots, mask, values, T)
    for b, items in enumerate(buckets):
        poly = [int(c) for c in match[:, b]]
        assert poly[len(items)] == 1 and not any(poly[len(items) + 1 :])  # monic of degree |items|
        for j, v in enumerate(items):
            assert sum(c * pow(v, i, T) for i, c in enumerate(poly)) % T == 0
            for ch in range(2):
                got = sum(int(c) * pow(v, i, T) for i, c in enumerate(interp[ch, :, b])) % T
                assert got == int(values[ch, j, b])
        if not items:
            assert poly[0] == 1  # no roots: constant 1, never zero


def he_query(
    sender: list[bytes],
    receiver: list[bytes],
    params: HeParams,
    labels: list[tuple[str, ...]] | None,
    label_bytes: int = 0,
) -> dict[int, tuple[str, ...]]:
    columns = ("a", "b") if labels is not None else ()
    table = prepare_sender(sender, labels, columns, label_bytes, params)
    a, b = memory_channel_pair(timeout_s=60)
    out = run_both(
        (
            lambda: run_he_receiver(a, receiver, params, columns, label_bytes),
            lambda: run_he_sender(b, table, 100),
        )
    )
    for value in out:
        if isinstance(value, Exception):
            raise value
    return out[0]  # type: ignore[no-any-return]


@settings(max_examples=3, deadline=None)
@given(st.sets(st.integers(0, 400), max_size=120), st.sets(st.integers(0, 400), max_size=60))
def test_he_psi_matches_plain_intersection(sender: set[int], receiver: set[int]) -> None:
    s, r = sorted(sender), sorted(receiver)
    found = he_query(
        [key_digest(str(x).encode()) for x in s],
        [key_digest(str(x).encode()) for x in r],
        HeParams(degree=8),
        None,
    )
    assert {r[i] for i in found} == sender & receiver


def test_labeled_he_with_many_columns_and_batches() -> None:
    params = HeParams(degree=2, batch_size=100)  # forces several columns and three batches
    sender = [f"k{i}" for i in range(400)]
    labels = [(f"label-{i}", "é" * (i % 4)) for i in range(400)]
    receiver = [f"k{i}" for i in range(0, 500, 2)]  # 250 keys: 200 match
    found = he_query(
        [key_digest(k.encode()) for k in sender],
        [key_digest(k.encode()) for k in receiver],
        params,
        labels,
        label_bytes=32,
    )
    expected = {i: labels[int(k[1:])] for i, k in enumerate(receiver) if int(k[1:]) < 400}
    assert found == expected


def test_run_labeled_he_and_provider_report() -> None:
    params = HeParams(degree=16)
    s = LabeledSpec(LabeledAlgorithm.HE, RULES, ("income",), 16, 1000, he=params)
    provider = Table(("id", "income"), tuple((f"Client {i}", str(1000 * i)) for i in range(300)))
    requester = Table(("id",), (("Client 5",), ("client 5",), ("Client 299",), ("Client 5",)))
    prepared = prepare_labeled(s, PartyData(provider, ("id",)))
    a, b = memory_channel_pair(timeout_s=60)
    out = run_both(
        (
            lambda: run_labeled(s, role=Role.REQUESTER, transport=a, data=PartyData(requester, ("id",))),
            lambda: run_labeled(s, role=Role.PROVIDER, transport=b, prepared=prepared),
        )
    )
    result, report = out
    assert isinstance(result, LabeledResult) and isinstance(report, ProviderReport)
    assert [(m.row_index, m.labels) for m in result.matches] == [
        (0, ("5000",)),
        (2, ("299000",)),
        (3, ("5000",)),
    ]
    assert result.table_size is None and report.query_size == params.batch_size  # one batch, size hidden


def test_sender_rejects_a_context_with_other_parameters() -> None:
    table = prepare_sender([key_digest(b"x")], None, (), 0, HeParams())
    a, b = memory_channel_pair(timeout_s=3)
    out = run_both(
        (
            lambda: run_he_receiver(a, [key_digest(b"x")], HeParams(plain_modulus=4293918721), (), 0),
            lambda: run_he_sender(b, table, 10),
        )
    )
    assert isinstance(out[1], ProtocolAbort)


def test_parameter_validation() -> None:
    with pytest.raises(SpecError):
        HeParams(plain_modulus=65537 * 2)  # not prime
    with pytest.raises(SpecError):
        HeParams(plain_modulus=65537)  # prime, but not 1 mod 2N
    with pytest.raises(SpecError):
        HeParams(batch_size=8000)
