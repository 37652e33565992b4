"""Chain faults under real node processes: a request reorged away before its confirmations,
and the RPC node (anvil) stopped and started again under the running nodes; and inputs
for a request that is not confirmed yet are never taken, so a request a reorg removes
leaves nothing behind for the next task that gets its id.

The devnet is `datum devnet up --nodes 3` with two changes this module needs: the nodes
wait for `CONFIRMATIONS` blocks, and anvil keeps its chain in a state file (it writes it
on SIGTERM and reads it back on start). Blocks come from anvil's interval miner, one a
second, except while a test turns it off and mines by hand.
"""

from __future__ import annotations

import asyncio
import os
import random
import shlex
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import requests

from compute.errors import ProtocolAbort
from compute.he import OwnerKeys, Scheme, decrypt, generate_keys
from oracle import devnet
from oracle.chain import tasks
from oracle.chain.artifacts import ArtifactStore, repo_root
from oracle.chain.contracts import DatumContracts, ensure_allowance
from oracle.chain.rpc import Chain, RetryPolicy, connect
from oracle.chain.txmanager import NonceTracker
from oracle.client import DatumClient, PreparedHE, Submitted, prepare_he
from oracle.node.processes import NodeLaunch, is_node_process, spawn_node, wait_healthy, write_node_config
from oracle.node.store import NodeTaskState
from oracle.p2p import P2PClient
from oracle.p2p.errors import PeerUnavailable

from .conftest import Network, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

CONFIRMATIONS = 2
BLOCK_TIME_S = 1
FEE_WEI = 10**18
TIMEOUT_S = 900
ROWS = 60


@dataclass
class FaultNetwork(Network):
    """The devnet, plus what it takes to stop and restart its anvil and to steer mining."""

    anvil_procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def rpc(self, method: str, *params: Any) -> Any:
        return self.chain.send_rpc(method, list(params))

    def pending_txs(self) -> int:
        return int(self.rpc("txpool_status")["pending"], 16)

    def log_size(self, node: devnet.DevnetNode) -> int:
        return (self.node_dir(node) / "node.log").stat().st_size

    def log_since(self, node: devnet.DevnetNode, offset: int) -> str:
        with (self.node_dir(node) / "node.log").open("rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")

    def wait_each(self, check: Callable[[devnet.DevnetNode], object], timeout_s: float, what: str) -> None:
        """Poll `check(node)` for every node until it holds (`what` names it in a failure)."""
        for node in self.state.nodes:
            wait_for(partial(check, node), timeout_s, f"node {node.index} {what}")


def _anvil_binary() -> Path:
    configured = os.environ.get("DATUM_ANVIL")
    return Path(configured) if configured else repo_root() / devnet.ANVIL_RELATIVE


def _start_nodes(home: Path, store: ArtifactStore) -> None:
    """`datum devnet up`'s node processes, with `confirmations = CONFIRMATIONS`."""
    state = devnet.load_state(home)
    assert state is not None
    nodes = list(state.nodes)
    waiting = []
    for i, node in enumerate(nodes):
        launch = NodeLaunch(home / f"node-{node.index}")
        write_node_config(
            launch,
            private_key_hex="0x" + bytes(devnet.dev_account(node.account).key).hex(),
            rpc_url=state.rpc_url,
            deployment=home / devnet.DEPLOYMENT_FILE,
            artifacts_dir=store.directory,
            listen_port=int(node.endpoint.rsplit(":", 1)[1]),
            confirmations=CONFIRMATIONS,
            extra=devnet.NODE_SETTINGS,
        )
        pid = spawn_node(launch)
        nodes[i] = node.model_copy(update={"pid": pid, "home": str(launch.home)})
        state = state.model_copy(update={"nodes": nodes})
        state.save(home)  # recorded at once: `devnet.down` stops it whatever happens next
        waiting.append((pid, node.endpoint, launch.log))
    wait_healthy(waiting)


