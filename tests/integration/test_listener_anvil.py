"""The listener against a real anvil: confirmations, reorgs (anvil_reorg and
evm_snapshot/evm_revert), rollback, restart from the checkpoint, duplicates, an RPC node
that dies and comes back with its state, and HTTP polling when the WebSocket is missing.

The logs come from a hand-assembled contract (`EMITTER_INIT` below): any call emits
``LOG2(topic0=PING, topic1=caller)`` with the calldata as data. One anvil serves the module
(it is stopped and restarted on the same port by the outage test); each test deploys its
own emitter so that tests do not see each other's logs. Anvil runs without automining: a
test's transaction is mined by its explicit `evm_mine`, so blocks appear exactly when the
test says.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import socket
import subprocess
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from eth_utils.crypto import keccak

from oracle.listener import (
    Backoff,
    ChainLog,
    HttpChainReader,
    Listener,
    ListenerStatus,
    LogFilter,
)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
ANVIL = REPO / "node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"
WAIT_S = 10.0
QUICK = Backoff(initial_delay_s=0.02, max_delay_s=0.2, failure_budget=200)

PING = keccak(text="Emitter.Ping")
PING_HEX = "0x" + PING.hex()
# Runtime: CALLDATACOPY(0, 0, CALLDATASIZE); LOG2(0, CALLDATASIZE, PING, CALLER); STOP.
EMITTER_RUNTIME = bytes.fromhex("36600060003733" + "7f" + PING.hex() + "366000a2" + "00")
# Constructor: CODECOPY(0, 11, len(runtime)); RETURN(0, len(runtime)).
EMITTER_INIT = bytes.fromhex(f"60{len(EMITTER_RUNTIME):02x}80600b6000396000f3") + EMITTER_RUNTIME


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Anvil:
    """One anvil process on a fixed 127.0.0.1 port, persisting its state to a file on exit."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.state = workdir / "anvil-state.json"
        self.log = workdir / "anvil.log"
        self.proc: subprocess.Popen[str] | None = None

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start and return once anvil reports it is listening (fails after a timeout)."""
        assert ANVIL.is_file(), f"anvil missing at {ANVIL}: run `make setup`"
        proc = subprocess.Popen(
            [
                str(ANVIL),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--no-mining",
                "--state",
                str(self.state),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        listening = threading.Event()

        def drain() -> None:  # keeps the pipe empty for as long as anvil runs
            assert proc.stdout is not None
            with self.log.open("a") as out:
                for line in proc.stdout:
                    out.write(line)
                    if line.startswith("Listening on"):
                        listening.set()

        threading.Thread(target=drain, daemon=True).start()
        self.proc = proc
        if not listening.wait(timeout=20):
            self.stop()
            raise RuntimeError(f"anvil did not start on port {self.port}; see {self.log}")

    def stop(self) -> None:
        """SIGTERM (anvil writes its state file), then wait for the process by its pid."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None


@pytest.fixture(scope="module")
def anvil(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Anvil]:
    node = Anvil(tmp_path_factory.mktemp("anvil"))
    node.start()
    try:
        yield node
    finally:
        node.stop()


_ids = itertools.count(1)


async def rpc(url: str, method: str, *params: object) -> Any:
    """One JSON-RPC call to anvil; fails the test on an error answer."""
    async with aiohttp.ClientSession() as session:
        payload = {"jsonrpc": "2.0", "id": next(_ids), "method": method, "params": list(params)}
        async with session.post(url, json=payload) as response:
            answer = await response.json()
    assert "error" not in answer, f"{method}: {answer['error']}"
    return answer["result"]


