"""The requester SDK: post an HE outsourcing task, hand its inputs to the committee, wait
for the quorum-signed result on chain, fetch it and decrypt it; or run a PSI task against a
dataset served by its owner's node (`prepare_psi`, `DatumClient.run_psi`, defined in
`oracle.client_psi` and re-exported here; docs/PSI_NETWORK.md).

Only ciphertexts and the public context leave the requester; the secret key stays in
its `OwnerKeys`. Every step is its own call so callers (and tests) can stop in between::

    prepared = prepare_he(csv_bytes, "sum(income)", "paillier")
    async with DatumClient(chain, contracts, account) as client:
        outcome = await client.run_he(prepared, fee_wei=10**18)
    print(outcome.result)

`datum task submit he` and `datum task submit psi` are thin layers over this module.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import os
import secrets
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from eth_account.signers.local import LocalAccount

from compute.errors import ConfigError, DatumError, ProtocolAbort, SpecError
from compute.he import (
    HETaskSpec,
    OwnerKeys,
    Scheme,
    decrypt,
    encrypt_columns,
    error_bound,
    generate_keys,
    parse_csv,
    parse_formula,
)
from compute.he.nodes import column_names
from compute.he.scheme import CKKS_SCALE

from .chain import staking, tasks
from .chain.contracts import DatumContracts
from .chain.rpc import Chain
from .chain.tasks import TaskRequest, TaskState
from .chain.txmanager import NonceTracker, TxManager
from .client_psi import PreparedPSI, PSIOutcome, PsiRequester, PsiSession, prepare_psi, save_psi_record
from .p2p import P2PClient, Peer, PeerError

__all__ = [
    "SCHEMES",
    "DatumClient",
    "Finalized",
    "HEOutcome",
    "PSIOutcome",
    "PreparedHE",
    "PreparedPSI",
    "PsiSession",
    "Progress",
    "Submitted",
    "TaskExpired",
    "TaskFailed",
    "TaskRefunded",
    "prepare_he",
    "prepare_psi",
    "save_psi_record",
    "save_task_keys",
    "spec_uri",
]

SCHEMES: dict[str, Scheme] = {"paillier": Scheme.ZPAILLIER, "ou": Scheme.OU, "ckks": Scheme.CKKS}
INPUT_ORDER = ("spec", "context", "columns")

Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``: stages are ``upload`` (blobs) and ``wait`` (seconds)."""


class TaskFailed(DatumError):
    """The task did not produce a result for the requester."""


class TaskRefunded(TaskFailed):
    """The deadline passed and the escrow was refunded."""


class TaskExpired(TaskFailed):
    """The deadline passed without a result (anyone may now call ``refund``)."""


def spec_uri(spec: HETaskSpec) -> str:
    """The spec URI posted on chain: the committee gets the spec bytes from the requester."""
    return "datum:spec:0x" + spec.spec_hash().hex()


@dataclass(frozen=True)
class PreparedHE:
    """An HE task ready to post: the spec, the owner's keys and the two ciphertext blobs.

    `keys` holds the SECRET key: it never leaves the requester.
    """

    spec: HETaskSpec
    keys: OwnerKeys = field(repr=False)
    context: bytes = field(repr=False)
    columns: bytes = field(repr=False)
    bound: float = 0.0  # stated error bound of the decrypted scalar (0 for exact results)
    prepare_s: float = 0.0

    @property
    def spec_json(self) -> bytes:
        """The canonical spec bytes (their sha256 is the on-chain specHash)."""
        return self.spec.canonical_json()

    def blob(self, name: str) -> bytes:
        """An input blob by name."""
        return {"spec": self.spec_json, "context": self.context, "columns": self.columns}[name]


def _default_scale(scheme: Scheme, used: dict[str, Any], scale: int | None) -> int:
    if scheme is Scheme.CKKS:
        if scale not in (None, CKKS_SCALE):
            raise ConfigError(f"ckks runs at scale 2^40; --scale {scale} is not supported")
        return int(CKKS_SCALE)
    if scale is not None:
        return int(scale)
    reals = [name for name, values in used.items() if np.asarray(values).dtype.kind == "f"]
    if reals:
        raise ConfigError(
            f"column(s) {', '.join(reals)} hold non-integer values: state a fixed-point --scale "
            "(e.g. 100 keeps two decimals) or use --scheme ckks"
        )
    return 1


