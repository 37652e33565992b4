"""run_psi over real SPU links: each party's side runs in its own spawned engine process.

Kept to few runs (each spawns two processes and sets up a brpc link, ~2 s).
"""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compute.errors import ProtocolAbort
from compute.psi import (
    CaseRule,
    DuplicateRule,
    EmptyKeyRule,
    HeParams,
    KeyRules,
    LabeledAlgorithm,
    LabeledResult,
    LabeledSpec,
    OprfKey,
    PartyData,
    Protocol,
    ProviderReport,
    PsiResult,
    PsiSpec,
    Reveal,
    Role,
    Table,
    normalize_value,
    prepare_labeled,
    run_labeled,
    run_psi,
)

from .helpers import link_pair, psi_pair, run_both

RULES = KeyRules(CaseRule.CASEFOLD, EmptyKeyRule.DROP, DuplicateRule.ALL)
RULES_FIRST = KeyRules(CaseRule.CASEFOLD, EmptyKeyRule.DROP, DuplicateRule.FIRST)


def expected_rows(
    mine: Table, theirs: Table, mine_cols: tuple[str, ...], their_cols: tuple[str, ...]
) -> list[int]:
    """Plain inner join: my row indices whose normalized key the other side holds."""

    def key(table: Table, row: tuple[str, ...], cols: tuple[str, ...]) -> tuple[str, ...] | None:
        parts = tuple(normalize_value(row[table.column_index(c)], RULES.case) for c in cols)
        return None if "" in parts else parts

    other = {key(theirs, r, their_cols) for r in theirs.rows} - {None}
    return [i for i, r in enumerate(mine.rows) if key(mine, r, mine_cols) in other]


def assert_receiver(result: PsiResult | Exception, table: Table, expected: list[int]) -> None:
    assert isinstance(result, PsiResult), result
    assert result.is_receiver and list(result.row_indices) == expected
    assert list(result.rows) == [table.rows[i] for i in expected]


def assert_clean(tmp: Path) -> None:
    for party in tmp.iterdir():
        assert list(party.iterdir()) == [], f"{party.name} left files behind"


BANK = Table(
    ("first", "last", "income_class"),
    (
        ("Zoë", "Ünal", "A"),
        ("ann", "LEE", "A"),
        ("Ann", "Lee", "B"),  # same key as the row above after case folding
        ("Bob", "Smith,Jr", "C"),
        ("x" * 5000, "long", "A"),
        ("", "nobody", "A"),  # empty column: dropped
        ("Carl", "\u00e9", "A"),
    ),
)
VENDOR = Table(
    ("given", "family"),
    (
        ("zoe\u0308", " ünal"),  # decomposed umlaut + space: same key after NFC and trim
        ("Ann", "Lee"),
        ("Bob", "Smith"),
        ("X" * 5000, "LONG"),
        ("Dan", "Brown"),
        ("Carl", "e\u0301"),
    ),
)
VENDOR_DATA, BANK_DATA = PartyData(VENDOR, ("given", "family")), PartyData(BANK, ("first", "last"))


@pytest.mark.parametrize("protocol", [Protocol.RR22, Protocol.KKRT, Protocol.ECDH, Protocol.HE])
def test_all_protocols_give_the_plain_inner_join(protocol: Protocol, tmp_path: Path) -> None:
    spec = PsiSpec(
        protocol, Reveal.ROWS, (0, 1), RULES, he=HeParams(degree=8) if protocol is Protocol.HE else None
    )
    vendor, bank = psi_pair(spec, (VENDOR_DATA, BANK_DATA), tmp_path, f"all-{protocol}")
    assert_receiver(vendor, VENDOR, expected_rows(VENDOR, BANK, ("given", "family"), ("first", "last")))
    assert_receiver(bank, BANK, expected_rows(BANK, VENDOR, ("first", "last"), ("given", "family")))
    assert vendor.intersection_size == bank.intersection_size == 4
    assert_clean(tmp_path)


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    a=st.sets(st.integers(0, 60), max_size=40),
    b=st.sets(st.integers(0, 60), max_size=40),
    protocol=st.sampled_from([Protocol.RR22, Protocol.KKRT, Protocol.ECDH]),
)
def test_one_sided_receiver_matches_plain_sets(
    a: set[int], b: set[int], protocol: Protocol, tmp_path: Path
) -> None:
    left = Table(("id",), tuple((f"id-{i}",) for i in sorted(a)))
    right = Table(("id",), tuple((f"ID-{i} ",) for i in sorted(b)))
    run = tmp_path / f"{protocol}-{len(a)}-{len(b)}-{hash(frozenset(a)) & 0xFFFF}"
    run.mkdir()
    spec = PsiSpec(protocol, Reveal.ROWS, (1,), RULES)
    out = psi_pair(spec, (PartyData(left, ("id",)), PartyData(right, ("id",))), run, f"one-{run.name}")
    sender, receiver = out
    assert isinstance(sender, PsiResult) and not sender.is_receiver
    assert sender.intersection_size is None and sender.rows == () and sender.row_indices == ()
    assert_receiver(receiver, right, [i for i, v in enumerate(sorted(b)) if v in a])
    assert_clean(run)


