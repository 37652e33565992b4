"""The requester SDK: post an HE outsourcing task, hand its inputs to the committee, wait
for the quorum-signed result on chain, fetch it and decrypt it; or run a PSI task against a
dataset served by its owner's node (`prepare_psi`, `DatumClient.run_psi`;
docs/PSI_NETWORK.md).

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
import json
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from eth_account.signers.local import LocalAccount
from web3.exceptions import ContractLogicError

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
from compute.psi import LinkConfig, PartyData, Table, index_keys
from compute.psi import run_psi as run_psi_engine

from .chain import staking, tasks
from .chain.contracts import DatumContracts
from .chain.rpc import Chain, revert_data
from .chain.tasks import TaskRequest, TaskState
from .chain.txmanager import NonceTracker, TxManager
from .node.psi_attest import PsiAttestation, PsiReceipt, result_commitment, sign_receipt
from .node.psi_datasets import parse_csv_table
from .node.psi_spec import (
    ANSWER_BLOB,
    OFFER_BLOB,
    PSI_KIND,
    RECEIPT_BLOB,
    REQUESTER_RANK,
    SPEC_BLOB,
    PsiTaskSpec,
    SessionAnswer,
    SessionOffer,
    free_port,
    link_config,
    new_session_id,
    parse_message,
)
from .node.psi_spec import spec_uri as psi_spec_uri
from .p2p import P2PClient, Peer, PeerError, PeerRejected
from .p2p.routes import HEADER_UPLOADER

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


@dataclass(frozen=True)
class PreparedPSI:
    """A PSI task ready to post: the spec and the requester's own table (it never leaves)."""

    spec: PsiTaskSpec
    table: Table = field(repr=False)
    key: str
    distinct_keys: int

    @property
    def spec_json(self) -> bytes:
        """The canonical spec bytes (their sha256 is the on-chain specHash)."""
        return self.spec.canonical_json()


def prepare_psi(
    data: bytes | str,
    key: str,
    dataset_id: int,
    protocol: str,
    reveal: str,
    *,
    case: str = "exact",
    empty: str = "reject",
    duplicates: str = "all",
) -> PreparedPSI:
    """Build the spec and check the requester's own CSV against it, before anything is paid."""
    spec = PsiTaskSpec.build(
        dataset_id=dataset_id, protocol=protocol, reveal=reveal, case=case, empty=empty, duplicates=duplicates
    )
    table = parse_csv_table(data.encode() if isinstance(data, str) else data)
    keyed = index_keys(table, (key,), spec.key_rules())
    return PreparedPSI(spec=spec, table=table, key=key, distinct_keys=len(keyed))


@dataclass(frozen=True)
class PsiSession:
    """The requester's side of a finished PSI session: its result file (in memory) and receipt.

    `salt` opens the receipt's commitment; `result` is written to the output only once the
    task is finalized with this receipt's attestation.
    """

    session_id: str
    receipt: PsiReceipt
    result: bytes = field(repr=False)
    salt: bytes = field(repr=False)
    matches: int
    rows: int
    session_s: float = 0.0