def _select_columns(data: bytes | str, names: Sequence[str]) -> str:
    """The CSV cut down to `names` (other columns, e.g. ids, need not be numeric and never leave)."""
    text = data.decode("utf-8-sig") if isinstance(data, bytes) else data.lstrip("\ufeff")
    rows = [r for r in csv.reader(io.StringIO(text)) if r and any(cell.strip() for cell in r)]
    if not rows:
        raise SpecError("the CSV is empty")
    header = [h.strip() for h in rows[0]]
    missing = [n for n in names if n not in header]
    if missing:
        raise SpecError(f"unknown column {missing[0]!r} (the CSV has: {', '.join(header)})")
    picks = [header.index(n) for n in names]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for line, row in enumerate(rows, start=1):
        if len(row) != len(header):
            raise SpecError(f"CSV line {line} has {len(row)} cells, expected {len(header)}")
        writer.writerow([row[i] for i in picks])
    return out.getvalue()


def prepare_he(
    data: bytes | str,
    formula: str,
    scheme: str | Scheme,
    *,
    columns: Sequence[str] | None = None,
    scale: int | None = None,
    keys: OwnerKeys | None = None,
    key_bits: int | None = None,
) -> PreparedHE:
    """Parse the CSV, build the spec, generate (or reuse) keys and encrypt locally.

    Only the spec's columns are encrypted: by default the columns the formula uses.
    Paillier needs `scale` for real-valued columns (1 for integers); CKKS runs at 2^40.
    """
    started = time.perf_counter()
    chosen = SCHEMES.get(scheme.lower(), None) if isinstance(scheme, str) else scheme
    if chosen is None:
        raise ConfigError(f"unknown scheme {scheme!r} (use {', '.join(SCHEMES)})")
    names = tuple(columns) if columns else tuple(sorted(column_names(parse_formula(formula))))
    used = parse_csv(_select_columns(data, names))
    spec = HETaskSpec(chosen, formula, names, scale=_default_scale(chosen, used, scale))
    if keys is None:
        keys = generate_keys(chosen, key_bits=key_bits) if chosen.is_paillier else generate_keys(chosen)
    elif keys.scheme is not chosen:
        raise ConfigError(f"the keys are for {keys.scheme.value}, the task asks for {chosen.value}")
    encrypted = encrypt_columns(keys, used, spec)
    bound = error_bound(spec, used)
    return PreparedHE(
        spec=spec,
        keys=keys,
        context=keys.public_context,
        columns=encrypted,
        bound=float(np.max(bound)) if np.ndim(bound) else float(bound),
        prepare_s=time.perf_counter() - started,
    )


@dataclass(frozen=True)
class Submitted:
    """A task on chain: its id, the request transaction and the committee (operators)."""

    task_id: int
    request_tx: str
    request_block: int
    committee: tuple[str, ...]
    quorum: int
    deadline: int
    request_s: float = 0.0


@dataclass(frozen=True)
class Finalized:
    """The chain's record of a finalized task."""

    task_id: int
    result_hash: bytes
    finalize_tx: str
    signers: tuple[str, ...]


@dataclass(frozen=True)
class UploadReport:
    """Which members hold the inputs, and why the others do not."""

    delivered: tuple[str, ...]
    failed: dict[str, str]
    upload_s: float


