"""The node's PSI roles in one process, on the production path: the p2p handlers (`PsiApi`)
behind a real blob store, the provider (`PsiProvider`) running its side in a real SPU engine
process against a requester's `run_psi`, the committee's check of the attestation and its
steps to a result hash. The chain is a stand-in holding one task and its datasets."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from eth_account import Account

from compute.psi import PartyData, index_keys, run_psi
from oracle.chain.datasets import describe_csv
from oracle.chain.signer import ResultDomain
from oracle.chain.staking import NodeInfo
from oracle.chain.tasks import TaskState, TaskView
from oracle.node.config import NodeConfig
from oracle.node.context import NodeContext
from oracle.node.psi_api import PsiApi
from oracle.node.psi_attest import countersign, result_commitment, sign_receipt, verify_attestation
from oracle.node.psi_chain import attestation_facts
from oracle.node.psi_datasets import parse_csv_table, store_dataset
from oracle.node.psi_provider import PsiProvider
from oracle.node.psi_spec import (
    ANSWER_BLOB,
    PsiTaskSpec,
    SessionAnswer,
    SessionOffer,
    free_port,
    link_config,
    new_session_id,
)
from oracle.node.psi_steps import PsiCommitteeSteps
from oracle.node.psi_store import SessionState
from oracle.node.store import NodeTaskState, TaskRecord, TaskStore
from oracle.p2p import BlobStore, Caller, NodeStanding, StoredBlob
from oracle.p2p.errors import ApiError

REQUESTER = Account.from_key("0x" + "11" * 32)
OWNER = Account.from_key("0x" + "22" * 32)  # the dataset owner; its node signs with this key too
STRANGER = Account.from_key("0x" + "44" * 32)
MEMBERS = ("0x" + "a1" * 20, OWNER.address, "0x" + "a3" * 20)
TASK_MANAGER = "0x" + "ab" * 20
CHAIN_ID = 31337
NOW = 1_000_000
PSI_BIT = 1 << 2

BANK = [f"bank-{i:04d}-{(i * 7919) % 10007:05d}" for i in range(300)]
OWN = [f"vend-{i:04d}-{(i * 104729) % 10007:05d}" for i in range(120)]
SHARED = BANK[::5][:50]
VENDOR = OWN[:60] + SHARED + OWN[60:]
NOT_MATCHING = [k for k in VENDOR if k not in set(BANK)]

pytestmark = pytest.mark.asyncio


def _csv(header: str, rows: list[str]) -> bytes:
    return (header + "\n" + "".join(r + "\n" for r in rows)).encode()


@dataclass
class FakeChain:
    """`getAsset` and `isRequesterAllowed` of a DataRegistry."""

    assets: dict[int, tuple[Any, ...]] = field(default_factory=dict)
    listed: set[tuple[int, str]] = field(default_factory=set)

    def call(self, contract: Any, fn: str, *args: Any, block: Any = "latest") -> Any:
        if fn == "getAsset":
            return self.assets[args[0]]
        if fn == "isRequesterAllowed":
            return (args[0], str(args[1]).lower()) in self.listed
        raise AssertionError(fn)


class Contracts:
    data = "DataRegistry"

    class tasks:  # noqa: N801 - shaped like web3's contract object
        address = TASK_MANAGER


class FakeOps:
    """The parts of `ChainOps` the PSI roles use."""

    def __init__(self) -> None:
        self.chain = FakeChain()
        self.contracts = Contracts()
        self.views: dict[int, TaskView] = {}
        self.now = NOW

    async def task(self, task_id: int) -> TaskView:
        return self.views[task_id]

    async def chain_time(self) -> int:
        return self.now

    async def node(self, operator: str) -> NodeInfo:
        index = MEMBERS.index(operator) + 1 if operator in MEMBERS else 0
        return NodeInfo(operator, operator, index, 0, 0, 0, 0, f"http://127.0.0.1:{9000 + index}")


@dataclass
class FakeClient:
    uploads: list[tuple[str, int, str, bytes]] = field(default_factory=list)

    async def upload_blob(self, peer: Any, task_id: int, name: str, content: bytes) -> None:
        self.uploads.append((peer.audience.address, task_id, name, content))


class FakeHeApi:
    """The HE handlers: records what was delegated."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def stop_accepting(self) -> None:
        self.calls.append("stop")

    async def blob_received(self, blob: StoredBlob, caller: Caller) -> None:
        self.calls.append(f"blob:{blob.name}")


