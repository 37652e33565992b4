"""The requester's side of a PSI task (kind 2) against a dataset served by its owner's node
(docs/PSI_NETWORK.md): `prepare_psi` checks the requester's file and builds the spec;
`PsiRequester` (mixed into `oracle.client.DatumClient`) requests the task, runs the session
with the provider's node, waits for the committee and writes ``--out``.

What the output holds depends on the spec (`PsiTaskSpec.mode`):

* ``reveal=me`` / ``both``: the requester's own matching rows (its CSV header first);
* ``reveal=size``: one line ``intersection_size`` and the number, no row;
* labeled PSI: the requester's matching rows with the provider's label columns appended.
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eth_account.signers.local import LocalAccount
from web3.exceptions import ContractLogicError

from compute.errors import ConfigError, ProtocolAbort, SpecError
from compute.psi import (
    DuplicateRule,
    LabeledResult,
    LabelTable,
    LinkConfig,
    PartyData,
    PsiResult,
    Role,
    Table,
    index_keys,
    run_labeled,
)
from compute.psi import run_psi as run_psi_engine

from .chain import staking, tasks
from .chain.contracts import DatumContracts
from .chain.rpc import Chain, revert_data
from .chain.tasks import TaskRequest
from .chain.txmanager import TxManager
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

if TYPE_CHECKING:
    from .client import Finalized, Progress, Submitted

__all__ = [
    "PSIOutcome",
    "PreparedPSI",
    "PsiRequester",
    "PsiSession",
    "prepare_psi",
    "revealed",
    "save_psi_record",
    "table_cache_path",
]

DEFAULT_LABEL_BYTES = 64


@dataclass(frozen=True)
class PreparedPSI:
    """The requester's side of a PSI task before it is requested: the spec and its own table."""

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
    labels: Sequence[str] = (),
    label_bytes: int = DEFAULT_LABEL_BYTES,
) -> PreparedPSI:
    """Build the spec and check the requester's own CSV against it, before anything is paid.

    `SpecError` for a combination the network does not serve (see `PsiTaskSpec.build`).
    """
    names = tuple(labels)

    def build(query_keys: int) -> PsiTaskSpec:
        return PsiTaskSpec.build(
            dataset_id=dataset_id,
            protocol=protocol,
            reveal=reveal,
            case=case,
            empty=empty,
            duplicates=duplicates,
            labels=names,
            label_bytes=label_bytes if names else 0,
            query_keys=query_keys,
        )

    spec = build(0)  # refuses an unserved combination before the file is read
    table = parse_csv_table(data.encode() if isinstance(data, str) else data)
    rules = spec.key_rules()
    if names:  # every requester row with a matching key gets the labels; each key is queried once
        rules = replace(rules, duplicates=DuplicateRule.ALL)
    keyed = index_keys(table, (key,), rules)
    if names:
        spec = build(len(keyed))  # max_query_keys: the query size rounded up to a batch
    return PreparedPSI(spec=spec, table=table, key=key, distinct_keys=len(keyed))


def revealed(spec: PsiTaskSpec) -> dict[str, str]:
    """Who learned what in a task of this spec (the ``revealed`` part of the JSON output)."""
    if spec.labeled:
        return {
            "mode": spec.mode,
            "requester": f"its matching rows with the provider's columns {', '.join(spec.labels)}",
            "provider": "the requester's query size",
        }
    if spec.reveal == "size":
        return {
            "mode": spec.mode,
            "requester": "the intersection size only",
            "provider": "the requester's set size",
        }
    if spec.reveal == "both":
        return {
            "mode": spec.mode,
            "requester": "its own matching rows",
            "provider": "its own matching rows (in its node's dataset folder, results/)",
        }
    size = "the requester's set size" + (" rounded up to the HE batch" if spec.protocol == "he" else "")
    return {"mode": spec.mode, "requester": "its own matching rows", "provider": size}


@dataclass(frozen=True)
class PsiSession:
    """The requester's side of a finished PSI session: its result file (in memory) and receipt.

    `salt` opens the receipt's commitment; `result` is written to the output only once the
    task is finalized with this receipt's attestation. `matches` is the number of distinct
    matching keys (with ``reveal=size`` the intersection size), `rows` the rows written.
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
    """A finished PSI task: where the result was written, the transactions, the proof."""

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
    revealed: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` shape of ``datum task submit psi --wait``."""
        return {
            "task_id": self.task_id,
            "result": {"matches": self.matches, "rows": self.rows, "out": str(self.out)},
            "revealed": dict(self.revealed),
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


def _labeled_csv(prepared: PreparedPSI, result: LabeledResult) -> tuple[bytes, int]:
    """The requester's matching rows with the label columns appended; distinct keys matched."""
    header = list(prepared.table.columns)
    for name in result.label_columns:
        header.append(name if name not in prepared.table.columns else f"provider.{name}")
    rows = [prepared.table.rows[m.row_index] + m.labels for m in result.matches]
    keyed = index_keys(
        prepared.table, (prepared.key,), replace(prepared.spec.key_rules(), duplicates=DuplicateRule.ALL)
    )
    group = {row: k for k, rows_of in enumerate(keyed.row_groups) for row in rows_of}
    return _result_csv(header, rows), len({group[m.row_index] for m in result.matches})


def _session_output(prepared: PreparedPSI, result: PsiResult | LabeledResult) -> tuple[bytes, int, int]:
    """(file bytes, matches, rows written) for what this spec reveals to the requester."""
    if isinstance(result, LabeledResult):
        data, matches = _labeled_csv(prepared, result)
        return data, matches, len(result.matches)
    if prepared.spec.reveal == "size":
        size = int(result.intersection_size or 0)
        return f"intersection_size\n{size}\n".encode(), size, 0
    return (
        _result_csv(prepared.table.columns, result.rows),
        int(result.intersection_size or 0),
        len(result.rows),
    )


def table_cache_path(directory: Path, chain_id: int, spec: PsiTaskSpec) -> Path:
    """Where the requester keeps a dataset's DH label table between queries (per label set)."""
    labels = hashlib.sha256(json.dumps([list(spec.labels), spec.label_bytes]).encode()).hexdigest()[:16]
    return directory / f"{chain_id}-{spec.dataset_id}-{labels}.table"


def _write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically, the file 0600 from its creation, its folder 0700."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.part")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def _cached_table(path: Path | None) -> LabelTable | None:
    if path is None or not path.is_file():
        return None
    try:
        return LabelTable.from_bytes(path.read_bytes())
    except (OSError, ProtocolAbort):
        return None  # unreadable: the provider sends the table again


