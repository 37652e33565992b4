"""Entry points: `run_psi` (rr22 | kkrt | ecdh | he) and `run_labeled` (dh | he).

Each party calls the entry point in its own process with the same spec. PSI always runs over
an SPU link in a supervised worker process (libpsi needs the link; the pure-Python
protocols share the same process isolation and deadline). Labeled PSI runs over any
`Channel` in the calling process, or over an SPU link in a worker when given a LinkConfig.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace
from pathlib import Path

from compute.errors import ProtocolAbort, SpecError
from compute.psi.cardinality import run_cardinality_receiver, run_cardinality_sender
from compute.psi.channel import Channel
from compute.psi.he_psi import HeSenderTable, prepare_sender, run_he_receiver, run_he_sender
from compute.psi.keys import KeyedRows, Table, index_keys
from compute.psi.labeled_dh import (
    DhProvider,
    LabelTable,
    OprfKey,
    prepare_provider,
    run_dh_provider,
    run_dh_requester,
)
from compute.psi.link import EngineWorker, LinkConfig, LinkSession, run_in_worker
from compute.psi.result import LabeledMatch, LabeledResult, ProviderReport, PsiResult
from compute.psi.spec import DuplicateRule, LabeledAlgorithm, LabeledSpec, Protocol, PsiSpec, Reveal, Role
from compute.psi.spu_psi import run_spu_psi_on

_MAX_HE_BATCHES = 1 << 12


@dataclass(frozen=True)
class PartyData:
    """One party's input: its table and the columns forming its key (same count on both sides)."""

    table: Table
    key_columns: tuple[str, ...]


def run_psi(spec: PsiSpec, *, data: PartyData, link: LinkConfig, work_dir: Path) -> PsiResult:
    """Run this party's side of a PSI task; see PsiResult for what each side gets."""
    if not data.key_columns:
        raise SpecError("name at least one key column")
    for column in data.key_columns:
        data.table.column_index(column)  # a missing column fails before any process starts
    handshake = spec.digest() + struct.pack(">H", len(data.key_columns))
    rank, is_receiver = link.rank, link.rank in spec.receivers
    # the engine process starts (imports, link, handshake) while this process prepares the keys
    with EngineWorker(link, work_dir, handshake) as worker:
        keyed = index_keys(data.table, data.key_columns, spec.key_rules)
        if spec.reveal is Reveal.SIZE:
            size, peer_size = worker.run(_cardinality_target, (spec.receivers, keyed.digests))
            return PsiResult(
                spec.protocol, spec.reveal, rank, is_receiver, size, (), (), len(keyed), peer_size
            )
        if spec.protocol is Protocol.HE:
            assert spec.he is not None
            matched = worker.run(_he_psi_target, (spec, keyed.digests))
        else:
            matched = run_spu_psi_on(worker, spec.protocol, spec.receivers, keyed.digests).matched
    if matched is None:
        return PsiResult(spec.protocol, spec.reveal, rank, False, None, (), (), len(keyed), None)
    positions = _positions(keyed, matched)
    rows = keyed.rows_for(positions)
    return PsiResult(
        spec.protocol,
        spec.reveal,
        rank,
        True,
        len(positions),
        rows,
        tuple(data.table.rows[i] for i in rows),
        len(keyed),
        None,
    )


def _positions(keyed: KeyedRows, matched: tuple[bytes, ...]) -> list[int]:
    """Positions (ascending) of the matched digests among this party's keys."""
    wanted = set(matched)
    positions = [i for i, d in enumerate(keyed.digests) if d in wanted]
    if len(positions) != len(wanted):
        raise ProtocolAbort("the protocol returned a key this party does not hold")
    return positions


def _cardinality_target(
    session: LinkSession, receivers: tuple[int, ...], digests: tuple[bytes, ...]
) -> tuple[int | None, int]:
    if session.rank == receivers[0]:
        return run_cardinality_receiver(session.channel, digests, tell_peer=len(receivers) == 2)
    return run_cardinality_sender(session.channel, digests, told=len(receivers) == 2)


def _he_psi_target(
    session: LinkSession, spec: PsiSpec, digests: tuple[bytes, ...]
) -> tuple[bytes, ...] | None:
    """The first receiver queries; the other side answers. With two receivers the querier
    sends the matched digests back (semi-honest: both then hold the intersection)."""
    assert spec.he is not None
    both = len(spec.receivers) == 2
    if session.rank == spec.receivers[0]:
        found = run_he_receiver(session.channel, digests, spec.he, (), 0)
        matched = tuple(digests[i] for i in sorted(found))
        if both:
            session.channel.send(b"".join(matched))
        return matched
    table = prepare_sender(digests, None, (), 0, spec.he)
    run_he_sender(session.channel, table, _MAX_HE_BATCHES)
    if not both:
        return None
    raw = session.channel.recv(32 * len(digests))
    if len(raw) % 32:
        raise ProtocolAbort("malformed intersection message")
    return tuple(raw[i : i + 32] for i in range(0, len(raw), 32))