@dataclass
class Node:
    ctx: NodeContext
    ops: FakeOps
    api: PsiApi
    provider: PsiProvider
    blobs: BlobStore
    client: FakeClient
    background: list[asyncio.Task[None]]
    kicks: list[int]
    he: FakeHeApi
    data_dir: Path
    spec: PsiTaskSpec
    metadata_hash: bytes

    async def put(self, task_id: int, name: str, content: bytes, sender: Any) -> StoredBlob:
        async def chunks() -> AsyncIterator[bytes]:
            yield content

        caller = Caller(sender.address, NodeStanding(sender.address, None, 0, 1))
        blob, _ = await self.blobs.receive(
            task_id,
            name,
            chunks(),
            expected_sha256=hashlib.sha256(content).hexdigest(),
            max_bytes=1 << 20,
            uploader=sender.address,
            accept=lambda b: self.api.blob_received(b, caller),
        )
        return blob

    async def refused(self, task_id: int, name: str, content: bytes, sender: Any = REQUESTER) -> ApiError:
        with pytest.raises(ApiError) as exc:
            await self.put(task_id, name, content, sender)
        assert self.blobs.get(task_id, name) is None  # a refused upload is removed
        return exc.value

    def task(self, task_id: int, **changes: Any) -> TaskView:
        view = TaskView(
            task_id=task_id,
            requester=REQUESTER.address,
            state=TaskState.ACTIVE,
            kind=2,
            committee_size=3,
            quorum=2,
            accepted_mask=7,
            slashed_mask=0,
            deadline=NOW + 900,
            accept_deadline=NOW + 300,
            fee_wei=10**18,
            data_fee_wei=5 * 10**18,
            spec_hash=self.spec.spec_hash(),
            result_hash=b"\x00" * 32,
            public_output_hash=b"\x00" * 32,
            committee=MEMBERS,
            dataset_ids=(4,),
        )
        view = replace(view, **changes)
        self.ops.views[task_id] = view
        return view

    def asset(
        self, *, kinds: int = PSI_BIT, open_: bool = True, revoked: bool = False, expires: int = 0
    ) -> None:
        policy = (kinds, open_, expires, 2**32 - 1, 10)
        self.ops.chain.assets[4] = (
            OWNER.address,
            5 * 10**18,
            False,
            revoked,
            len(BANK),
            self.metadata_hash,
            policy,
            "",
        )