@pytest.fixture(scope="module")
def faults(tmp_path_factory: pytest.TempPathFactory, artifacts: ArtifactStore) -> Iterator[FaultNetwork]:
    home = tmp_path_factory.mktemp("devnet")
    # anvil as `devnet up` starts it, plus --state: a wrapper that execs it (same pid)
    wrapper = home / "anvil-with-state"
    binary, state_file = shlex.quote(str(_anvil_binary())), shlex.quote(str(home / "chain-state.json"))
    wrapper.write_text(f'#!/bin/sh\nexec {binary} "$@" --state {state_file}\n')
    wrapper.chmod(0o755)
    net: FaultNetwork | None = None
    try:
        state = devnet.up(home, 3, store=artifacts, anvil=wrapper, processes=False)
        chain = Chain(connect(state.rpc_url), artifacts.error_table())
        contracts = DatumContracts(chain.w3, state.deployment, artifacts)
        net = FaultNetwork(home, artifacts, chain, contracts, NonceTracker())
        # the requester's allowance for every task of the module, so a request is one transaction
        ensure_allowance(net.tx(0), chain, contracts.token, contracts.tasks.address, 20 * FEE_WEI)
        _start_nodes(home, artifacts)
        net.rpc("evm_setIntervalMining", BLOCK_TIME_S)
        yield net
    finally:
        devnet.down(home)
        for proc in net.anvil_procs if net is not None else []:
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def keys() -> OwnerKeys:
    return generate_keys(Scheme.ZPAILLIER)


def prepared_task(keys: OwnerKeys, column: str, seed: int) -> tuple[PreparedHE, int]:
    rng = random.Random(seed)
    values = [rng.randrange(1, 10**9) for _ in range(ROWS)]
    text = f"{column}\n" + "\n".join(str(v) for v in values) + "\n"
    return prepare_he(text, f"sum({column})", "paillier", keys=keys), sum(values)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def client(net: Network) -> DatumClient:
    return DatumClient(net.chain, net.contracts, devnet.dev_account(0), nonces=net.nonces)


async def _request(net: Network, prepared: PreparedHE) -> Submitted:
    async with client(net) as c:
        return await c.request_he(prepared, fee_wei=FEE_WEI, timeout_s=TIMEOUT_S)


async def _upload(net: Network, submitted: Submitted, prepared: PreparedHE, **options: float) -> None:
    async with client(net) as c:
        report = await c.upload_inputs(submitted, prepared, **options)
        assert sorted(report.delivered) == sorted(submitted.committee), report.failed


async def _raw_upload(net: Network, submitted: Submitted, prepared: PreparedHE) -> None:
    """Upload the spec straight to the first member, without waiting for its acceptance."""
    p2p = P2PClient(devnet.dev_account(0), timeout_s=10, retry=RetryPolicy(attempts=1))
    try:
        async with client(net) as c:
            peers = await c.peers(submitted.committee)
        await p2p.upload_blob(peers[submitted.committee[0]], submitted.task_id, "spec", prepared.blob("spec"))
    finally:
        await p2p.close()


async def _finish(net: Network, submitted: Submitted, prepared: PreparedHE) -> Any:
    async with client(net) as c:
        final = await c.wait_finalized(submitted.task_id, timeout_s=120)
        result = await c.fetch_result(submitted.task_id, submitted.committee, final.result_hash)
        return decrypt(prepared.keys, result, prepared.spec)


def run_task(net: Network, prepared: PreparedHE) -> tuple[Submitted, Any]:
    submitted = run(_request(net, prepared))
    run(_upload(net, submitted, prepared))
    return submitted, run(_finish(net, submitted, prepared))


def request_mined_by_hand(net: FaultNetwork, prepared: PreparedHE) -> Submitted:
    """Send the request while nothing mines, check it is the only pending transaction, mine it."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(run, _request(net, prepared))
        wait_for(lambda: future.done() or net.pending_txs() > 0, 30, "the request to reach the pool")
        if future.done():
            future.result()  # raises what stopped it
            pytest.fail("the request returned before anything was mined")
        assert net.pending_txs() == 1  # no node sent anything meanwhile
        net.rpc("evm_mine")
        submitted: Submitted = future.result(timeout=30)
    return submitted


def seen_at(net: Network, node: devnet.DevnetNode, task_id: int) -> float:
    """When the node stored the task (its first transition), on the node's wall clock."""
    path = net.node_dir(node) / "data" / "node.sqlite3"
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
    try:
        (at,) = db.execute(
            "SELECT at FROM transitions WHERE task_id = ? AND from_state = '' ORDER BY rowid", (task_id,)
        ).fetchone()
    finally:
        db.close()
    return float(at)


def finalized_everywhere(net: FaultNetwork, task_id: int) -> None:
    """Every node records the task finalized by the chain's TaskFinalized transaction; the node
    that sent it (and only that one) also records it as its own submission."""

    def finalized(node: devnet.DevnetNode) -> bool:
        record = net.task_on_node(node, task_id)
        return record is not None and record.state == NodeTaskState.FINALIZED and bool(record.finalize_tx)

    net.wait_each(finalized, 30, f"to record task {task_id} as finalized")
    (event,) = [e for e in tasks.task_history(net.chain, net.contracts, task_id) if e.name == "TaskFinalized"]
    sender = str(net.rpc("eth_getTransactionByHash", event.tx_hash)["from"]).lower()
    records = {n.signer.lower(): net.task_on_node(n, task_id) for n in net.state.nodes}
    assert {op: r.finalize_tx.lower() for op, r in records.items() if r} == dict.fromkeys(
        records, event.tx_hash.lower()
    )
    assert {op: r.submit_tx.lower() for op, r in records.items() if r and r.submit_tx} == {
        sender: event.tx_hash.lower()
    }


