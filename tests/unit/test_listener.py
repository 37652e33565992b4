"""Listener behaviour against an in-memory chain: confirmations, reorgs, rollback, restart,
idempotency, failure budget. The chain is a `ChainReader` whose blocks the tests mine,
reorganise and take down; the listener code under test is the production path."""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from oracle.listener import (
    Backoff,
    BlockRef,
    ChainLog,
    HandlerFailed,
    Listener,
    ListenerError,
    ListenerHalted,
    ListenerRpcError,
    LogFilter,
    ReorgTooDeep,
    StoreMismatch,
)

EMITTER = "0x" + "e1" * 20
OTHER = "0x" + "0e" * 20
PING = "0x" + "11" * 32
PONG = "0x" + "22" * 32
FILTER = LogFilter(addresses=(EMITTER,), topics=((PING,),))
FAST = Backoff(initial_delay_s=0.001, max_delay_s=0.004, failure_budget=4)
WAIT_S = 5.0


def _hash(*parts: object) -> str:
    return "0x" + hashlib.sha256(repr(parts).encode()).hexdigest()


@dataclass(frozen=True)
class Emit:
    """A transaction emitting one log; `tx` fixes the hash to re-include a transaction."""

    address: str = EMITTER
    topic: str = PING
    data: bytes = b""
    tx: str | None = None


@dataclass
class FakeBlock:
    ref: BlockRef
    logs: list[ChainLog]


@dataclass
class FakeChain:
    """A chain that the test drives; also records the log ranges the listener asked for."""

    chain: int = 31337
    history: list[FakeBlock] = field(default_factory=list)
    down: bool = False
    fail_calls: int = 0
    log_queries: list[tuple[int, int]] = field(default_factory=list)
    before_logs: list[object] = field(default_factory=list)
    _salt: int = 0

    def __post_init__(self) -> None:
        self.history.append(FakeBlock(BlockRef(0, _hash("genesis", self.chain), "0x" + "00" * 32), []))

    @property
    def height(self) -> int:
        return self.history[-1].ref.number

    def mine(self, *emits: Emit) -> list[ChainLog]:
        self._salt += 1
        parent = self.history[-1].ref
        number = parent.number + 1
        ref = BlockRef(number, _hash(parent.hash, number, self._salt), parent.hash)
        logs = [
            ChainLog(
                address=LogFilter(addresses=(e.address,)).addresses[0],
                topics=(bytes.fromhex(e.topic[2:]),),
                data=e.data,
                block_number=number,
                block_hash=ref.hash,
                tx_hash=e.tx or _hash("tx", number, self._salt, i),
                tx_index=i,
                log_index=i,
            )
            for i, e in enumerate(emits)
        ]
        self.history.append(FakeBlock(ref, logs))
        return logs

    def mine_empty(self, count: int) -> None:
        for _ in range(count):
            self.mine()

    def drop(self, depth: int) -> list[ChainLog]:
        """Remove the last `depth` >= 1 blocks (a rollback); returns their logs."""
        assert 1 <= depth <= self.height
        dropped = self.history[-depth:]
        del self.history[-depth:]
        return [log for block in dropped for log in block.logs]

    def canonical(self, block_hash: str) -> bool:
        return any(b.ref.hash == block_hash for b in self.history)

    def _check(self) -> None:
        if self.down:
            raise ListenerRpcError("RPC eth_call failed: connection refused (fake)")
        if self.fail_calls:
            self.fail_calls -= 1
            raise ListenerRpcError("RPC eth_call failed: connection reset (fake)")

    async def chain_id(self) -> int:
        self._check()
        return self.chain

    async def head(self) -> BlockRef:
        self._check()
        return self.history[-1].ref

    async def blocks(self, numbers: Sequence[int]) -> list[BlockRef | None]:
        self._check()
        return [self.history[n].ref if 0 <= n <= self.height else None for n in numbers]

    async def logs(self, log_filter: LogFilter, from_block: int, to_block: int) -> list[ChainLog]:
        self._check()
        for hook in self.before_logs:
            assert callable(hook)
            hook()
        self.before_logs.clear()
        self.log_queries.append((from_block, to_block))
        topics = log_filter.topics[0] if log_filter.topics else None
        return [
            log
            for block in self.history[from_block : to_block + 1]
            for log in block.logs
            if log.address in log_filter.addresses
            and (topics is None or "0x" + log.topics[0].hex() in topics)
        ]

    async def close(self) -> None:
        return None