@pytest_asyncio.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    source = tmp_path / "bank.csv"
    source.write_bytes(_csv("client_id,income_class", [f"{k},high" for k in BANK]))
    meta = describe_csv(source, "client_id")
    data_dir = tmp_path / "provider"
    store_dataset(
        data_dir,
        chain_id=CHAIN_ID,
        dataset_id=4,
        source=source,
        key="client_id",
        salt=meta.salt,
        document=meta.document(),
    )
    config = NodeConfig.model_validate(
        {
            "private_key": "0x" + "22" * 32,
            "rpc_url": "http://127.0.0.1:1",
            "deployment": str(tmp_path / "deployment.json"),
            "data_dir": str(data_dir),
            "listen_port": 9002,
            "confirmations": 0,
        }
    )
    ops = FakeOps()
    kicks: list[int] = []
    store = TaskStore(data_dir / "node.sqlite3")
    ctx = NodeContext(
        config=config,
        account=OWNER,
        operator=OWNER.address,
        chain_id=CHAIN_ID,
        ops=ops,  # type: ignore[arg-type]
        store=store,
        domain=ResultDomain(CHAIN_ID, TASK_MANAGER),
        kick=lambda task_id, delay: kicks.append(task_id),
    )
    provider = PsiProvider(ctx)
    blobs = BlobStore(data_dir / "p2p" / "blobs")
    client = FakeClient()
    background: list[asyncio.Task[None]] = []

    def spawn(work: Awaitable[None], name: str) -> None:
        background.append(asyncio.ensure_future(work))

    provider.bind(blobs, client, spawn)  # type: ignore[arg-type]
    he = FakeHeApi()
    api = PsiApi(ctx, he, provider)  # type: ignore[arg-type]
    spec = PsiTaskSpec.build(dataset_id=4, protocol="ecdh", reveal="me")
    out = Node(
        ctx, ops, api, provider, blobs, client, background, kicks, he, data_dir, spec, meta.metadata_hash
    )
    out.asset()
    yield out
    for task in background:
        if not task.done():
            await asyncio.wait_for(task, 60)
    provider.close()
    store.close()


def _offer(task_id: int, port: int | None = None) -> SessionOffer:
    return SessionOffer(
        session_id=new_session_id(task_id), requester_link=f"127.0.0.1:{port or free_port('127.0.0.1')}"
    )