def test_size_only_reveals_the_count_and_no_rows(tmp_path: Path) -> None:
    left = Table(("id",), tuple((str(i),) for i in range(0, 300, 3)))
    right = Table(("id",), tuple((str(i),) for i in range(0, 300, 5)))
    spec = PsiSpec(Protocol.ECDH, Reveal.SIZE, (0,), RULES)
    receiver, sender = psi_pair(spec, (PartyData(left, ("id",)), PartyData(right, ("id",))), tmp_path, "size")
    assert isinstance(receiver, PsiResult) and isinstance(sender, PsiResult)
    assert receiver.intersection_size == 20 and receiver.rows == () and receiver.peer_size == 60
    assert sender.intersection_size is None and sender.rows == () and sender.peer_size == 100
    assert_clean(tmp_path)


def test_mismatched_specs_abort_before_exchanging_keys(tmp_path: Path) -> None:
    links = link_pair("mismatch")
    for r in (0, 1):
        (tmp_path / f"p{r}").mkdir()
    out = run_both(
        (
            lambda: run_psi(
                PsiSpec(Protocol.RR22, Reveal.ROWS, (0,), RULES),
                data=VENDOR_DATA,
                link=links[0],
                work_dir=tmp_path / "p0",
            ),
            lambda: run_psi(
                PsiSpec(Protocol.RR22, Reveal.ROWS, (0, 1), RULES),
                data=BANK_DATA,
                link=links[1],
                work_dir=tmp_path / "p1",
            ),
        )
    )
    assert all(isinstance(o, ProtocolAbort) for o in out), out
    assert_clean(tmp_path)


def _victim(spec: PsiSpec, n: int, link_rank1: object, work_dir: str) -> None:
    table = Table(("id",), tuple((str(i),) for i in range(n)))
    run_psi(spec, data=PartyData(table, ("id",)), link=link_rank1, work_dir=Path(work_dir))  # type: ignore[arg-type]


def test_peer_killed_mid_protocol_gives_protocol_abort_and_no_output(tmp_path: Path) -> None:
    spec = PsiSpec(Protocol.ECDH, Reveal.ROWS, (0,), RULES)
    links = link_pair("kill", recv_timeout_ms=5_000)
    survivor_dir, victim_dir = tmp_path / "survivor", tmp_path / "victim"
    survivor_dir.mkdir()
    victim_dir.mkdir()
    n = 300_000
    victim = multiprocessing.get_context("spawn").Process(
        target=_victim, args=(spec, n, links[1], str(victim_dir))
    )
    victim.start()
    started = victim_dir / "psi-kill-r1" / "input.csv"
    table = Table(("id",), tuple((str(i),) for i in range(n)))

    seen: dict[str, float | bool] = {}

    def killer() -> None:
        deadline = time.monotonic() + 60
        while not started.exists() and time.monotonic() < deadline:  # the victim's libpsi run has begun
            time.sleep(0.02)
        seen["started"] = started.exists()
        victim.kill()
        seen["killed_at"] = time.monotonic()

    out = run_both(
        (lambda: run_psi(spec, data=PartyData(table, ("id",)), link=links[0], work_dir=survivor_dir), killer)
    )
    returned_at = time.monotonic()
    victim.join()
    assert seen["started"] is True
    assert isinstance(out[0], ProtocolAbort), out[0]
    assert returned_at - float(seen["killed_at"]) < 30  # bounded by the link's timeouts, not a hang
    assert list(survivor_dir.iterdir()) == []


def test_labeled_dh_over_a_link_in_engine_processes(tmp_path: Path) -> None:
    spec = LabeledSpec(LabeledAlgorithm.DH, RULES_FIRST, ("income_class",), 32, 100)
    prepared = prepare_labeled(spec, BANK_DATA, OprfKey.generate())
    links = link_pair("labeled")
    for r in (0, 1):
        (tmp_path / f"p{r}").mkdir()
    requester, provider = run_both(
        (
            lambda: run_labeled(
                spec, role=Role.REQUESTER, transport=links[0], data=VENDOR_DATA, work_dir=tmp_path / "p0"
            ),
            lambda: run_labeled(
                spec, role=Role.PROVIDER, transport=links[1], prepared=prepared, work_dir=tmp_path / "p1"
            ),
        )
    )
    assert isinstance(requester, LabeledResult), requester
    assert isinstance(provider, ProviderReport), provider
    # bank keys after folding: zoë ünal, ann lee (first row wins: "A"), bob smith,jr, x*5000 long, carl é
    assert [(m.row_index, m.labels) for m in requester.matches] == [
        (0, ("A",)),
        (1, ("A",)),
        (3, ("A",)),
        (5, ("A",)),
    ]
    assert provider.query_size == 6 and requester.table_size == provider.table_size == 5
    assert_clean(tmp_path)