@dataclass
class Chain:
    """Test-side access to the module's anvil."""

    anvil: Anvil
    sender: str = ""

    async def call(self, method: str, *params: object) -> Any:
        return await rpc(self.anvil.http, method, *params)

    async def head(self) -> int:
        return int(await self.call("eth_blockNumber"), 16)

    async def mine(self, blocks: int = 1) -> None:
        await self.call("anvil_mine", hex(blocks))

    async def transact(self, tx: dict[str, str]) -> dict[str, Any]:
        """Send `tx` and mine it in a block of its own; returns the receipt."""
        tx_hash = await self.call("eth_sendTransaction", {"from": self.sender, **tx})
        await self.call("evm_mine")
        receipt: dict[str, Any] = await self.call("eth_getTransactionReceipt", tx_hash)
        assert receipt is not None and int(receipt["status"], 16) == 1
        return receipt

    async def deploy_emitter(self) -> str:
        receipt = await self.transact({"data": "0x" + EMITTER_INIT.hex()})
        return str(receipt["contractAddress"])

    async def emit(self, emitter: str, data: bytes) -> dict[str, Any]:
        """Call the emitter in a new block; returns the receipt."""
        return await self.transact({"to": emitter, "data": "0x" + data.hex()})


@pytest_asyncio.fixture
async def chain(anvil: Anvil) -> Chain:
    accounts = await rpc(anvil.http, "eth_accounts")
    return Chain(anvil, accounts[0])


@dataclass
class Node:
    """The handler and rollback hook a node would plug in, recording what they saw."""

    done: list[ChainLog] = field(default_factory=list)
    undone: list[tuple[int, list[ChainLog]]] = field(default_factory=list)

    async def handle(self, log: ChainLog) -> None:
        self.done.append(log)

    async def roll_back(self, fork_block: int, logs: Sequence[ChainLog]) -> None:
        self.undone.append((fork_block, list(logs)))


class RunningListener:
    """A listener running as a task, with bounded waits on its status."""

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(listener.run(self.stop))

    async def until(self, predicate: Any) -> ListenerStatus:
        waiter = asyncio.create_task(self.listener.wait_until(predicate))
        done, _ = await asyncio.wait({waiter, self.task}, timeout=WAIT_S, return_when=asyncio.FIRST_COMPLETED)
        if self.task in done:
            waiter.cancel()
            self.task.result()  # raises what stopped the listener
            pytest.fail("the listener returned before the awaited status")
        if waiter not in done:
            waiter.cancel()
            pytest.fail(f"status not reached within {WAIT_S} s: {self.listener.status}")
        return waiter.result()

    async def close(self) -> None:
        self.stop.set()
        async with asyncio.timeout(WAIT_S):
            await self.task


@pytest_asyncio.fixture
async def running() -> AsyncIterator[list[RunningListener]]:
    """Listeners started by a test, stopped at its end even when it fails."""
    started: list[RunningListener] = []
    yield started
    for item in started:
        if not item.task.done():
            await item.close()


def make_listener(
    chain: Chain,
    node: Node,
    store: Path,
    emitter: str,
    *,
    confirmations: int,
    start_block: int,
    ws: bool = True,
    **options: Any,
) -> Listener:
    options.setdefault("poll_interval_s", 0.05)
    return Listener(
        options.pop("reader", chain.anvil.http),
        chain.anvil.ws if ws else None,
        [LogFilter(addresses=(emitter,), topics=((PING_HEX,),))],
        store,
        confirmations=confirmations,
        handler=node.handle,
        on_rollback=node.roll_back,
        start_block=start_block,
        backoff=QUICK,
        **options,
    )


def start(running: list[RunningListener], listener: Listener) -> RunningListener:
    item = RunningListener(listener)
    running.append(item)
    return item