@dataclass
class Journal:
    """What the node saw: every handler call and every rollback."""

    done: list[ChainLog] = field(default_factory=list)
    undone: list[tuple[int, list[ChainLog]]] = field(default_factory=list)
    fail_handler: int = 0
    fail_rollback: int = 0

    async def handle(self, log: ChainLog) -> None:
        if self.fail_handler:
            self.fail_handler -= 1
            raise RuntimeError("handler crashed (test)")
        self.done.append(log)

    async def roll_back(self, fork_block: int, logs: Sequence[ChainLog]) -> None:
        if self.fail_rollback:
            self.fail_rollback -= 1
            raise RuntimeError("rollback hook crashed (test)")
        self.undone.append((fork_block, list(logs)))

    def net(self) -> set[tuple[str, int]]:
        """Keys acted on and not undone (each must have been acted on once)."""
        counts: dict[tuple[str, int], int] = {}
        for log in self.done:
            counts[log.key] = counts.get(log.key, 0) + 1
        for _, logs in self.undone:
            for log in logs:
                counts[log.key] = counts.get(log.key, 0) - 1
        assert all(c in (0, 1) for c in counts.values()), counts
        return {k for k, c in counts.items() if c == 1}


def make_listener(
    chain: FakeChain,
    journal: Journal,
    store: Path,
    *,
    confirmations: int,
    filters: Sequence[LogFilter] = (FILTER,),
    **options: object,
) -> Listener:
    return Listener(
        chain,
        None,
        filters,
        store,
        confirmations=confirmations,
        handler=journal.handle,
        on_rollback=journal.roll_back,
        backoff=FAST,
        poll_interval_s=0.005,
        **options,  # type: ignore[arg-type]
    )


@pytest.fixture
def chain() -> FakeChain:
    return FakeChain()


@pytest.fixture
def journal() -> Journal:
    return Journal()


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "data" / "listener.sqlite3"


# -- confirmations --------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_log_is_dispatched_once_it_is_n_blocks_deep(
    chain: FakeChain, journal: Journal, store: Path
) -> None:
    (emitted,) = chain.mine(Emit(data=b"task 1"))
    async with make_listener(chain, journal, store, confirmations=2) as listener:
        await listener.sync_once()
        chain.mine()
        await listener.sync_once()
        assert journal.done == []
        assert listener.status.processed_block == emitted.block_number - 1
        chain.mine()
        await listener.sync_once()
        assert journal.done == [emitted]
        chain.mine_empty(3)
        await listener.sync_once()
    assert journal.done == [emitted]
    assert journal.undone == []


@pytest.mark.asyncio
async def test_zero_confirmations_dispatch_at_the_head(
    chain: FakeChain, journal: Journal, store: Path
) -> None:
    async with make_listener(chain, journal, store, confirmations=0) as listener:
        first = chain.mine(Emit(data=b"a"), Emit(data=b"b"))
        await listener.sync_once()
        assert journal.done == first
        second = chain.mine(Emit(data=b"c"))
        await listener.sync_once()
    assert journal.done == first + second
    assert [log.position for log in journal.done] == sorted(log.position for log in journal.done)


@pytest.mark.asyncio
async def test_only_matching_logs_are_dispatched(chain: FakeChain, journal: Journal, store: Path) -> None:
    chain.mine(Emit(address=OTHER), Emit(topic=PONG), Emit(data=b"yes"))
    async with make_listener(chain, journal, store, confirmations=0) as listener:
        await listener.sync_once()
    assert [log.data for log in journal.done] == [b"yes"]


@pytest.mark.asyncio
async def test_a_log_matched_by_two_filters_is_dispatched_once(
    chain: FakeChain, journal: Journal, store: Path
) -> None:
    both = (FILTER, LogFilter(addresses=(EMITTER, OTHER)))
    chain.mine(Emit(), Emit(address=OTHER, topic=PONG))
    async with make_listener(chain, journal, store, confirmations=0, filters=both) as listener:
        await listener.sync_once()
    assert len(journal.done) == 2
    assert len({log.key for log in journal.done}) == 2


