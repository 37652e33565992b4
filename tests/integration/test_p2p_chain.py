"""The node API authorized by the real contracts on anvil: registered signing keys are let
in, unregistered and operator keys are not, a node unbonded below the minimum stake is
refused once its cached standing expires (while the server keeps serving everyone else),
and task roles come from the TaskManager: only the requester fetches the private result,
only the elected member posts its Result signature. A task asked about before it existed is
let in as soon as it does, and one a reorg gave to another requester within a second.

Accounts: 0 deploys and requests tasks (4 requests the one a reorg hands over); 1 runs the
server node (signer 101), 2 a staked node (signer 102), 3 a node staked at exactly the
minimum (signer 103); key 120 is unregistered.
"""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from aiohttp import web
from eth_account.signers.local import LocalAccount
from eth_hash.auto import keccak

from oracle.chain import staking, tasks
from oracle.chain.contracts import DatumContracts
from oracle.chain.deploy import TOKEN
from oracle.chain.rpc import Chain, RetryPolicy, connect
from oracle.chain.signer import public_output_hash, sign_result
from oracle.chain.tasks import TaskRequest
from oracle.devnet import dev_account, free_port
from oracle.p2p import (
    Audience,
    Caller,
    ChainAuthorizer,
    ChainTaskParties,
    P2PClient,
    P2PServer,
    Peer,
    PeerRefused,
    PeerUnavailable,
    ResultSignature,
    ServerConfig,
    StoredBlob,
)
from oracle.p2p.errors import NotFound

if TYPE_CHECKING:
    from conftest import Net

pytestmark = pytest.mark.integration

SERVER_OP, NODE_OP, LOW_OP = 1, 2, 3
UNREGISTERED = 120
MIN_STAKE = 1_000 * TOKEN  # the test deployment's
TTL_S = 30.0
SPEC = b'{"kind":"stats","query":"count"}'
FAST_RETRY = RetryPolicy(attempts=2, base_delay_s=0.01, max_delay_s=0.01)


def signer(account: int) -> LocalAccount:
    return dev_account(100 + account)


class Clock:
    """The authorization cache's clock, moved by the test instead of sleeping."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Handlers:
    """A daemon's handlers: one spec and one private result per task, signatures by signer."""

    def __init__(self) -> None:
        self.signatures: dict[str, ResultSignature] = {}

    async def task_spec(self, task_id: int, caller: Caller) -> bytes:
        return SPEC

    async def blob_received(self, blob: StoredBlob, caller: Caller) -> None:
        return None

    async def signature_received(self, task_id: int, signature: ResultSignature, caller: Caller) -> None:
        self.signatures[caller.address] = signature

    async def task_result(self, task_id: int, caller: Caller) -> bytes:
        if task_id == 0:
            raise NotFound("no such task")
        return b"result for " + str(task_id).encode()


@dataclass(frozen=True)
class World:
    net: "Net"
    port: int  # the server node's registered endpoint port
    task_id: int
    member: int  # the dev account operating the task's only committee member


def fund(net: "Net", account: int, amount_wei: int) -> None:
    net.tx(0).send(net.contracts.token, "transfer", dev_account(account).address, amount_wei)


@pytest.fixture(scope="module")
def registered(net: "Net") -> World:
    port = free_port()
    for account, stake, endpoint in [
        (SERVER_OP, 5_000 * TOKEN, f"http://127.0.0.1:{port}"),
        (NODE_OP, 2_000 * TOKEN, "http://127.0.0.1:1"),
        (LOW_OP, MIN_STAKE, "http://127.0.0.1:2"),
    ]:
        fund(net, account, stake)
        staking.register_node(
            net.tx(account),
            net.chain,
            net.contracts,
            signer=signer(account).address,
            endpoint=endpoint,
            capabilities=0xFE,
            stake_wei=stake,
        )
    request = TaskRequest(
        kind=tasks.TASK_KINDS["stats"],
        committee_size=1,
        quorum=1,
        deadline=net.now() + 3_600,
        fee_wei=100 * TOKEN,
        spec_hash=keccak(SPEC),
        spec_uri=f"http://127.0.0.1:{port}/v1/tasks/1/spec",
    )
    task_id, _ = tasks.request_task(net.tx(0), net.chain, net.contracts, request)
    (member_operator,) = net.chain.call(net.contracts.tasks, "getCommittee", task_id)
    member = next(a for a in (SERVER_OP, NODE_OP, LOW_OP) if dev_account(a).address == member_operator)
    return World(net, port, task_id, member)


@pytest.fixture
def world(registered: World, isolated: "Net") -> World:
    return registered