@dataclass(frozen=True)
class HEOutcome:
    """A finished HE task: the decrypted result, the transactions and where time went."""

    task_id: int
    result: int | float | Any
    bound: float
    committee: tuple[str, ...]
    signers: tuple[str, ...]
    request_tx: str
    finalize_tx: str
    result_hash: bytes
    timings_s: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` shape of ``datum task submit he --wait``."""
        result = self.result.tolist() if isinstance(self.result, np.ndarray) else self.result
        return {
            "task_id": self.task_id,
            "result": result,
            "error_bound": self.bound,
            "tx": {"request": self.request_tx, "finalize": self.finalize_tx},
            "committee": list(self.committee),
            "signers": list(self.signers),
            "result_hash": "0x" + self.result_hash.hex(),
            "timings_s": {k: round(v, 4) for k, v in self.timings_s.items()},
        }


# -- PSI -----------------------------------------------------------------------------------------


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.part")
    try:
        with temp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


class DatumClient(PsiRequester):
    """A requester: its chain key signs the request, the uploads and the result fetch."""

    def __init__(
        self,
        chain: Chain,
        contracts: DatumContracts,
        account: LocalAccount,
        *,
        nonces: NonceTracker | None = None,
        peer_timeout_s: float = 60.0,
        max_result_bytes: int = 1 << 30,
    ) -> None:
        self.chain = chain
        self.contracts = contracts
        self.account = account
        self.tx = TxManager(chain, account, nonces=nonces)
        self._p2p = P2PClient(account, timeout_s=peer_timeout_s, max_response_bytes=max_result_bytes)

    async def __aenter__(self) -> DatumClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connections to the nodes."""
        await self._p2p.close()

    # -- steps ---------------------------------------------------------------------------------

    async def request_he(
        self,
        prepared: PreparedHE,
        *,
        fee_wei: int,
        committee_size: int = 3,
        quorum: int = 2,
        timeout_s: int = 900,
    ) -> Submitted:
        """Escrow the fee and request the task; the committee comes from the receipt."""
        started = time.perf_counter()

        def run() -> Submitted:
            now = int(self.chain.raw_block("latest").get("timestamp", "0x0"), 16)
            request = TaskRequest(
                kind=tasks.TASK_KINDS["he"],
                committee_size=committee_size,
                quorum=quorum,
                deadline=now + timeout_s,
                fee_wei=fee_wei,
                spec_hash=prepared.spec.spec_hash(),
                spec_uri=spec_uri(prepared.spec),
            )
            task_id, sent = tasks.request_task(self.tx, self.chain, self.contracts, request)
            (event,) = self.contracts.events_in(self.contracts.tasks, sent.receipt, "TaskRequested")
            return Submitted(
                task_id=task_id,
                request_tx=sent.tx_hash,
                request_block=sent.block_number,
                committee=tuple(str(a) for a in event.args["committee"]),
                quorum=quorum,
                deadline=request.deadline,
                request_s=time.perf_counter() - started,
            )

        return await asyncio.to_thread(run)

    async def peers(self, committee: Sequence[str]) -> dict[str, Peer]:
        """Each member's endpoint and signing key, from the NodeRegistry."""
        infos = await asyncio.gather(
            *(asyncio.to_thread(staking.get_node, self.chain, self.contracts, op) for op in committee)
        )
        return {
            op: Peer.of_node(info, self.chain.chain_id) for op, info in zip(committee, infos, strict=True)
        }

    async def upload_inputs(
        self,
        submitted: Submitted,
        prepared: PreparedHE,
        *,
        progress: Progress | None = None,
        members: Sequence[str] | None = None,
        accept_timeout_s: float = 120.0,
        straggler_grace_s: float = 5.0,
    ) -> UploadReport:
        """Upload spec, context and columns to every member (in that order per member).

        A member gets the inputs once it has accepted the task on chain: acceptance shows it
        saw the request confirmed, so inputs never bind to a request a reorg later removes
        (a node refuses earlier uploads with 503 `not_confirmed`). A member that does not
        accept within `accept_timeout_s`, or is still pending `straggler_grace_s` after a
        quorum holds the inputs, is reported as failed. Members that refuse or cannot be
        reached are reported; `ProtocolAbort` when fewer than the quorum hold the inputs,
        with the first refusal's reason.
        """
        started = time.perf_counter()
        targets = tuple(members) if members is not None else submitted.committee
        peers = await self.peers(targets)
        total = len(targets) * len(INPUT_ORDER)
        done = 0

        async def one(operator: str) -> None:
            nonlocal done
            await self._wait_accepted(submitted.task_id, operator, accept_timeout_s)
            for name in INPUT_ORDER:
                await self._p2p.upload_blob(peers[operator], submitted.task_id, name, prepared.blob(name))
                done += 1
                if progress is not None:
                    progress("upload", done, total)

        outcomes = await _gather_until_quorum(
            [one(op) for op in targets], submitted.quorum, straggler_grace_s
        )
        delivered = tuple(op for op, out in zip(targets, outcomes, strict=True) if out is None)
        failed = {
            op: str(out) for op, out in zip(targets, outcomes, strict=True) if isinstance(out, Exception)
        }
        for out in outcomes:
            if isinstance(out, BaseException) and not isinstance(
                out, PeerError | ConnectionError | ProtocolAbort
            ):
                raise out
        if len(delivered) < submitted.quorum:
            first = next(iter(failed.values()), "no member reachable")
            raise ProtocolAbort(
                f"task {submitted.task_id}: only {len(delivered)} of {len(targets)} members took the inputs "
                f"(quorum {submitted.quorum}): {first}"
            )
        return UploadReport(delivered, failed, time.perf_counter() - started)

    async def _wait_accepted(
        self, task_id: int, operator: str, timeout_s: float, poll_s: float = 0.1
    ) -> None:
        """Return once `operator` accepted `task_id` on chain; `ProtocolAbort` after `timeout_s`."""
        limit = time.monotonic() + timeout_s
        while True:
            committee, stored = await asyncio.gather(
                asyncio.to_thread(self.chain.call, self.contracts.tasks, "getCommittee", task_id),
                asyncio.to_thread(self.chain.call, self.contracts.tasks, "getTask", task_id),
            )
            slots = [i for i, member in enumerate(committee) if str(member).lower() == operator.lower()]
            if not slots:
                raise ProtocolAbort(f"task {task_id}: {operator} is no longer in the committee")
            if int(stored[5]) >> slots[0] & 1:  # Task.acceptedMask
                return
            if time.monotonic() >= limit:
                raise ProtocolAbort(f"task {task_id}: {operator} did not accept within {timeout_s:g} s")
            await asyncio.sleep(poll_s)

    async def wait_finalized(
        self, task_id: int, *, timeout_s: float, poll_s: float = 0.2, progress: Progress | None = None
    ) -> Finalized:
        """Poll the task until it is finalized; `TaskRefunded` / `TaskExpired` otherwise.

        Each poll asks only for the block number; the task (and the chain time for the
        deadline) is read again only when a new block came: nothing else can change them, and
        the requester's process stays out of the way of engines computing on the same host."""
        started = time.monotonic()
        seen_block = -1
        while True:
            block = await asyncio.to_thread(self.chain.block_number)
            if block == seen_block:
                waited = time.monotonic() - started
                if waited > timeout_s:
                    raise TaskFailed(f"task {task_id} not finalized after {timeout_s:.0f} s")
                if progress is not None:
                    progress("wait", int(waited), int(timeout_s))
                await asyncio.sleep(poll_s)
                continue
            seen_block = block
            view = await asyncio.to_thread(tasks.get_task, self.chain, self.contracts, task_id)
            if view.state is TaskState.FINALIZED:
                history = await asyncio.to_thread(tasks.task_history, self.chain, self.contracts, task_id)
                event = next(e for e in history if e.name == "TaskFinalized")
                return Finalized(
                    task_id, view.result_hash, event.tx_hash, tuple(str(s) for s in event.args["signers"])
                )
            if view.state is TaskState.REFUNDED:
                raise TaskRefunded(f"task {task_id} was refunded: no quorum result before its deadline")
            now = int((await asyncio.to_thread(self.chain.raw_block, "latest")).get("timestamp", "0x0"), 16)
            if now > view.deadline:
                raise TaskExpired(
                    f"task {task_id} passed its deadline without a result; "
                    f"`refund({task_id})` returns the escrow"
                )
            waited = time.monotonic() - started
            if waited > timeout_s:
                raise TaskFailed(
                    f"task {task_id} not finalized after {timeout_s:.0f} s (state {view.state.name})"
                )
            if progress is not None:
                progress("wait", int(waited), int(timeout_s))
            await asyncio.sleep(poll_s)

    async def fetch_result(self, task_id: int, committee: Sequence[str], result_hash: bytes) -> bytes:
        """The result envelope from the first member that has it, checked against the chain."""
        peers = await self.peers(committee)
        reasons: list[str] = []
        for operator, peer in peers.items():
            try:
                data = await self._p2p.fetch_result(peer, task_id)
            except (PeerError, ConnectionError) as exc:
                reasons.append(f"{operator}: {exc}")
                continue
            if hashlib.sha256(data).digest() != result_hash:
                reasons.append(f"{operator}: result does not hash to the on-chain resultHash")
                continue
            return data
        raise TaskFailed(f"no member served the result of task {task_id}: " + "; ".join(reasons))

    async def run_he(
        self,
        prepared: PreparedHE,
        *,
        fee_wei: int,
        committee_size: int = 3,
        quorum: int = 2,
        timeout_s: int = 900,
        progress: Progress | None = None,
        on_submitted: Callable[[Submitted], None] | None = None,
    ) -> HEOutcome:
        """Request, upload, wait, fetch, verify and decrypt."""
        submitted = await self.request_he(
            prepared, fee_wei=fee_wei, committee_size=committee_size, quorum=quorum, timeout_s=timeout_s
        )
        if on_submitted is not None:
            on_submitted(submitted)
        upload = await self.upload_inputs(submitted, prepared, progress=progress)
        started = time.perf_counter()
        final = await self.wait_finalized(submitted.task_id, timeout_s=timeout_s, progress=progress)
        wait_s = time.perf_counter() - started
        started = time.perf_counter()
        result = await self.fetch_result(submitted.task_id, upload.delivered, final.result_hash)
        fetch_s = time.perf_counter() - started
        started = time.perf_counter()
        value = await asyncio.to_thread(decrypt, prepared.keys, result, prepared.spec)
        decrypt_s = time.perf_counter() - started
        return HEOutcome(
            task_id=submitted.task_id,
            result=value,
            bound=prepared.bound,
            committee=submitted.committee,
            signers=final.signers,
            request_tx=submitted.request_tx,
            finalize_tx=final.finalize_tx,
            result_hash=final.result_hash,
            timings_s={
                "prepare": prepared.prepare_s,
                "request": submitted.request_s,
                "upload": upload.upload_s,
                "wait_finalized": wait_s,
                "fetch": fetch_s,
                "decrypt": decrypt_s,
            },
        )


def save_task_keys(directory: Path, prepared: PreparedHE, task_id: int, chain_id: int) -> Path:
    """Keep a task's spec and owner keys (SECRET) for decrypting later; returns the folder."""
    folder = directory / f"{chain_id}-{task_id}"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    (folder / "spec.json").write_bytes(prepared.spec_json)
    keys_path = folder / "owner.keys"
    keys_path.touch(mode=0o600, exist_ok=True)
    keys_path.chmod(0o600)
    keys_path.write_bytes(prepared.keys.to_bytes())
    return folder


async def _gather_until_quorum(
    jobs: Sequence[Coroutine[Any, Any, None]], quorum: int, grace_s: float
) -> list[BaseException | None]:
    """Run `jobs`; once `quorum` of them succeeded, give the rest `grace_s` before cancelling.

    Returns, per job, None on success or the exception it ended with (a cancelled
    straggler ends with `ProtocolAbort`).
    """
    running = [asyncio.ensure_future(job) for job in jobs]
    pending: set[asyncio.Future[None]] = set(running)
    deadline: float | None = None
    while pending:
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        _, pending = await asyncio.wait(pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        succeeded = sum(1 for f in running if f.done() and not f.cancelled() and f.exception() is None)
        if deadline is None and succeeded >= quorum:
            deadline = time.monotonic() + grace_s
        if deadline is not None and time.monotonic() >= deadline:
            for f in pending:
                f.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            break
    outcomes: list[BaseException | None] = []
    for f in running:
        if f.cancelled():
            outcomes.append(ProtocolAbort(f"still pending {grace_s:g} s after a quorum took the inputs"))
        else:
            outcomes.append(f.exception())
    return outcomes