@pytest.mark.asyncio
async def test_long_backfills_are_read_in_bounded_ranges(
    chain: FakeChain, journal: Journal, store: Path
) -> None:
    for _ in range(10):
        chain.mine(Emit())
    async with make_listener(chain, journal, store, confirmations=1, max_block_range=4) as listener:
        await listener.sync_once()
    assert chain.log_queries == [(0, 3), (4, 7), (8, 9)]
    assert len(journal.done) == 9


# -- reorgs ---------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_reorg_before_n_confirmations_dispatches_nothing(
    chain: FakeChain, journal: Journal, store: Path
) -> None:
    async with make_listener(chain, journal, store, confirmations=3) as listener:
        chain.mine_empty(2)
        (doomed,) = chain.mine(Emit(data=b"orphaned"))
        chain.mine()
        await listener.sync_once()
        chain.drop(2)
        chain.mine_empty(6)
        await listener.sync_once()
        assert listener.status.reorgs == 1
        assert listener.status.processed_block == chain.height - 3 > doomed.block_number
    assert journal.done == []
    assert journal.undone == []


@pytest.mark.asyncio
async def test_a_reorg_after_dispatch_rolls_back_and_follows_the_new_branch(
    chain: FakeChain, journal: Journal, store: Path
) -> None:
    async with make_listener(chain, journal, store, confirmations=0) as listener:
        chain.mine()
        (kept,) = chain.mine(Emit(data=b"kept"))
        (gone,) = chain.mine(Emit(data=b"gone"))
        await listener.sync_once()
        chain.drop(1)
        (new,) = chain.mine(Emit(data=b"new"))
        await listener.sync_once()
        assert listener.status.rolled_back == 1
    assert journal.undone == [(kept.block_number, [gone])]
    assert journal.done == [kept, gone, new]
    assert journal.net() == {kept.key, new.key}


@pytest.mark.asyncio
async def test_a_transaction_reincluded_after_a_reorg_is_dispatched_again(
    chain: FakeChain, journal: Journal, store: Path
) -> None:
    async with make_listener(chain, journal, store, confirmations=0) as listener:
        (first,) = chain.mine(Emit(data=b"task"))
        await listener.sync_once()
        chain.drop(1)
        chain.mine()
        (again,) = chain.mine(Emit(data=b"task", tx=first.tx_hash))
        await listener.sync_once()
    assert again.key == first.key and again.block_hash != first.block_hash
    assert journal.undone == [(0, [first])]
    assert journal.done == [first, again]


@pytest.mark.asyncio
async def test_a_shorter_canonical_chain_rolls_back_the_dropped_blocks(
    chain: FakeChain, journal: Journal, store: Path
) -> None:
    async with make_listener(chain, journal, store, confirmations=0) as listener:
        chain.mine(Emit(data=b"stays"))
        dropped = chain.mine(Emit(data=b"x"), Emit(data=b"y")) + chain.mine(Emit(data=b"z"))
        await listener.sync_once()
        chain.drop(2)
        await listener.sync_once()
        assert listener.status.processed_block == 1
    assert journal.undone == [(1, dropped)]


@pytest.mark.asyncio
async def test_a_reorg_while_stopped_is_rolled_back_on_restart(
    chain: FakeChain, journal: Journal, store: Path
) -> None:
    async with make_listener(chain, journal, store, confirmations=0) as listener:
        (gone,) = chain.mine(Emit(data=b"gone"))
        await listener.sync_once()
    chain.drop(1)
    (new,) = chain.mine(Emit(data=b"new"))
    async with make_listener(chain, journal, store, confirmations=0) as listener:
        await listener.sync_once()
    assert journal.undone == [(0, [gone])]
    assert journal.done == [gone, new]


@pytest.mark.asyncio
async def test_a_reorg_deeper_than_the_window_stops_the_listener(
    chain: FakeChain, journal: Journal, store: Path
) -> None:
    chain.mine_empty(10)
    async with make_listener(
        chain, journal, store, confirmations=0, hash_window=4, replay_margin=2
    ) as listener:
        await listener.sync_once()
        chain.drop(6)
        chain.mine_empty(8)
        with pytest.raises(ReorgTooDeep, match="deeper than 4 blocks"):
            await listener.sync_once()