def _run_engine(
    prepared: PreparedPSI, link: LinkConfig, scratch: Path, table_path: Path | None
) -> PsiResult | LabeledResult:
    """The requester's engine (rank 0) for the spec's mode; blocking. Labeled DH passes the
    table cached at `table_path` (the provider then sends it only if its key changed) and
    stores the current one there (0600)."""
    data = PartyData(prepared.table, (prepared.key,))
    if prepared.spec.labeled:
        cached = _cached_table(table_path)
        result = run_labeled(
            prepared.spec.labeled_spec(),
            role=Role.REQUESTER,
            transport=link,
            data=data,
            cached_table=cached,
            work_dir=scratch,
        )
        assert isinstance(result, LabeledResult)
        if table_path is not None and result.table is not None and result.table != cached:
            _write_private(table_path, result.table.to_bytes())
        return result
    return run_psi_engine(prepared.spec.engine_spec(), data=data, link=link, work_dir=scratch)


class PsiRequester:
    """The PSI steps of `DatumClient` (which provides the chain, accounts and p2p client)."""

    chain: Chain
    contracts: DatumContracts
    account: LocalAccount
    tx: TxManager
    _p2p: P2PClient

    if TYPE_CHECKING:

        async def wait_finalized(
            self, task_id: int, *, timeout_s: float, poll_s: float = 0.2, progress: Progress | None = None
        ) -> Finalized: ...

        async def fetch_result(self, task_id: int, committee: Sequence[str], result_hash: bytes) -> bytes: ...

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
            return _client.Submitted(
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

        `ProtocolAbort` with the node's reason when it refuses (consent, row count, label
        columns, ...).
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
        table_cache: Path | None = None,
    ) -> PsiSession:
        """Offer, run the requester's side over the SPU link, commit to the result and send the
        signed receipt to the provider's node. Nothing is written to disk but the engine's
        private run directory (removed)."""
        started = time.perf_counter()
        provider, link = await self.offer_psi_session(submitted, prepared, link_host=link_host)
        scratch = Path(tempfile.mkdtemp(prefix="datum-psi-", dir=work_dir))
        try:
            table_path = None
            if table_cache is not None and prepared.spec.labeled and prepared.spec.protocol == "ecdh":
                table_path = table_cache_path(table_cache, self.chain.chain_id, prepared.spec)
            result = await asyncio.to_thread(_run_engine, prepared, link, scratch, table_path)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        data, matches, rows = _session_output(prepared, result)
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
            matches=matches,
            rows=rows,
            session_s=time.perf_counter() - started,
        )

    async def check_psi_result(self, final: Finalized, committee: Sequence[str], session: PsiSession) -> None:
        """The finalized attestation is the one over this session's receipt (else `TaskFailed`)."""
        data = await self.fetch_result(final.task_id, committee, final.result_hash)
        try:
            attestation = parse_message(PsiAttestation, data, "the attestation")
        except SpecError as exc:
            raise _client.TaskFailed(f"task {final.task_id}: {exc}") from None
        if attestation.receipt != session.receipt:
            raise _client.TaskFailed(
                f"task {final.task_id} was finalized over another receipt than this requester's"
            )

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
        table_cache: Path | None = None,
        progress: Progress | None = None,
        on_submitted: Callable[[Submitted], None] | None = None,
    ) -> PSIOutcome:
        """Request, run the session, wait for the quorum, check the attestation, write `out`.

        `out` is written (atomically) only once the task is finalized over this requester's
        receipt; an abort leaves nothing behind. `table_cache`: a folder where labeled DH keeps
        the provider's encrypted table between queries (then sent again only after a key change).
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
            session = await self.run_psi_session(
                submitted, prepared, link_host=link_host, table_cache=table_cache
            )
            if progress is not None:
                progress("session", 1, 1)
            started = time.perf_counter()
            final = await self.wait_finalized(submitted.task_id, timeout_s=timeout_s, progress=progress)
            wait_s = time.perf_counter() - started
            await self.check_psi_result(final, submitted.committee, session)
        except (ProtocolAbort, _client.TaskFailed, PeerError, SpecError, ConfigError) as exc:
            raise _client.TaskFailed(
                f"task {submitted.task_id} aborted, nothing written to {out}: {exc}; after its deadline "
                f"({submitted.deadline}) refund({submitted.task_id}) returns the escrow"
            ) from exc
        await asyncio.to_thread(_client._write_atomically, out, session.result)
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
            revealed=revealed(prepared.spec),
        )


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


# Last, so either module can be imported first: `oracle.client` defines `DatumClient` on top of
# `PsiRequester` and the shared task types (`Submitted`, `Finalized`, `TaskFailed`) used above.
from . import client as _client  # noqa: E402
