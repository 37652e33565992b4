"""One committee party's side of an MPC program over real SPU links (`run_party`).

Each party calls `run_party` in its own process with the same plan. In a spawned worker
(link.py) the party: checks the session digest (plan, protocol, hosts, receivers) with every
peer; compiles the plan and checks the executable's digest too; secret-shares the parts it
hosts (their provider is co-located with this party) and sends each peer its share blob,
receives the blobs of parts other parties host, takes the blobs of external providers as
given, and checks every blob against the plan; tells every peer whether its inputs are good
(a refusal ends the run for everyone at once); runs the program; reveals the per-group
disclosure flags to every party; and only if all of them hold sends its output shares to
the receiver(s), who reconstruct the outputs. Under `Reveal.external()` nobody in the
committee reconstructs: each party packs its output shares into one blob (reconstruct.py)
and returns it as `OutputShares` for the requester.

A provider's columns are checked and encoded in the calling process before any worker
starts, so a bad column is a SpecError before any MPC.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from compute.errors import ProtocolAbort, SpecError
from compute.mpc.encode import Columns, encode_part
from compute.mpc.engine import Compiled, Protocol, load_executable, runtime_config
from compute.mpc.link import CommitteeLink, Prewarmed, Session, first_line, run_in_worker
from compute.mpc.plan import Plan
from compute.mpc.result import OutputShares, PartyReport, QueryResult, check_flags, decode
from compute.mpc.shares import (
    ShareLayout,
    blob_limit,
    make_shares,
    open_blob,
    pack_share,
    plan_layout,
    unpack_share,
)

_MAX_STATUS_BYTES = 512
MAX_OUTPUT_BYTES = 64 << 20


@dataclass(frozen=True)
class PartyOutcome:
    """What the worker hands back: the revealed flags (gated programs), outputs at a receiver."""

    flags: Any
    outputs: tuple[Any, ...] | None
    blob: bytes | None = None


@dataclass(frozen=True)
class Program:
    """What every party runs: its input layout, who hosts which part, who receives the output
    (`external`: nobody in the committee; each party packs its output shares for the
    requester); either a plan (compiled inside each worker) or an already compiled executable."""

    layout: ShareLayout
    protocol: Protocol
    hosts: tuple[int | None, ...]
    receivers: tuple[int, ...]
    gated: bool
    plan: Plan | None
    compiled: Compiled | None
    external: bool = False

    def digest(self, session_id: str) -> bytes:
        """What every party must agree on before exchanging anything."""
        h = hashlib.sha256(b"datum-mpc-session-v1\0")
        h.update(session_id.encode() + b"\0" + str(self.protocol).encode() + b"\0")
        h.update(repr((self.hosts, self.receivers, self.gated, self.external)).encode())
        h.update(self.layout.digest)
        if self.compiled is not None:
            h.update(hashlib.sha256(self.compiled.executable).digest())
        return h.digest()


def check_hosts(
    parts: int, protocol: Protocol, link: CommitteeLink, hosts: Sequence[int | None]
) -> tuple[int | None, ...]:
    """Validate the part -> hosting rank map for this committee."""
    if link.world != protocol.world:
        raise SpecError(f"{protocol} runs with {protocol.world} parties, the link has {link.world}")
    hosts = tuple(hosts)
    if len(hosts) != parts:
        raise SpecError(f"hosts names {len(hosts)} parts, the program has {parts}")
    for h in hosts:
        if h is not None and (type(h) is not int or not 0 <= h < link.world):
            raise SpecError(f"host {h!r} is not a committee rank")
    return hosts


def run_party(
    plan: Plan,
    *,
    protocol: Protocol,
    link: CommitteeLink,
    hosts: Sequence[int | None],
    data: Mapping[int, Columns] | None = None,
    shares: Mapping[int, bytes | Path] | None = None,
    progress: Callable[[str], None] | None = None,
    log_path: str | None = None,
    cache_dir: Path | None = None,
    prewarmed: Prewarmed | None = None,
) -> QueryResult | PartyReport | OutputShares:
    """Run this party's side of `plan`.

    `hosts[i]` is the rank that secret-shares part i (its provider is co-located with that
    party), or None for an external provider whose blobs (`share_part`) reach each party out
    of band: `shares` maps such a part to this party's blob. `data` holds the raw columns of
    the parts this party hosts. A receiver gets the QueryResult, any other party a
    PartyReport; under `Reveal.external()` every party gets `OutputShares` (its report and
    its output-share blob for the requester's `reconstruct_result`). `cache_dir`: a
    directory of compiled executables (cache.py), None to compile every time. `prewarmed`:
    an engine process started earlier (link.Prewarmed, one run each) instead of a new one. Raises
    DisclosureRefused when a group is below min_group_size (then no party releases any
    share), SpecError for bad inputs (before any MPC), ProtocolAbort when a peer fails or
    vanishes.
    """
    protocol = Protocol(protocol)
    hosts = check_hosts(len(plan.parts), protocol, link, hosts)
    if cache_dir is not None and not isinstance(cache_dir, str | os.PathLike):
        raise SpecError("cache_dir must be a path or None")
    local = {}
    for part, host in enumerate(hosts):
        if host == link.rank:
            if data is None or part not in data:
                raise SpecError(f"party {link.rank} hosts part {part} but has no data for it")
            local[part] = encode_part(plan, part, data[part])
    external = dict(shares or {})
    missing = [p for p, h in enumerate(hosts) if h is None and p not in external]
    if missing:
        raise SpecError(f"no share blob for externally provided part(s) {missing}")
    receivers = plan.query.reveal.receivers(protocol.world)
    to_requester = plan.query.reveal.external
    program = Program(plan_layout(plan), protocol, hosts, receivers, True, plan, None, to_requester)
    outcome = execute(
        program,
        link,
        local,
        external,
        progress=progress,
        log_path=log_path,
        cache_dir=cache_dir,
        prewarmed=prewarmed,
    )
    ok = check_flags(plan, outcome.flags)
    report = PartyReport(link.rank, plan.groups, ok, plan.numerics, plan.query.digest().hex())
    if to_requester:
        if outcome.blob is None:
            raise ProtocolAbort(f"party {link.rank}: the engine returned no output shares")
        return OutputShares(link.rank, outcome.blob, report)
    if outcome.outputs is None:
        return report
    return decode(plan, outcome.outputs)


def execute(
    program: Program,
    link: CommitteeLink,
    local: dict[int, dict[str, Any]],
    external: dict[int, bytes | Path],
    *,
    progress: Callable[[str], None] | None = None,
    log_path: str | None = None,
    cache_dir: Path | None = None,
    prewarmed: Prewarmed | None = None,
) -> PartyOutcome:
    """Run `program` for this party in a supervised worker (see run_party)."""
    outcome: PartyOutcome = run_in_worker(
        party_target,
        (program, local, external, cache_dir),
        link,
        program.digest(link.session_id),
        progress=progress,
        log_path=log_path,
        prewarmed=prewarmed,
    )
    return outcome


def party_target(
    session: Session,
    program: Program,
    local: dict[int, dict[str, Any]],
    external: dict[int, bytes | Path],
    cache_dir: Path | None = None,
) -> PartyOutcome:
    """The worker side (runs in the spawned process)."""
    import spu

    if program.compiled is not None:
        compiled = program.compiled
    else:
        from compute.mpc.cache import load_or_compile

        assert program.plan is not None
        compiled, hit = load_or_compile(program.plan, program.protocol, cache_dir)
        if hit:
            session.progress("cache-hit")
        session.agree(hashlib.sha256(compiled.executable).digest(), "compiled program (SPU or JAX version?)")
    session.progress("compiled")
    config = runtime_config(program.protocol, program.layout.numerics)
    runtime = spu.Runtime(session.lctx, config)
    inputs = _gather_inputs(session, program, local, external)
    session.progress("inputs-shared")
    for name, share in zip(compiled.input_names, inputs, strict=True):
        runtime.set_var(name, share)
    try:
        runtime.run(load_executable(compiled))
    except RuntimeError as exc:
        raise ProtocolAbort(f"party {session.rank}: the MPC run failed: {first_line(exc)}") from None
    session.progress("computed")
    io = spu.Io(session.world, config)
    names = list(compiled.output_names)
    flags = None
    if program.gated:
        flags = _reveal(session, runtime, io, names.pop(0), tuple(range(session.world)))
        if not bool(np.all(flags)):
            return PartyOutcome(flags, None)
    if program.external:
        return PartyOutcome(flags, None, _pack_for_requester(session, program, runtime, names))
    outputs = [_reveal(session, runtime, io, name, program.receivers) for name in names]
    session.progress("revealed")
    if session.rank not in program.receivers:
        return PartyOutcome(flags, None)
    return PartyOutcome(flags, tuple(outputs))


def _pack_for_requester(session: Session, program: Program, runtime: Any, names: list[str]) -> bytes:
    """This party's shares of every output, in one blob bound to the plan, its rank and this
    run (the run id hashes a fresh nonce from every party, so blobs of two runs never mix)."""
    from compute.mpc.reconstruct import RUN_ID_BYTES, pack_outputs

    assert program.plan is not None
    nonce = os.urandom(RUN_ID_BYTES)
    for peer in session.peers:
        session.send(peer, nonce)
    nonces = {session.rank: nonce} | {peer: session.recv(peer, RUN_ID_BYTES) for peer in session.peers}
    if any(len(n) != RUN_ID_BYTES for n in nonces.values()):
        raise ProtocolAbort(f"party {session.rank}: a peer sent a malformed run nonce")
    run_id = hashlib.sha256(b"".join(nonces[r] for r in range(session.world))).digest()[:RUN_ID_BYTES]
    shares = [runtime.get_var(name) for name in names]
    blob = pack_outputs(program.plan, program.protocol, session.rank, run_id, shares)
    session.progress("revealed")
    return blob


def _gather_inputs(
    session: Session, program: Program, local: dict[int, dict[str, Any]], external: dict[int, bytes | Path]
) -> list[Any]:
    """Share hosted parts, collect everyone's blobs, check them, agree that all are good."""
    layout = program.layout
    mine: dict[int, list[Any]] = {}
    error: SpecError | None = None
    for part, host in enumerate(program.hosts):
        if host == session.rank:
            blobs = make_shares(layout, program.protocol, part, local[part])
            for peer in session.peers:
                session.send(peer, blobs[peer])
            mine[part] = open_blob(layout, program.protocol, part, session.rank, blobs[session.rank])
    for part, host in enumerate(program.hosts):
        if host == session.rank:
            continue
        if error is None:
            try:
                blob = (
                    _read_blob(external[part], layout, part)
                    if host is None
                    else session.recv(host, blob_limit(layout, part))
                )
                mine[part] = open_blob(layout, program.protocol, part, session.rank, blob)
            except SpecError as exc:
                error = exc
        elif host is not None:
            session.recv(host, blob_limit(layout, part))  # keep the message order
    _agree_inputs(session, error)
    return [share for part in range(len(program.hosts)) for share in mine[part]]


def _read_blob(blob: bytes | Path, layout: ShareLayout, part: int) -> bytes:
    """An external provider's share blob, given as bytes or as the file the node keeps it in
    (read here, in the engine process: the node does not pass 100 MB through a pipe)."""
    if isinstance(blob, bytes):
        return blob
    limit = blob_limit(layout, part)
    try:
        with open(blob, "rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise SpecError(f"{layout.labels[part]}: cannot read its share blob ({reason})") from None
    return data  # open_blob refuses one over the limit


def _agree_inputs(session: Session, error: SpecError | None) -> None:
    status = b"ok" if error is None else ("refused its inputs: " + str(error)).encode()[:_MAX_STATUS_BYTES]
    for peer in session.peers:
        session.send(peer, status)
    verdicts = {peer: session.recv(peer, _MAX_STATUS_BYTES) for peer in session.peers}
    if error is not None:
        raise error
    for peer, verdict in verdicts.items():
        if verdict != b"ok":
            raise ProtocolAbort(f"party {peer} {verdict.decode(errors='replace')}")


def _reveal(session: Session, runtime: Any, io: Any, name: str, to: tuple[int, ...]) -> Any:
    """Send my share of output `name` to every rank in `to`; reconstruct it if I am one."""
    share = runtime.get_var(name)
    payload = pack_share(share)
    for peer in to:
        if peer != session.rank:
            session.send(peer, payload)
    if session.rank not in to:
        return None
    parts: list[Any] = []
    for peer in range(session.world):
        if peer == session.rank:
            parts.append(share)
            continue
        try:
            parts.append(
                unpack_share(session.recv(peer, MAX_OUTPUT_BYTES), f"output {name} from party {peer}")
            )
        except SpecError as exc:
            raise ProtocolAbort(str(exc)) from None
    return np.asarray(io.reconstruct(parts))