@pytest.mark.asyncio
async def test_a_chain_that_moves_between_reads_is_retried_not_dispatched(
    chain: FakeChain, journal: Journal, store: Path
) -> None:
    async with make_listener(chain, journal, store, confirmations=0) as listener:
        chain.mine(Emit(data=b"seen"))

        def reorg_now() -> None:
            chain.drop(1)
            chain.mine(Emit(data=b"replacement"))

        chain.before_logs.append(reorg_now)
        with pytest.raises(ListenerError, match="changed between reading"):
            await listener.sync_once()
        assert journal.done == []
        await listener.sync_once()
    assert [log.data for log in journal.done] == [b"replacement"]
    assert journal.undone == []


# -- checkpoint, replay, idempotency --------------------------------------------------------


@pytest.mark.asyncio
async def test_restart_resumes_from_the_checkpoint_and_executes_nothing_twice(
    chain: FakeChain, journal: Journal, store: Path
) -> None:
    chain.mine_empty(40)
    before = chain.mine(Emit(data=b"before"))
    async with make_listener(chain, journal, store, confirmations=0, replay_margin=8) as listener:
        await listener.sync_once()
    checkpoint = chain.height
    after = chain.mine(Emit(data=b"after"))
    chain.log_queries.clear()
    async with make_listener(chain, journal, store, confirmations=0, replay_margin=8) as listener:
        assert listener.status.processed_block is None
        await listener.sync_once()
    assert chain.log_queries == [(checkpoint - 8 + 1, chain.height)]
    assert journal.done == before + after


@pytest.mark.asyncio
async def test_a_failing_handler_is_retried_and_its_log_recorded_once(
    chain: FakeChain, journal: Journal, store: Path
) -> None:
    journal.fail_handler = 1
    logs = chain.mine(Emit(data=b"a"), Emit(data=b"b"))
    async with make_listener(chain, journal, store, confirmations=0) as listener:
        with pytest.raises(HandlerFailed, match="handler failed on log") as failure:
            await listener.sync_once()
        assert isinstance(failure.value.__cause__, RuntimeError)
        assert listener.status.processed_block == -1
        await listener.sync_once()
        await listener.sync_once()
    assert journal.done == logs


@pytest.mark.asyncio
async def test_a_failing_rollback_hook_is_retried_before_anything_is_forgotten(
    chain: FakeChain, journal: Journal, store: Path
) -> None:
    async with make_listener(chain, journal, store, confirmations=0) as listener:
        (gone,) = chain.mine(Emit(data=b"gone"))
        await listener.sync_once()
        chain.drop(1)
        chain.mine()
        journal.fail_rollback = 1
        with pytest.raises(HandlerFailed, match="on_rollback"):
            await listener.sync_once()
        await listener.sync_once()
    assert journal.undone == [(0, [gone])]


@pytest.mark.asyncio
async def test_a_store_of_another_chain_or_filter_set_is_refused(
    chain: FakeChain, journal: Journal, store: Path
) -> None:
    async with make_listener(chain, journal, store, confirmations=0) as listener:
        await listener.sync_once()
    with pytest.raises(StoreMismatch, match="chain 31337"):
        async with make_listener(FakeChain(chain=5), journal, store, confirmations=0) as listener:
            await listener.sync_once()
    other = (LogFilter(addresses=(OTHER,)),)
    with pytest.raises(StoreMismatch, match="other log filters"):
        async with make_listener(chain, journal, store, confirmations=0, filters=other) as listener:
            await listener.sync_once()


@pytest.mark.asyncio
async def test_one_store_serves_one_listener_at_a_time(
    chain: FakeChain, journal: Journal, store: Path
) -> None:
    async with make_listener(chain, journal, store, confirmations=0):
        with pytest.raises(ListenerError, match="in use"):
            async with make_listener(chain, journal, store, confirmations=0):
                pass


def test_bad_settings_are_refused(chain: FakeChain, journal: Journal, store: Path) -> None:
    with pytest.raises(ValueError, match="confirmations < hash_window"):
        make_listener(chain, journal, store, confirmations=8, hash_window=8)
    with pytest.raises(ValueError, match="replay_margin"):
        make_listener(chain, journal, store, confirmations=0, hash_window=8, replay_margin=9)
    with pytest.raises(ValueError, match="LogFilter"):
        make_listener(chain, journal, store, confirmations=0, filters=())