# -- confirmations ----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_log_is_dispatched_once_after_n_confirmations_woken_by_the_websocket(
    chain: Chain, running: list[RunningListener], tmp_path: Path
) -> None:
    emitter = await chain.deploy_emitter()
    node = Node()
    # Polling only every 30 s: within the test's timeout only the newHeads doorbell can wake it.
    listener = make_listener(
        chain,
        node,
        tmp_path / "l.sqlite3",
        emitter,
        confirmations=2,
        start_block=await chain.head(),
        poll_interval_s=30.0,
        ws_idle_poll_s=30.0,
    )
    item = start(running, listener)
    await item.until(lambda s: s.transport == "ws")
    receipt = await chain.emit(emitter, b"task 1")
    block = int(receipt["blockNumber"], 16)
    await chain.mine()
    await item.until(lambda s: s.processed_block is not None and s.processed_block >= block - 1)
    assert node.done == []
    await chain.mine()
    await item.until(lambda s: s.dispatched == 1)
    (log,) = node.done
    (raw,) = receipt["logs"]
    assert log.address.lower() == emitter.lower()
    assert log.topics == (PING, bytes(12) + bytes.fromhex(chain.sender[2:]))
    assert log.data == b"task 1"
    assert (log.block_number, log.block_hash) == (block, receipt["blockHash"])
    assert (log.tx_hash, log.log_index) == (receipt["transactionHash"], int(raw["logIndex"], 16))
    await chain.mine(3)
    head = await chain.head()
    await item.until(lambda s: s.processed_block == head - 2)
    assert node.done == [log]
    assert node.undone == []


# -- reorgs -----------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_reorg_before_n_confirmations_dispatches_nothing(
    chain: Chain, running: list[RunningListener], tmp_path: Path
) -> None:
    emitter = await chain.deploy_emitter()
    await chain.mine(2)
    node = Node()
    listener = make_listener(
        chain, node, tmp_path / "l.sqlite3", emitter, confirmations=3, start_block=await chain.head()
    )
    item = start(running, listener)
    receipt = await chain.emit(emitter, b"orphaned")
    block = int(receipt["blockNumber"], 16)
    await item.until(lambda s: s.head is not None and s.head >= block)
    await chain.call("anvil_reorg", 1, [])  # replaces the block of the log with an empty one
    assert await chain.call("eth_getTransactionReceipt", receipt["transactionHash"]) is None
    await chain.mine(5)
    await item.until(lambda s: s.processed_block is not None and s.processed_block >= block + 2)
    assert listener.status.reorgs >= 1
    assert node.done == []
    assert node.undone == []


@pytest.mark.asyncio
@pytest.mark.parametrize("how", ["evm_revert", "anvil_reorg"])
async def test_a_reorg_after_dispatch_calls_on_rollback_and_follows_the_new_branch(
    how: str, chain: Chain, running: list[RunningListener], tmp_path: Path
) -> None:
    emitter = await chain.deploy_emitter()
    await chain.mine(2)
    node = Node()
    listener = make_listener(
        chain, node, tmp_path / "l.sqlite3", emitter, confirmations=0, start_block=await chain.head()
    )
    item = start(running, listener)
    snapshot = await chain.call("evm_snapshot")
    gone = await chain.emit(emitter, b"gone")
    await item.until(lambda s: s.dispatched == 1)
    fork = int(gone["blockNumber"], 16) - 1
    if how == "evm_revert":
        assert await chain.call("evm_revert", snapshot) is True
        new = await chain.emit(emitter, b"new")
    else:
        replacement = {"from": chain.sender, "to": emitter, "data": "0x" + b"new".hex()}
        await chain.call("anvil_reorg", 1, [[replacement, 0]])
        (new_log,) = await chain.call(
            "eth_getLogs", {"address": emitter, "fromBlock": hex(fork + 1), "toBlock": "latest"}
        )
        new = {"transactionHash": new_log["transactionHash"], "blockHash": new_log["blockHash"]}
    await item.until(lambda s: s.rolled_back == 1 and s.dispatched == 2)
    assert [(f, [log.tx_hash for log in logs]) for f, logs in node.undone] == [
        (fork, [gone["transactionHash"]])
    ]
    assert [log.data for log in node.done] == [b"gone", b"new"]
    assert node.done[1].tx_hash == new["transactionHash"]
    assert node.done[1].block_hash == new["blockHash"] != gone["blockHash"]


# -- restart, checkpoint, duplicates ----------------------------------------------------------