async def test_a_whole_session_gives_the_requester_the_intersection_and_the_committee_an_attestation(
    node: Node, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    view = node.task(9)
    await node.put(9, "spec", node.spec.canonical_json(), REQUESTER)
    offer = _offer(9)
    await node.put(9, "psi-offer", offer.model_dump_json().encode(), REQUESTER)
    published = node.blobs.get(9, ANSWER_BLOB)
    assert published is not None and published.uploader == OWNER.address
    answer = SessionAnswer.model_validate_json(published.path.read_bytes())
    session = node.provider.sessions.get(9)
    assert (
        session is not None and session.state is SessionState.RUNNING and session.provider_rows == len(BANK)
    )

    # the requester's side, over the real link
    mine = parse_csv_table(_csv("client_id,car", [f"{k},m{i}" for i, k in enumerate(VENDOR)]))
    work = tmp_path / "requester"
    work.mkdir()
    link = link_config(node.spec, 0, offer, answer, 120.0)
    result = await asyncio.to_thread(
        run_psi, node.spec.engine_spec(), data=PartyData(mine, ("client_id",)), link=link, work_dir=work
    )
    assert [row[0] for row in result.rows] == [k for k in VENDOR if k in set(BANK)]
    assert result.intersection_size == len(SHARED)

    # the receipt is countersigned once the provider's engine finished; every member gets it
    commitment = result_commitment(b"\x05" * 32, repr(result.rows).encode())
    receipt = sign_receipt(
        REQUESTER,
        chain_id=CHAIN_ID,
        task_manager=TASK_MANAGER,
        task_id=9,
        spec_hash=node.spec.spec_hash(),
        session_id=offer.session_id,
        dataset_id=4,
        commitment=commitment,
    )
    await node.put(9, "psi-receipt", receipt.to_bytes(), REQUESTER)
    for task in node.background:
        await asyncio.wait_for(task, 30)
    session = node.provider.sessions.get(9)
    assert session is not None and session.state is SessionState.ATTESTED
    assert sorted(u[0] for u in node.client.uploads) == sorted(MEMBERS)
    (payload,) = {u[3] for u in node.client.uploads}
    assert all(u[1:3] == (9, "psi-attestation") for u in node.client.uploads)
    facts = await attestation_facts(node.ops, CHAIN_ID, view)  # type: ignore[arg-type]
    attestation = verify_attestation(payload, facts)
    assert attestation.receipt == receipt and attestation.provider_rows == len(BANK)
    assert session.attestation_sha256 == hashlib.sha256(payload).hexdigest()

    # this node is also a member: the attestation is checked, kept, and becomes the result
    await node.put(9, "psi-attestation", payload, OWNER)
    assert 9 in node.kicks
    node.ctx.store.insert(TaskRecord(task_id=9, state=NodeTaskState.ACCEPTED, kind=2, committee=MEMBERS))
    steps = PsiCommitteeSteps(node.ctx).actions()
    record = node.ctx.store.get(9)
    assert record is not None and await steps[NodeTaskState.ACCEPTED](record)
    record = node.ctx.store.get(9)
    assert record is not None and record.state is NodeTaskState.INPUTS_READY
    assert await steps[NodeTaskState.INPUTS_READY](record)
    record = node.ctx.store.get(9)
    assert record is not None and record.state is NodeTaskState.COMPUTED
    assert record.result_hash == "0x" + hashlib.sha256(payload).hexdigest()
    assert Path(record.result_path).read_bytes() == payload

    # what the provider kept and logged: no key of the requester's that it does not hold
    assert list((node.data_dir / "psi" / "work").iterdir()) == []  # the engine's run dir is gone
    digests = index_keys(mine, ("client_id",), node.spec.key_rules()).digests
    secret_digests = [d for d, k in zip(digests, VENDOR, strict=True) if k in set(NOT_MATCHING)]
    files = [p.read_bytes() for p in node.data_dir.rglob("*") if p.is_file()]
    for blob in files + [caplog.text.encode()]:
        for key, digest in zip(NOT_MATCHING, secret_digests, strict=True):
            assert key.encode() not in blob and digest not in blob and digest.hex().encode() not in blob


async def test_the_provider_refuses_before_feeding_a_key_and_says_why(node: Node) -> None:
    spec = node.spec.canonical_json()

    async def offer_code(task_id: int, sender: Any = REQUESTER) -> tuple[int, str]:
        err = await node.refused(task_id, "psi-offer", _offer(task_id).model_dump_json().encode(), sender)
        return err.status, err.code

    node.task(10)
    assert await offer_code(10) == (409, "spec_first")  # and no session is recorded for it
    assert node.provider.sessions.get(10) is None
    bad = await node.refused(10, "spec", spec.replace(b"ecdh", b"kkrt"))
    assert (bad.status, bad.code) == (400, "spec_mismatch")
    await node.put(10, "spec", spec, REQUESTER)
    assert await offer_code(10, STRANGER) == (403, "not_requester")

    cases = [
        ({"kinds": 1 << 1}, "does not allow psi"),
        ({"revoked": True}, "revoked"),
        ({"open_": False}, "requester is not allowed"),
        ({"expires": NOW - 1}, "expired"),
    ]
    for task_id, (asset, reason) in enumerate(cases, start=11):
        node.asset(**asset)
        node.task(task_id)
        await node.put(task_id, "spec", spec, REQUESTER)
        assert await offer_code(task_id) == (409, "consent_refused")
        refused = node.provider.sessions.get(task_id)
        assert refused is not None and refused.state is SessionState.REFUSED and reason in refused.error
        assert node.blobs.get(task_id, ANSWER_BLOB) is None
        assert await offer_code(task_id) == (409, "session_exists")  # one session per task
    node.asset()

    node.ops.chain.assets[4] = (STRANGER.address, *node.ops.chain.assets[4][1:])
    node.task(20)
    await node.put(20, "spec", spec, REQUESTER)
    assert await offer_code(20) == (409, "not_provider")
    node.asset()

    node.task(21, deadline=NOW - 1)
    await node.put(21, "spec", spec, REQUESTER)
    assert await offer_code(21) == (409, "task_closed")

    node.ops.chain.assets[4] = (*node.ops.chain.assets[4][:4], len(BANK) + 1, *node.ops.chain.assets[4][5:])
    node.task(22)
    await node.put(22, "spec", spec, REQUESTER)
    assert await offer_code(22) == (409, "row_count_mismatch")
    node.asset()

    (node.data_dir / "datasets" / "4" / "data.csv").write_bytes(b"client_id,income_class\nx,high\n")
    node.task(23)
    await node.put(23, "spec", spec, REQUESTER)
    assert await offer_code(23) == (409, "commitment_mismatch")
    assert not any(node.blobs.get(t, ANSWER_BLOB) for t in range(10, 24))
    assert node.background == []  # no engine was started


async def test_a_requester_that_never_connects_leaves_an_aborted_session_and_no_attestation(
    node: Node,
) -> None:
    quick = PsiTaskSpec.model_validate(
        node.spec.model_dump(by_alias=True)
        | {"recv_timeout_ms": 1_000, "connect_timeout_ms": 1_000, "deadline_s": 10}
    )
    node.spec = quick
    node.task(30)
    await node.put(30, "spec", quick.canonical_json(), REQUESTER)
    offer = _offer(30)
    await node.put(30, "psi-offer", offer.model_dump_json().encode(), REQUESTER)  # nobody listens there
    for task in node.background:
        await asyncio.wait_for(task, 60)
    session = node.provider.sessions.get(30)
    assert session is not None and session.state is SessionState.ABORTED and session.error
    assert list((node.data_dir / "psi" / "work").iterdir()) == []
    receipt = sign_receipt(
        REQUESTER,
        chain_id=CHAIN_ID,
        task_manager=TASK_MANAGER,
        task_id=30,
        spec_hash=quick.spec_hash(),
        session_id=offer.session_id,
        dataset_id=4,
        commitment=b"\x01" * 32,
    )
    err = await node.refused(30, "psi-receipt", receipt.to_bytes())
    assert (err.status, err.code) == (409, "provider_aborted")
    assert node.client.uploads == []
    other = receipt.model_copy(update={"session_id": new_session_id(30)})
    err = await node.refused(30, "psi-receipt", other.to_bytes())
    assert (err.status, err.code) == (400, "bad_receipt")


async def test_dispatch_and_the_committee_check(node: Node) -> None:
    node.task(40, kind=1)  # an HE task: its blobs, spec included, are the HE API's
    await node.put(40, "spec", b"{}", REQUESTER)
    await node.put(40, "columns", b"xx", REQUESTER)
    assert node.he.calls == ["blob:spec", "blob:columns"]
    err = await node.refused(40, "psi-offer", _offer(40).model_dump_json().encode())
    assert (err.status, err.code) == (400, "wrong_kind")

    view = node.task(41)
    err = await node.refused(41, "psi-answer", b"{}")
    assert (err.status, err.code) == (400, "unknown_blob")
    err = await node.refused(41, "psi-receipt", b"{}")
    assert (err.status, err.code) == (400, "bad_message")

    receipt = sign_receipt(
        REQUESTER,
        chain_id=CHAIN_ID,
        task_manager=TASK_MANAGER,
        task_id=41,
        spec_hash=view.spec_hash,
        session_id=new_session_id(41),
        dataset_id=4,
        commitment=b"\x02" * 32,
    )
    err = await node.refused(41, "psi-receipt", receipt.to_bytes())
    assert (err.status, err.code) == (404, "no_session")
    forged = countersign(STRANGER, receipt, len(BANK)).to_bytes()  # not the owner's key
    err = await node.refused(41, "psi-attestation", forged, sender=REQUESTER)
    assert (err.status, err.code) == (400, "bad_attestation")
    assert 41 not in node.kicks
    good = countersign(OWNER, receipt, len(BANK)).to_bytes()
    node.ctx.store.insert(TaskRecord(task_id=41, state=NodeTaskState.FINALIZED, kind=2))
    err = await node.refused(41, "psi-attestation", good, sender=OWNER)
    assert (err.status, err.code) == (409, "task_closed")

    node.api.stop_accepting()
    assert node.he.calls[-1] == "stop"
    err = await node.refused(41, "psi-offer", _offer(41).model_dump_json().encode())
    assert err.code == "shutting_down"