# -- the run loop ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_run_follows_new_blocks_and_returns_when_stopped(
    chain: FakeChain, journal: Journal, store: Path
) -> None:
    listener = make_listener(chain, journal, store, confirmations=1)
    stop = asyncio.Event()
    task = asyncio.create_task(listener.run(stop))
    logs = chain.mine(Emit(data=b"a"))
    chain.mine()
    async with asyncio.timeout(WAIT_S):
        status = await listener.wait_until(lambda s: s.dispatched == 1)
    assert status.transport == "poll"
    stop.set()
    async with asyncio.timeout(WAIT_S):
        await task
    assert journal.done == logs


@pytest.mark.asyncio
async def test_run_rides_out_an_outage_shorter_than_the_budget(
    chain: FakeChain, journal: Journal, store: Path
) -> None:
    chain.fail_calls = FAST.failure_budget - 1
    logs = chain.mine(Emit())
    listener = make_listener(chain, journal, store, confirmations=0)
    stop = asyncio.Event()
    task = asyncio.create_task(listener.run(stop))
    async with asyncio.timeout(WAIT_S):
        status = await listener.wait_until(lambda s: s.dispatched == 1)
    assert status.consecutive_failures == 0
    stop.set()
    await task
    assert journal.done == logs


@pytest.mark.asyncio
async def test_run_halts_with_a_clear_error_when_the_budget_is_spent(
    chain: FakeChain, journal: Journal, store: Path
) -> None:
    chain.down = True
    listener = make_listener(chain, journal, store, confirmations=0)
    async with asyncio.timeout(WAIT_S):
        with pytest.raises(ListenerHalted, match="gave up after 4 consecutive failures") as halted:
            await listener.run(asyncio.Event())
    assert isinstance(halted.value.__cause__, ListenerRpcError)
    assert listener.status.consecutive_failures == 4


# -- the model: any history of mining, reorgs and restarts ---------------------------------

mine = st.tuples(st.just("mine"), st.integers(1, 2), st.integers(1, 3))
sync = st.tuples(st.just("sync"), st.just(0), st.just(0))
step = st.one_of(
    mine,
    mine,
    sync,
    sync,
    st.tuples(st.just("mine"), st.just(0), st.integers(1, 4)),
    st.tuples(st.just("reorg"), st.integers(1, 4), st.integers(0, 5)),
    st.tuples(st.just("restart"), st.just(0), st.just(0)),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(confirmations=st.integers(0, 3), steps=st.lists(step, min_size=6, max_size=30))
def test_any_history_ends_with_exactly_the_confirmed_canonical_logs_acted_on(
    confirmations: int, steps: list[tuple[str, int, int]]
) -> None:
    """Net of rollbacks, the node has acted once on each confirmed canonical log and on no
    log that left the chain; every dispatch was confirmed and canonical when it happened."""
    chain = FakeChain()
    journal = Journal()

    async def checked_handle(log: ChainLog) -> None:
        assert chain.canonical(log.block_hash)
        assert chain.height - log.block_number >= confirmations
        await journal.handle(log)

    async def scenario(path: Path) -> None:
        def fresh() -> Listener:
            return Listener(
                chain,
                None,
                [FILTER],
                path,
                confirmations=confirmations,
                handler=checked_handle,
                on_rollback=journal.roll_back,
                hash_window=128,
                replay_margin=4,
                max_block_range=3,
            )

        listener = fresh()
        await listener.__aenter__()
        for kind, a, b in steps:
            if kind == "mine":
                for _ in range(b):
                    chain.mine(*[Emit(data=bytes([i])) for i in range(a)])
            elif kind == "reorg":
                dropped = chain.drop(min(a, chain.height)) if chain.height else []
                chain.mine(*[Emit(data=log.data, tx=log.tx_hash) for log in dropped[::2]])
                chain.mine_empty(b)
            elif kind == "sync":
                await listener.sync_once()
            else:
                await listener.aclose()
                listener = fresh()
                await listener.__aenter__()
        await listener.sync_once()
        await listener.aclose()

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(scenario(Path(tmp) / "listener.sqlite3"))

    canonical = {log.key for block in chain.history for log in block.logs}
    confirmed = {
        log.key for block in chain.history[: max(0, chain.height - confirmations + 1)] for log in block.logs
    }
    # A log dispatched when it was N deep stays acted on while its block is canonical, even if
    # the chain then got shorter; so the net set may exceed what is N deep at the end.
    net = journal.net()
    assert confirmed <= net <= canonical
    event(f"rollbacks: {min(len(journal.undone), 2)}")
    event(f"logs acted on: {min(len(net), 3)}")