@asynccontextmanager
async def node_server(
    world: World, data_dir: Path, clock: Clock, chain: Chain | None = None
) -> AsyncIterator[tuple[P2PServer, Peer, Handlers]]:
    net = world.net
    chain = chain or net.chain
    contracts = net.contracts if chain is net.chain else DatumContracts(chain.w3, net.deployment, net.store)
    config = ServerConfig(
        audience=Audience(net.chain.chain_id, signer(SERVER_OP).address),
        data_dir=data_dir,
        result_domain=tasks.result_domain(net.chain, net.contracts),
    )
    handlers = Handlers()
    server = P2PServer(
        config,
        handlers,
        authorizer=ChainAuthorizer(chain, contracts, ttl_s=TTL_S, clock=clock),
        parties=ChainTaskParties(chain, contracts, ttl_s=TTL_S, clock=clock),
    )
    runner = web.AppRunner(server.app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", world.port).start()
    try:
        record = staking.get_node(net.chain, net.contracts, dev_account(SERVER_OP).address)
        yield server, Peer.of_node(record, net.chain.chain_id), handlers
    finally:
        await runner.cleanup()


def client(account: LocalAccount) -> P2PClient:
    return P2PClient(account, 10.0, retry=FAST_RETRY)


@pytest.mark.asyncio
async def test_a_registered_nodes_key_is_accepted_and_others_get_403(world: World, tmp_path: Path) -> None:
    async with node_server(world, tmp_path, Clock()) as (_, peer, _):
        assert peer.url == f"http://127.0.0.1:{world.port}"  # the endpoint the registry holds
        async with client(signer(NODE_OP)) as node:
            assert await node.fetch_spec(peer, world.task_id) == SPEC
        for key in (dev_account(UNREGISTERED), dev_account(NODE_OP)):  # a stranger; an operator (cold) key
            async with client(key) as other:
                with pytest.raises(PeerRefused) as refused:
                    await other.fetch_spec(peer, world.task_id)
            assert (refused.value.status, refused.value.code) == (403, "not_a_node")
            assert f"{key.address} is not the signing key of a registered node" in str(refused.value)


@pytest.mark.asyncio
async def test_a_node_unbonded_below_the_minimum_is_refused_while_others_are_served(
    world: World, tmp_path: Path
) -> None:
    net, clock = world.net, Clock()
    async with (
        node_server(world, tmp_path, clock) as (_, peer, _),
        client(signer(LOW_OP)) as low,
        client(signer(NODE_OP)) as node,
        client(dev_account(0)) as requester,
    ):
        assert await low.fetch_spec(peer, world.task_id) == SPEC  # exactly the minimum: accepted

        # unbond one token on chain while the server goes on answering other nodes
        unbonding = asyncio.to_thread(staking.request_unbond, net.tx(LOW_OP), net.contracts, TOKEN)
        _, served, health = await asyncio.gather(
            unbonding, node.fetch_spec(peer, world.task_id), node.health(peer)
        )
        assert served == SPEC and health["status"] == "ok"
        low_record = staking.get_node(net.chain, net.contracts, dev_account(LOW_OP).address)
        assert low_record.stake_wei == MIN_STAKE - TOKEN

        assert await low.fetch_spec(peer, world.task_id) == SPEC  # the cached standing is still fresh
        clock.now += TTL_S + 1  # ... until its TTL runs out
        outcomes = await asyncio.gather(
            low.fetch_spec(peer, world.task_id),
            node.fetch_spec(peer, world.task_id),
            requester.fetch_result(peer, world.task_id),
            node.fetch_spec(peer, world.task_id),
            return_exceptions=True,
        )
        refused, *others = outcomes
        assert isinstance(refused, PeerRefused)
        assert (refused.status, refused.code) == (403, "stake_below_minimum")
        assert f"{MIN_STAKE - TOKEN} wei staked, below the minimum {MIN_STAKE}" in str(refused)
        assert others == [SPEC, f"result for {world.task_id}".encode(), SPEC]


@pytest.mark.asyncio
async def test_only_the_requester_fetches_the_private_result(world: World, tmp_path: Path) -> None:
    async with node_server(world, tmp_path, Clock()) as (_, peer, _):
        async with client(dev_account(0)) as requester:
            assert await requester.fetch_result(peer, world.task_id) == f"result for {world.task_id}".encode()
            with pytest.raises(PeerRefused) as unknown:  # no task 999 on chain: nobody is its party
                await requester.fetch_result(peer, 999)
            assert unknown.value.code == "not_task_party"
        for account in (world.member, NODE_OP, LOW_OP):  # the committee member included
            async with client(signer(account)) as other:
                with pytest.raises(PeerRefused) as refused:
                    await other.fetch_result(peer, world.task_id)
            assert (refused.value.status, refused.value.code) == (403, "not_task_party")
            assert f"is not the receiver of task {world.task_id}" in str(refused.value)


@pytest.mark.asyncio
async def test_the_elected_member_posts_its_result_signature(world: World, tmp_path: Path) -> None:
    net = world.net
    domain = tasks.result_domain(net.chain, net.contracts)
    epoch = int(net.chain.call(net.contracts.tasks, "getConfigEpoch"))
    result_hash, output_hash = keccak(b"ciphertext result"), public_output_hash(b"42")
    async with node_server(world, tmp_path, Clock()) as (_, peer, handlers):
        member_key = signer(world.member)
        signed = sign_result(member_key.key, domain, world.task_id, result_hash, output_hash, epoch)
        async with client(member_key) as member:
            await member.post_signature(
                peer, world.task_id, ResultSignature.from_signed(signed, result_hash, output_hash, epoch)
            )
        assert list(handlers.signatures) == [member_key.address]
        outsider = next(a for a in (SERVER_OP, NODE_OP, LOW_OP) if a != world.member)
        theirs = sign_result(signer(outsider).key, domain, world.task_id, result_hash, output_hash, epoch)
        async with client(signer(outsider)) as other:
            with pytest.raises(PeerRefused) as refused:
                await other.post_signature(
                    peer, world.task_id, ResultSignature.from_signed(theirs, result_hash, output_hash, epoch)
                )
        assert refused.value.code == "not_task_party"
        assert list(handlers.signatures) == [member_key.address]


@pytest.mark.asyncio
async def test_an_unreadable_registry_is_a_503_not_a_refusal(world: World, tmp_path: Path) -> None:
    dead = Chain(
        connect(f"http://127.0.0.1:{free_port()}", timeout_s=2.0), world.net.chain.errors, FAST_RETRY
    )
    async with node_server(world, tmp_path, Clock(), chain=dead) as (_, peer, _):
        async with client(signer(NODE_OP)) as node:
            with pytest.raises(PeerUnavailable) as down:
                await node.fetch_spec(peer, world.task_id)
    assert (down.value.status, down.value.code) == (503, "authorizer_unavailable")


@pytest.mark.asyncio
async def test_an_upload_right_after_the_task_appears_is_accepted(world: World, tmp_path: Path) -> None:
    net = world.net
    # the cache's clock never moves: only a negative answer held in the cache could refuse it
    async with node_server(world, tmp_path, Clock()) as (_, peer, _), client(dev_account(0)) as requester:
        next_id = int(net.chain.call(net.contracts.tasks, "getTaskCount")) + 1
        with pytest.raises(PeerRefused) as early:  # asked before the request is mined: nobody's task
            await requester.upload_blob(peer, next_id, "spec", SPEC)
        assert (early.value.status, early.value.code) == (403, "not_task_party")

        request = TaskRequest(
            kind=tasks.TASK_KINDS["stats"],
            committee_size=1,
            quorum=1,
            deadline=net.now() + 3_600,
            fee_wei=100 * TOKEN,
            spec_hash=keccak(SPEC),
            spec_uri="datum:spec:test",
        )
        task_id, _ = await asyncio.to_thread(tasks.request_task, net.tx(0), net.chain, net.contracts, request)
        assert task_id == next_id
        receipt = await requester.upload_blob(peer, task_id, "spec", SPEC)  # at once, same cache
        assert (receipt.task_id, receipt.name, receipt.size_bytes) == (task_id, "spec", len(SPEC))


@pytest.mark.asyncio
async def test_a_task_replaced_by_a_reorg_lets_its_new_requester_in_within_a_second(
    world: World, tmp_path: Path
) -> None:
    net, clock = world.net, Clock()
    fund(net, 4, 1_000 * TOKEN)
    request = TaskRequest(
        kind=tasks.TASK_KINDS["stats"],
        committee_size=1,
        quorum=1,
        deadline=net.now() + 3_600,
        fee_wei=100 * TOKEN,
        spec_hash=keccak(SPEC),
        spec_uri="datum:spec:test",
    )
    async with (
        node_server(world, tmp_path, clock) as (_, peer, _),
        client(dev_account(0)) as first,
        client(dev_account(4)) as second,
    ):
        snapshot = net.rpc("evm_snapshot")
        task_id, _ = await asyncio.to_thread(tasks.request_task, net.tx(0), net.chain, net.contracts, request)
        await first.upload_blob(peer, task_id, "spec", SPEC)  # the parties of the task are cached now
        assert net.rpc("evm_revert", snapshot) is True  # the request leaves the chain...
        net.nonces.clear()
        replaced, _ = await asyncio.to_thread(
            tasks.request_task, net.tx(4), net.chain, net.contracts, request
        )
        assert replaced == task_id  # ... and another requester's task takes its id

        with pytest.raises(PeerRefused) as stale:  # the cached set is a moment old: still trusted
            await second.upload_blob(peer, task_id, "context", b"ctx")
        assert stale.value.code == "not_task_party"
        clock.now += 1.0  # a refusal re-reads a set that is a second old (the TTL is 30 s)
        receipt = await second.upload_blob(peer, task_id, "context", b"ctx")
        assert receipt.task_id == task_id
        with pytest.raises(PeerRefused) as gone:
            await first.upload_blob(peer, task_id, "columns", b"cols")
        assert gone.value.code == "not_task_party"