def prepare_labeled(
    spec: LabeledSpec, data: PartyData, key: OprfKey | None = None
) -> DhProvider | HeSenderTable:
    """The provider's one-off preparation: the DH encrypted table (needs `key`) or HE polynomials."""
    keyed = index_keys(data.table, data.key_columns, spec.key_rules)
    label_positions = [data.table.column_index(c) for c in spec.label_columns]
    labels = [tuple(data.table.rows[g[0]][p] for p in label_positions) for g in keyed.row_groups]
    if spec.algorithm is LabeledAlgorithm.DH:
        if key is None:
            raise SpecError("the DH provider needs its OPRF key")
        return prepare_provider(keyed, labels, spec.label_columns, spec.label_bytes, key)
    assert spec.he is not None
    return prepare_sender(keyed.digests, labels, spec.label_columns, spec.label_bytes, spec.he)


def run_labeled(
    spec: LabeledSpec,
    *,
    role: Role,
    transport: Channel | LinkConfig,
    data: PartyData | None = None,
    prepared: DhProvider | HeSenderTable | None = None,
    cached_table: LabelTable | None = None,
    work_dir: Path | None = None,
    max_answer_bytes: int = 1 << 31,
) -> LabeledResult | ProviderReport:
    """Run one labeled PSI query: the requester passes `data` (and optionally the DH table it
    cached from an earlier query), the provider passes what `prepare_labeled` returned."""
    if role is Role.PROVIDER:
        if prepared is None:
            raise SpecError("the provider passes its prepared table")
        args: tuple[object, ...] = (spec, role, prepared, None, None, max_answer_bytes)
    else:
        if data is None:
            raise SpecError("the requester passes its data")
        # the duplicate rule binds the provider; every requester row with a matching key gets its labels
        rules = replace(spec.key_rules, duplicates=DuplicateRule.ALL)
        keyed = index_keys(data.table, data.key_columns, rules)
        args = (spec, role, None, keyed, cached_table, max_answer_bytes)
    if isinstance(transport, LinkConfig):
        if work_dir is None:
            raise SpecError("a link run needs a work_dir")
        outcome = run_in_worker(_labeled_target, args, transport, work_dir, spec.digest())
    else:
        outcome = _labeled_over(transport, *args)  # type: ignore[arg-type]
    if isinstance(outcome, ProviderReport):
        return outcome
    found, table_size, table = outcome
    assert data is not None
    matches = tuple(
        LabeledMatch(row, found[k]) for k, group in enumerate(keyed.row_groups) if k in found for row in group
    )
    return LabeledResult(
        spec.algorithm,
        spec.label_columns,
        tuple(sorted(matches, key=lambda m: m.row_index)),
        len(keyed),
        table_size,
        table,
    )


_Found = tuple[dict[int, tuple[str, ...]], int | None, LabelTable | None]


def _labeled_target(session: LinkSession, *args: object) -> ProviderReport | _Found:
    return _labeled_over(session.channel, *args)  # type: ignore[arg-type]


def _labeled_over(
    channel: Channel,
    spec: LabeledSpec,
    role: Role,
    prepared: DhProvider | HeSenderTable | None,
    keyed: KeyedRows | None,
    cached: LabelTable | None,
    max_answer_bytes: int,
) -> ProviderReport | _Found:
    if role is Role.PROVIDER:
        if spec.algorithm is LabeledAlgorithm.DH:
            if not isinstance(prepared, DhProvider):
                raise SpecError("a DH provider passes a DhProvider")
            size = run_dh_provider(channel, prepared, spec.max_query_keys)
            return ProviderReport(spec.algorithm, size, len(prepared.table))
        if not isinstance(prepared, HeSenderTable):
            raise SpecError("an HE provider passes an HeSenderTable")
        assert spec.he is not None
        batches = run_he_sender(channel, prepared, -(-spec.max_query_keys // spec.he.batch_size))
        return ProviderReport(spec.algorithm, batches * spec.he.batch_size, prepared.size)
    assert keyed is not None
    if spec.algorithm is LabeledAlgorithm.DH:
        found, table = run_dh_requester(channel, keyed, spec.max_query_keys, cached, max_answer_bytes)
        if table.label_columns != spec.label_columns or table.label_bytes != spec.label_bytes:
            raise ProtocolAbort("the provider's table does not carry the agreed label columns")
        return found, len(table), table
    assert spec.he is not None
    if len(keyed) > spec.max_query_keys:
        raise SpecError(f"query has {len(keyed)} distinct keys, the limit is {spec.max_query_keys}")
    found = run_he_receiver(
        channel, keyed.digests, spec.he, spec.label_columns, spec.label_bytes, max_answer_bytes
    )
    return found, None, None