# -- a reorg before the confirmations -------------------------------------------------------------


def test_a_request_reorged_away_before_its_confirmations_causes_no_work(
    faults: FaultNetwork, keys: OwnerKeys
) -> None:
    net = faults
    nodes = net.state.nodes
    anchor, anchor_sum = prepared_task(keys, "income", seed=1)
    orphan, _ = prepared_task(keys, "salary", seed=2)  # another spec: its hash differs on chain
    later, later_sum = prepared_task(keys, "income", seed=3)
    offsets = {n.index: net.log_size(n) for n in nodes}

    net.rpc("evm_setIntervalMining", 0)  # from here on a block is mined when the test says so
    try:
        assert net.rpc("anvil_getAutomine") is False
        first = request_mined_by_hand(net, anchor)  # block b-1: a task that stays
        gone = request_mined_by_hand(net, orphan)  # block b: the request the reorg takes away
        block = gone.request_block
        assert block == first.request_block + 1 and gone.task_id == first.task_id + 1
        # CONFIRMATIONS - 1 blocks on top of `gone`: one short of its confirmations, and
        # exactly the confirmations of `first`
        mined_at = time.time()
        if CONFIRMATIONS > 1:
            net.rpc("anvil_mine", hex(CONFIRMATIONS - 1))
        # every node took `first` (and not before it was due): its listener has followed the
        # chain to the head, past the block of `gone`
        net.wait_each(lambda node: net.task_on_node(node, first.task_id), 30, f"to see task {first.task_id}")
        early = [n.index for n in nodes if seen_at(net, n, first.task_id) < mined_at]
        assert early == [], f"nodes {early} took task {first.task_id} before its confirmations"
        assert [net.task_on_node(node, gone.task_id) for node in nodes] == [None] * len(nodes)
        net.rpc("anvil_reorg", CONFIRMATIONS, [])  # from block b on, blocks without the request
        assert net.rpc("eth_getTransactionReceipt", gone.request_tx) is None
        assert int(net.chain.call(net.contracts.tasks, "getTaskCount")) == first.task_id
        net.rpc("anvil_mine", hex(3 * CONFIRMATIONS))  # well past the confirmations
        # each node saw the block of the request leave the chain, with nothing of it dispatched
        expected = f"reorg: blocks above {block - 1} left the canonical chain, 0 dispatched logs to roll back"
        net.wait_each(
            lambda node: expected in net.log_since(node, offsets[node.index]), 30, "to see the reorg"
        )
        assert [net.task_on_node(node, gone.task_id) for node in nodes] == [None] * len(nodes)
        assert tasks.task_history(net.chain, net.contracts, gone.task_id) == []  # no TaskAccepted
    finally:
        net.rpc("evm_setIntervalMining", BLOCK_TIME_S)
    net.nonces.clear()  # the requester's nonce went back with the reorg

    run(_upload(net, first, anchor))  # the members accept once blocks come again, then take the inputs
    assert run(_finish(net, first, anchor)) == anchor_sum  # the task below the fork carries on
    later_task, total = run_task(net, later)  # the next request takes the id of the vanished one
    assert later_task.task_id == gone.task_id
    assert total == later_sum
    finalized_everywhere(net, later_task.task_id)

    accepts = [
        e for e in tasks.task_history(net.chain, net.contracts, gone.task_id) if e.name == "TaskAccepted"
    ]
    assert len(accepts) == 3 and all(e.block_number > later_task.request_block for e in accepts)
    histories = {n.index: net.history_on_node(n) for n in nodes}
    for node in nodes:
        record = net.task_on_node(node, later_task.task_id)
        assert record is not None
        # the node knows only the later request under this id, and did its work once
        assert (record.request_tx, record.request_block) == (later_task.request_tx, later_task.request_block)
        assert record.evaluations == 1
        assert histories[node.index][later_task.task_id][:2] == [("", "seen"), ("seen", "accepted")]
        assert record.accept_tx in {e.tx_hash for e in accepts}
        log_text = net.log_since(node, offsets[node.index])
        assert gone.request_tx not in log_text
        assert f"task {gone.task_id}: TaskRequested delivered again" not in log_text