@dataclass(frozen=True)
class PSIOutcome:
    """A finished PSI task: where the matching rows were written, the transactions, the proof."""

    task_id: int
    matches: int
    rows: int
    out: Path
    committee: tuple[str, ...]
    signers: tuple[str, ...]
    request_tx: str
    finalize_tx: str
    result_hash: bytes
    session_id: str
    result_commitment: str
    salt: bytes = field(repr=False)
    timings_s: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` shape of ``datum task submit psi --wait``."""
        return {
            "task_id": self.task_id,
            "result": {"matches": self.matches, "rows": self.rows, "out": str(self.out)},
            "tx": {"request": self.request_tx, "finalize": self.finalize_tx},
            "committee": list(self.committee),
            "signers": list(self.signers),
            "result_hash": "0x" + self.result_hash.hex(),
            "result_commitment": self.result_commitment,
            "session_id": self.session_id,
            "timings_s": {k: round(v, 4) for k, v in self.timings_s.items()},
        }


def _result_csv(header: Sequence[str], rows: Sequence[Sequence[str]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode()


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


class DatumClient:
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
        """Poll the task until it is finalized; `TaskRefunded` / `TaskExpired` otherwise."""
        started = time.monotonic()
        while True:
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

    # -- PSI -----------------------------------------------------------------------------------

    async def request_psi(
        self,
        prepared: PreparedPSI,
        *,
        fee_wei: int,
        committee_size: int = 3,
        quorum: int = 2,
        timeout_s: int = 900,
    ) -> Submitted:
        """Request the PSI task: a consent refusal reverts here (decoded), before any transaction."""
        started = time.perf_counter()

        def run() -> Submitted:
            now = int(self.chain.raw_block("latest").get("timestamp", "0x0"), 16)
            request = TaskRequest(
                kind=PSI_KIND,
                committee_size=committee_size,
                quorum=quorum,
                deadline=now + timeout_s,
                fee_wei=fee_wei,
                spec_hash=prepared.spec.spec_hash(),
                spec_uri=psi_spec_uri(prepared.spec.spec_hash()),
                dataset_ids=(prepared.spec.dataset_id,),
            )
            self._preflight(request)
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

    def _preflight(self, request: TaskRequest) -> None:
        """Simulate requestTask: consent and request errors surface before the escrow approval.

        The token's allowance errors are expected here (the approval comes next) and ignored.
        """
        call = self.contracts.tasks.get_function_by_name("requestTask")(request.as_tuple())
        try:
            self.chain.rpc(lambda: call.call({"from": self.account.address}), "requestTask() preflight")
        except ContractLogicError as exc:
            error = self.chain.errors.decode(revert_data(exc))
            if not error.name.startswith("ERC20"):
                raise error from None

    async def psi_provider(self, dataset_id: int) -> Peer:
        """The node serving `dataset_id`: the NodeRegistry node of the dataset's owner."""

        def run() -> Peer:
            owner = str(self.chain.call(self.contracts.data, "getAsset", dataset_id)[0])
            node = staking.get_node(self.chain, self.contracts, owner)
            if not node.registered:
                raise ConfigError(f"dataset {dataset_id}'s owner {owner} runs no registered node to serve it")
            return Peer.of_node(node, self.chain.chain_id)

        return await asyncio.to_thread(run)

    async def offer_psi_session(
        self, submitted: Submitted, prepared: PreparedPSI, *, link_host: str = "127.0.0.1"
    ) -> tuple[Peer, LinkConfig]:
        """Hand the spec and the session offer to the provider's node; returns its link config.

        `ProtocolAbort` with the node's reason when it refuses (consent, row count, ...).
        """
        task_id = submitted.task_id
        provider = await self.psi_provider(prepared.spec.dataset_id)
        try:
            port = free_port(link_host)
        except OSError as exc:
            raise ConfigError(
                f"cannot listen for the PSI link on {link_host}: {exc.strerror or exc}"
            ) from None
        offer = SessionOffer(session_id=new_session_id(task_id), requester_link=f"{link_host}:{port}")
        try:
            await self._p2p.upload_blob(provider, task_id, SPEC_BLOB, prepared.spec_json)
            await self._p2p.upload_blob(provider, task_id, OFFER_BLOB, offer.model_dump_json().encode())
        except PeerRejected as exc:
            raise ProtocolAbort(f"task {task_id}: the provider's node refused the session: {exc}") from None
        answer_response = await self._p2p.get(provider, f"/v1/tasks/{task_id}/blobs/{ANSWER_BLOB}")
        uploader = answer_response.headers.get(HEADER_UPLOADER, "")
        if uploader.lower() != provider.audience.address.lower():
            raise ProtocolAbort(f"task {task_id}: the session answer was not written by the provider's node")
        answer = parse_message(SessionAnswer, answer_response.body, "the session answer")
        now = int((await asyncio.to_thread(self.chain.raw_block, "latest")).get("timestamp", "0x0"), 16)
        return provider, link_config(
            prepared.spec, REQUESTER_RANK, offer, answer, float(submitted.deadline - now)
        )

    async def run_psi_session(
        self,
        submitted: Submitted,
        prepared: PreparedPSI,
        *,
        link_host: str = "127.0.0.1",
        work_dir: Path | None = None,
    ) -> PsiSession:
        """Offer, run the receiver's side over the SPU link, commit to the result and send the
        signed receipt to the provider's node. Nothing is written to disk but the engine's
        private run directory (removed)."""
        started = time.perf_counter()
        provider, link = await self.offer_psi_session(submitted, prepared, link_host=link_host)
        scratch = Path(tempfile.mkdtemp(prefix="datum-psi-", dir=work_dir))
        try:
            result = await asyncio.to_thread(
                run_psi_engine,
                prepared.spec.engine_spec(),
                data=PartyData(prepared.table, (prepared.key,)),
                link=link,
                work_dir=scratch,
            )
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        data = _result_csv(prepared.table.columns, result.rows)
        salt = secrets.token_bytes(32)
        receipt = sign_receipt(
            self.account,
            chain_id=self.chain.chain_id,
            task_manager=str(self.contracts.tasks.address),
            task_id=submitted.task_id,
            spec_hash=prepared.spec.spec_hash(),
            session_id=link.session_id,
            dataset_id=prepared.spec.dataset_id,
            commitment=result_commitment(salt, data),
        )
        try:
            await self._p2p.upload_blob(provider, submitted.task_id, RECEIPT_BLOB, receipt.to_bytes())
        except PeerRejected as exc:
            raise ProtocolAbort(f"task {submitted.task_id}: the provider did not attest: {exc}") from None
        return PsiSession(
            session_id=link.session_id,
            receipt=receipt,
            result=data,
            salt=salt,
            matches=int(result.intersection_size or 0),
            rows=len(result.rows),
            session_s=time.perf_counter() - started,
        )

    async def check_psi_result(self, final: Finalized, committee: Sequence[str], session: PsiSession) -> None:
        """The finalized attestation is the one over this session's receipt (else `TaskFailed`)."""
        data = await self.fetch_result(final.task_id, committee, final.result_hash)
        try:
            attestation = parse_message(PsiAttestation, data, "the attestation")
        except SpecError as exc:
            raise TaskFailed(f"task {final.task_id}: {exc}") from None
        if attestation.receipt != session.receipt:
            raise TaskFailed(f"task {final.task_id} was finalized over another receipt than this requester's")

    async def run_psi(
        self,
        prepared: PreparedPSI,
        *,
        out: Path,
        fee_wei: int,
        committee_size: int = 3,
        quorum: int = 2,
        timeout_s: int = 900,
        link_host: str = "127.0.0.1",
        progress: Progress | None = None,
        on_submitted: Callable[[Submitted], None] | None = None,
    ) -> PSIOutcome:
        """Request, run the session, wait for the quorum, check the attestation, write `out`.

        `out` is written (atomically) only once the task is finalized over this requester's
        receipt; an abort leaves nothing behind.
        """
        try:
            free_port(link_host)  # fail before paying when the link cannot listen there
        except OSError as exc:
            raise ConfigError(
                f"cannot listen for the PSI link on {link_host}: {exc.strerror or exc}"
            ) from None
        submitted = await self.request_psi(
            prepared, fee_wei=fee_wei, committee_size=committee_size, quorum=quorum, timeout_s=timeout_s
        )
        if on_submitted is not None:
            on_submitted(submitted)
        if progress is not None:
            progress("session", 0, 1)
        try:
            session = await self.run_psi_session(submitted, prepared, link_host=link_host)
            if progress is not None:
                progress("session", 1, 1)
            started = time.perf_counter()
            final = await self.wait_finalized(submitted.task_id, timeout_s=timeout_s, progress=progress)
            wait_s = time.perf_counter() - started
            await self.check_psi_result(final, submitted.committee, session)
        except (ProtocolAbort, TaskFailed, PeerError, SpecError, ConfigError) as exc:
            raise TaskFailed(
                f"task {submitted.task_id} aborted, nothing written to {out}: {exc}; after its deadline "
                f"({submitted.deadline}) refund({submitted.task_id}) returns the escrow"
            ) from exc
        await asyncio.to_thread(_write_atomically, out, session.result)
        return PSIOutcome(
            task_id=submitted.task_id,
            matches=session.matches,
            rows=session.rows,
            out=out,
            committee=submitted.committee,
            signers=final.signers,
            request_tx=submitted.request_tx,
            finalize_tx=final.finalize_tx,
            result_hash=final.result_hash,
            session_id=session.session_id,
            result_commitment=session.receipt.result_commitment,
            salt=session.salt,
            timings_s={
                "request": submitted.request_s,
                "session": session.session_s,
                "wait_finalized": wait_s,
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


def save_psi_record(directory: Path, outcome: PSIOutcome, chain_id: int) -> Path:
    """Keep the salt that opens a PSI task's result commitment (mode 0600); returns the file."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / f"{chain_id}-{outcome.task_id}.json"
    record = {
        "task_id": outcome.task_id,
        "chain_id": chain_id,
        "session_id": outcome.session_id,
        "out": str(outcome.out.resolve()),
        "result_commitment": outcome.result_commitment,
        "salt": "0x" + outcome.salt.hex(),
        "result_hash": "0x" + outcome.result_hash.hex(),
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(record, indent=2) + "\n")
    return path


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