class RecordingReader(HttpChainReader):
    """The production reader, noting the block ranges it was asked for."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.ranges: list[tuple[int, int]] = []

    async def logs(self, log_filter: LogFilter, from_block: int, to_block: int) -> list[ChainLog]:
        self.ranges.append((from_block, to_block))
        return await super().logs(log_filter, from_block, to_block)


@pytest.mark.asyncio
async def test_a_restart_resumes_from_the_checkpoint_and_executes_nothing_twice(
    chain: Chain, running: list[RunningListener], tmp_path: Path
) -> None:
    emitter = await chain.deploy_emitter()
    start_block = await chain.head()
    await chain.mine(6)  # so that the replay margin, not start_block, decides where replay starts
    store = tmp_path / "data" / "listener.sqlite3"
    node = Node()
    first = start(
        running, make_listener(chain, node, store, emitter, confirmations=1, start_block=start_block)
    )
    first_block = int((await chain.emit(emitter, b"a"))["blockNumber"], 16)
    await chain.emit(emitter, b"b")
    await chain.mine()
    await first.until(lambda s: s.dispatched == 2)
    checkpoint = first.listener.status.processed_block
    assert checkpoint is not None
    await first.close()

    await chain.emit(emitter, b"c")  # while no listener runs
    await chain.mine()
    reader = RecordingReader(chain.anvil.http)
    second = start(
        running,
        make_listener(
            chain,
            node,
            store,
            emitter,
            confirmations=1,
            start_block=start_block,
            reader=reader,
            replay_margin=4,
        ),
    )
    head = await chain.head()
    await second.until(lambda s: s.processed_block == head - 1)
    await second.close()
    await reader.close()
    assert reader.ranges[0][0] == checkpoint - 4 + 1  # the replay margin, not the start block
    assert reader.ranges[0][0] <= first_block  # "a" and "b" were delivered again...
    assert [log.data for log in node.done] == [b"a", b"b", b"c"]  # ...and executed once


# -- outages ----------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_the_listener_rides_out_the_rpc_node_going_down_and_backfills(
    chain: Chain, running: list[RunningListener], tmp_path: Path
) -> None:
    emitter = await chain.deploy_emitter()
    node = Node()
    listener = make_listener(
        chain, node, tmp_path / "l.sqlite3", emitter, confirmations=0, start_block=await chain.head()
    )
    item = start(running, listener)
    await item.until(lambda s: s.transport == "ws")
    await chain.emit(emitter, b"before")
    await item.until(lambda s: s.dispatched == 1)

    chain.anvil.stop()  # SIGTERM: anvil writes its state file
    await item.until(lambda s: s.consecutive_failures >= 2 and s.transport == "poll")
    chain.anvil.start()  # same port, state (blocks and hashes) restored
    await chain.emit(emitter, b"after")
    await item.until(lambda s: s.dispatched == 2 and s.consecutive_failures == 0)
    await item.until(lambda s: s.transport == "ws")
    assert [log.data for log in node.done] == [b"before", b"after"]
    assert node.undone == []
    assert listener.status.reorgs == 0


@pytest.mark.asyncio
@pytest.mark.parametrize("ws", ["refused", "none"])
async def test_without_a_websocket_the_listener_polls_over_http(
    ws: str, chain: Chain, running: list[RunningListener], tmp_path: Path
) -> None:
    emitter = await chain.deploy_emitter()
    node = Node()
    listener = Listener(
        chain.anvil.http,
        f"ws://127.0.0.1:{free_port()}" if ws == "refused" else None,
        [LogFilter(addresses=(emitter,), topics=((PING_HEX,),))],
        tmp_path / "l.sqlite3",
        confirmations=0,
        handler=node.handle,
        on_rollback=node.roll_back,
        start_block=await chain.head(),
        poll_interval_s=0.05,
        backoff=QUICK,
    )
    item = start(running, listener)
    receipt = await chain.emit(emitter, b"polled")
    status = await item.until(lambda s: s.dispatched == 1)
    assert status.transport == "poll"
    assert node.done[0].tx_hash == receipt["transactionHash"]