# -- anvil restarted under the nodes -----------------------------------------------------------


def _rpc_answers(url: str) -> bool:
    try:
        answer = requests.post(
            url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}, timeout=1
        )
        return answer.ok
    except requests.RequestException:
        return False


def test_the_nodes_ride_out_an_anvil_restart_with_its_state(faults: FaultNetwork, keys: OwnerKeys) -> None:
    net = faults
    nodes = net.state.nodes
    pids = {n.index: n.pid for n in nodes}
    before, before_sum = prepared_task(keys, "income", seed=4)
    after, after_sum = prepared_task(keys, "income", seed=5)

    first, total = run_task(net, before)
    assert total == before_sum
    finalized_everywhere(net, first.task_id)
    request_block_hash = net.chain.w3.eth.get_block(first.request_block)["hash"]

    offsets = {n.index: net.log_size(n) for n in nodes}
    state = net.state
    args = Path(f"/proc/{state.pid}/cmdline").read_bytes().split(b"\0")[:-1]
    assert b"--state" in args and str(state.rpc_url.rsplit(":", 1)[1]).encode() in args
    assert devnet.stop_process(state.pid)  # SIGTERM by pid: anvil writes its state file and exits
    try:
        os.waitpid(state.pid, 0)  # `devnet up` started it from this process: reap it
    except ChildProcessError:
        pass
    assert not _rpc_answers(state.rpc_url)
    net.wait_each(  # every node notices the outage
        lambda node: "listener step failed" in net.log_since(node, offsets[node.index]),
        30,
        "to notice that anvil is gone",
    )

    with (net.home / "anvil.log").open("ab") as out:  # same binary, port and state file
        proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    net.anvil_procs.append(proc)
    state.model_copy(update={"pid": proc.pid}).save(net.home)  # `devnet down` stops this one
    wait_for(lambda: proc.poll() is not None or _rpc_answers(state.rpc_url), 30, "anvil to serve again")
    assert proc.poll() is None, "anvil exited on start; see anvil.log"
    net.rpc("evm_setIntervalMining", BLOCK_TIME_S)  # the mining mode is not part of the state
    assert net.chain.w3.eth.get_block(first.request_block)["hash"] == request_block_hash  # the same chain
    net.wait_each(
        lambda node: "listener recovered after" in net.log_since(node, offsets[node.index]),
        60,
        "to recover from the outage",
    )

    second, total = run_task(net, after)
    assert total == after_sum
    finalized_everywhere(net, second.task_id)
    for node in net.state.nodes:  # the same processes did it: none crashed or was restarted
        assert node.pid == pids[node.index] and node.pid is not None and is_node_process(node.pid)
        record = net.task_on_node(node, second.task_id)
        assert record is not None and record.evaluations == 1
        log_text = net.log_since(node, offsets[node.index])
        assert "reorg:" not in log_text and "node stopping" not in log_text


# -- inputs wait for a confirmed request -----------------------------------------------------


def test_inputs_wait_for_a_confirmed_request_so_a_vanished_one_leaves_nothing(
    faults: FaultNetwork, keys: OwnerKeys
) -> None:
    net = faults
    orphan, _ = prepared_task(keys, "income", seed=6)
    later, later_sum = prepared_task(generate_keys(Scheme.ZPAILLIER), "income", seed=7)
    assert orphan.spec_json == later.spec_json  # a common spec: only keys and data differ
    net.rpc("evm_setIntervalMining", 0)
    try:
        gone = request_mined_by_hand(net, orphan)
        # Not confirmed: no member accepts, so the client uploads nothing ...
        with pytest.raises(ProtocolAbort, match="did not accept"):
            run(_upload(net, gone, orphan, accept_timeout_s=2.0))
        # ... and a node asked directly refuses inputs for a request it has not confirmed.
        with pytest.raises(PeerUnavailable, match="not confirmed"):
            run(_raw_upload(net, gone, orphan))
        if CONFIRMATIONS > 1:
            net.rpc("anvil_mine", hex(CONFIRMATIONS - 1))
        net.rpc("anvil_reorg", CONFIRMATIONS, [])
        net.rpc("anvil_mine", hex(3 * CONFIRMATIONS))
    finally:
        net.rpc("evm_setIntervalMining", BLOCK_TIME_S)
    net.nonces.clear()

    later_task = run(_request(net, later))
    assert later_task.task_id == gone.task_id
    run(_upload(net, later_task, later))  # the id is free: every member takes the new inputs
    assert run(_finish(net, later_task, later)) == later_sum
