"""The listener's parts on their own: filters and records, backoff, the HTTP reader's error
classification (against a local aiohttp server), the WebSocket doorbell (against a local
websockets server) and the store's pruning."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from eth_abi.abi import encode
from eth_utils.crypto import keccak
from web3 import Web3
from websockets.asyncio.server import ServerConnection, serve

from oracle.listener import (
    Backoff,
    ChainLog,
    HeadWatcher,
    HttpChainReader,
    ListenerRpcError,
    ListenerStore,
    LogFilter,
)
from oracle.listener.records import filters_fingerprint

ADDRESS = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
WAIT_S = 5.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- filters and records --------------------------------------------------------------------


def test_filters_are_normalised_and_order_insensitive() -> None:
    topic = "0x" + "AB" * 32
    a = LogFilter(addresses=(ADDRESS.lower(), ADDRESS), topics=(None, (topic, topic.lower())))
    assert a.addresses == (ADDRESS,)
    assert a.topics == (None, ("0x" + "ab" * 32,))
    assert a.query(1, 9) == {
        "address": [ADDRESS.lower()],
        "topics": [None, ["0x" + "ab" * 32]],
        "fromBlock": "0x1",
        "toBlock": "0x9",
    }
    b = LogFilter(addresses=("0x" + "11" * 20,))
    assert filters_fingerprint([a, b]) == filters_fingerprint([b, a])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"addresses": ()}, "at least one contract address"),
        ({"addresses": ADDRESS}, "not one string"),
        ({"addresses": ("0x1234",)}, "not an address"),
        ({"addresses": (ADDRESS,), "topics": ("0x" + "00" * 32,)}, "None or a non-empty tuple"),
        ({"addresses": (ADDRESS,), "topics": (("0x00",),)}, "32 bytes"),
        ({"addresses": (ADDRESS,), "topics": (None,) * 5}, "at most 4"),
    ],
)
def test_bad_filters_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LogFilter(**kwargs)


def test_a_record_decodes_with_web3_contract_events() -> None:
    abi = [
        {
            "type": "event",
            "name": "TaskRequested",
            "anonymous": False,
            "inputs": [
                {"name": "taskId", "type": "uint256", "indexed": True},
                {"name": "specHash", "type": "bytes32", "indexed": False},
            ],
        }
    ]
    raw: dict[str, Any] = {
        "address": ADDRESS.lower(),
        "topics": [
            "0x" + keccak(text="TaskRequested(uint256,bytes32)").hex(),
            "0x" + encode(["uint256"], [7]).hex(),
        ],
        "data": "0x" + ("cd" * 32),
        "blockNumber": "0x10",
        "blockHash": "0x" + "aa" * 32,
        "transactionHash": "0x" + "bb" * 32,
        "transactionIndex": "0x2",
        "logIndex": "0x3",
    }
    record = ChainLog.from_rpc(raw)  # type: ignore[arg-type]
    assert (record.block_number, record.tx_index, record.log_index) == (16, 2, 3)
    assert record.key == ("0x" + "bb" * 32, 3)
    event = Web3().eth.contract(abi=abi).events.TaskRequested().process_log(record.to_web3())
    assert event["args"]["taskId"] == 7
    assert event["args"]["specHash"] == bytes.fromhex("cd" * 32)
    assert event["blockNumber"] == 16


def test_a_pending_log_is_a_malformed_answer() -> None:
    raw: dict[str, Any] = {
        "address": ADDRESS,
        "topics": [],
        "data": "0x",
        "blockNumber": None,
        "blockHash": None,
    }
    with pytest.raises(ListenerRpcError, match="malformed log"):
        ChainLog.from_rpc(raw)  # type: ignore[arg-type]


def test_backoff_doubles_up_to_its_cap_and_counts_its_budget() -> None:
    backoff = Backoff(initial_delay_s=0.1, max_delay_s=1.0, failure_budget=6)
    assert [backoff.delay_s(k) for k in range(1, 7)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    assert backoff.total_wait_s() == pytest.approx(2.5)
    assert not backoff.exhausted(5) and backoff.exhausted(6)
    assert Backoff().delay_s(10_000) == Backoff().max_delay_s
    with pytest.raises(ValueError):
        Backoff(initial_delay_s=2.0, max_delay_s=1.0)


# -- the HTTP reader ------------------------------------------------------------------------

Responder = Callable[[Any], web.Response]


@pytest_asyncio.fixture
async def rpc_server() -> AsyncIterator[tuple[str, list[Responder]]]:
    """A local JSON-RPC endpoint answering with the responders the test queues."""
    queue: list[Responder] = []

    async def answer(request: web.Request) -> web.Response:
        return queue.pop(0)(await request.json())

    app = web.Application()
    app.router.add_post("/", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/", queue
    finally:
        await runner.cleanup()


def _result(value: object) -> Responder:
    def respond(body: Any) -> web.Response:
        if isinstance(body, list):
            return web.json_response([{"jsonrpc": "2.0", "id": r["id"], "result": value} for r in body][::-1])
        return web.json_response({"jsonrpc": "2.0", "id": body["id"], "result": value})

    return respond


def _block(number: int) -> dict[str, str]:
    return {"number": hex(number), "hash": "0x" + f"{number:064x}", "parentHash": "0x" + f"{number - 1:064x}"}


@pytest.mark.asyncio
async def test_the_reader_turns_every_failure_into_a_listener_rpc_error(
    rpc_server: tuple[str, list[Responder]],
) -> None:
    url, queue = rpc_server
    reader = HttpChainReader(url, timeout_s=2.0)
    try:
        queue.append(_result("0x7a69"))
        assert await reader.chain_id() == 31337
        queue.append(
            lambda body: web.json_response(
                {"jsonrpc": "2.0", "id": body["id"], "error": {"code": -32005, "message": "limit exceeded"}}
            )
        )
        with pytest.raises(ListenerRpcError, match=r"eth_getLogs rejected \(code -32005\): limit exceeded"):
            await reader.logs(LogFilter(addresses=(ADDRESS,)), 0, 10)
        queue.append(lambda body: web.Response(status=503, text="busy"))
        with pytest.raises(ListenerRpcError, match="HTTP 503"):
            await reader.head()
        queue.append(lambda body: web.Response(text="not json"))
        with pytest.raises(ListenerRpcError, match="eth_chainId failed"):
            await reader.chain_id()
        queue.append(_result(None))
        with pytest.raises(ListenerRpcError, match="no latest block"):
            await reader.head()
    finally:
        await reader.close()


@pytest.mark.asyncio
async def test_the_reader_reads_headers_in_batches(rpc_server: tuple[str, list[Responder]]) -> None:
    url, queue = rpc_server
    reader = HttpChainReader(url, batch_size=2)
    seen: list[int] = []

    def blocks(body: Any) -> web.Response:
        calls = body if isinstance(body, list) else [body]
        seen.append(len(calls))
        answers = [
            {
                "jsonrpc": "2.0",
                "id": c["id"],
                "result": None if int(c["params"][0], 16) > 4 else _block(int(c["params"][0], 16)),
            }
            for c in calls
        ]
        return web.json_response(answers if isinstance(body, list) else answers[0])

    queue.extend([blocks, blocks, blocks])
    try:
        found = await reader.blocks([3, 4, 5, 2, 1])
    finally:
        await reader.close()
    assert seen == [2, 2, 1]
    assert [b.number if b else None for b in found] == [3, 4, None, 2, 1]


@pytest.mark.asyncio
async def test_a_closed_port_is_a_listener_rpc_error() -> None:
    reader = HttpChainReader(f"http://127.0.0.1:{free_port()}", timeout_s=2.0)
    try:
        with pytest.raises(ListenerRpcError, match="eth_getBlockByNumber failed"):
            await reader.head()
    finally:
        await reader.close()


# -- the WebSocket doorbell -----------------------------------------------------------------


@pytest.mark.asyncio
async def test_the_doorbell_rings_on_heads_and_reconnects_after_a_drop() -> None:
    connections: list[ServerConnection] = []
    drop = asyncio.Event()

    async def node(ws: ServerConnection) -> None:
        connections.append(ws)
        request = json.loads(await ws.recv())
        await ws.send(json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": "0xsub"}))
        await ws.send(
            json.dumps(
                {"jsonrpc": "2.0", "method": "eth_subscription", "params": {"subscription": "0xother"}}
            )
        )
        await ws.send(
            json.dumps(
                {
                    "jsonrpc": "2.0",
                    "method": "eth_subscription",
                    "params": {"subscription": "0xsub", "result": {}},
                }
            )
        )
        if len(connections) == 1:
            await drop.wait()
            return
        await ws.wait_closed()

    port = free_port()
    bell = asyncio.Event()
    states: list[bool] = []
    async with serve(node, "127.0.0.1", port):
        watcher = HeadWatcher(f"ws://127.0.0.1:{port}", bell, Backoff(0.01, 0.02, 3), on_live=states.append)
        task = asyncio.create_task(watcher.run())
        try:
            async with asyncio.timeout(WAIT_S):
                while watcher.heads_seen < 1:
                    await bell.wait()
                    bell.clear()
                drop.set()
                while watcher.heads_seen < 2:
                    await bell.wait()
                    bell.clear()
        finally:
            task.cancel()
            await asyncio.wait([task])
    assert states[:3] == [True, False, True]
    assert len(connections) == 2


@pytest.mark.asyncio
async def test_a_node_that_rejects_the_subscription_is_left_alone() -> None:
    async def node(ws: ServerConnection) -> None:
        request = json.loads(await ws.recv())
        await ws.send(
            json.dumps({"jsonrpc": "2.0", "id": request["id"], "error": {"code": -32601, "message": "no"}})
        )
        await ws.wait_closed()

    port = free_port()
    async with serve(node, "127.0.0.1", port):
        watcher = HeadWatcher(f"ws://127.0.0.1:{port}", asyncio.Event(), Backoff(0.01, 0.02, 3))
        async with asyncio.timeout(WAIT_S):
            await watcher.run()  # returns instead of reconnecting
    assert not watcher.live


# -- the store --------------------------------------------------------------------------------


def _log(block: int, index: int) -> ChainLog:
    return ChainLog(
        ADDRESS,
        (b"\x01" * 32,),
        b"data",
        block,
        "0x" + "aa" * 32,
        "0x" + f"{block:062x}{index:02x}",
        0,
        index,
    )


def test_the_store_forgets_what_can_no_longer_be_replayed_or_rolled_back(tmp_path: Path) -> None:
    store = ListenerStore(tmp_path / "listener.sqlite3")
    try:
        for block in range(1, 21):
            store.record(_log(block, 0))
        store.advance_checkpoint(20, keep_blocks=5)
        assert store.count_events() == 6  # blocks 15..20
        store.advance_checkpoint(10, keep_blocks=5)  # never lowers the checkpoint
        assert store.checkpoint == 20
        assert [log.block_number for log in store.events_above(17)] == [18, 19, 20]
        assert store.events_above(19) == [_log(20, 0)]
        store.roll_back(17)
        assert store.checkpoint == 17
        assert store.count_events() == 3
        assert store.is_recorded(_log(17, 0).key) and not store.is_recorded(_log(18, 0).key)
    finally:
        store.close()
