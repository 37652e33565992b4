"""`ChainTaskParties` over an in-memory TaskManager that counts its reads: "no such task"
is never cached, known parties are cached for the TTL, and a caller without a role makes
a set at least `miss_refresh_s` old be read again (at most once per that interval)."""

import asyncio
from types import SimpleNamespace
from typing import Any, cast

import pytest
from eth_account import Account

from oracle.chain.contracts import DatumContracts
from oracle.chain.errors import ChainError, ContractRevert
from oracle.chain.rpc import Chain
from oracle.p2p import ChainTaskParties, TaskRole
from oracle.p2p.errors import AuthorizerUnavailable

REQUESTER = Account.create().address
OTHER = Account.create().address
MEMBER = Account.create().address
STRANGER = Account.create().address
ZERO = "0x" + "00" * 20
AS_REQUESTER = frozenset({TaskRole.REQUESTER, TaskRole.RECEIVER})


class UnknownTask(ContractRevert):
    name = "TaskManager__UnknownTask"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class TaskManager:
    """`Chain.call` for getTask, getCommittee and getTaskDatasets; counts getTask reads."""

    def __init__(self) -> None:
        self.tasks: dict[int, tuple[str, tuple[str, ...]]] = {}
        self.reads = 0
        self.down = False

    def call(self, contract: Any, fn_name: str, *args: Any, block: Any = "latest") -> Any:
        if self.down:
            raise ChainError("connection refused")
        (task_id,) = args
        if task_id not in self.tasks:
            if fn_name == "getTask":
                self.reads += 1
            raise UnknownTask(b"\0" * 4, b"", {"taskId": task_id})
        requester, committee = self.tasks[task_id]
        if fn_name == "getTask":
            self.reads += 1
            return (requester,)
        if fn_name == "getCommittee":
            return [*committee, ZERO]
        assert fn_name == "getTaskDatasets"
        return []


def parties(chain: TaskManager, clock: Clock, **kw: Any) -> ChainTaskParties:
    contracts = cast(DatumContracts, SimpleNamespace(tasks="tasks", data="data"))
    return ChainTaskParties(cast(Chain, chain), contracts, clock=clock, **kw)


@pytest.mark.asyncio
async def test_an_unknown_task_is_asked_again_and_found_once_it_exists() -> None:
    chain, clock = TaskManager(), Clock()
    p = parties(chain, clock)
    assert await p.roles_of(7, REQUESTER) == frozenset()
    chain.tasks[7] = (REQUESTER, (MEMBER,))  # requested a moment later; the clock does not move
    assert await p.roles_of(7, REQUESTER) == AS_REQUESTER
    assert await p.roles_of(7, MEMBER) == frozenset({TaskRole.COMMITTEE})
    assert chain.reads == 2  # the second answer came from the chain, the third from the cache


@pytest.mark.asyncio
async def test_concurrent_questions_about_an_unknown_task_share_one_read() -> None:
    chain, clock = TaskManager(), Clock()
    p = parties(chain, clock)
    answers = await asyncio.gather(*(p.roles_of(9, REQUESTER) for _ in range(5)))
    assert answers == [frozenset()] * 5 and chain.reads == 1
    assert await p.roles_of(9, REQUESTER) == frozenset() and chain.reads == 2  # and nothing was cached


@pytest.mark.asyncio
async def test_known_parties_are_cached_until_the_ttl_runs_out() -> None:
    chain, clock = TaskManager(), Clock()
    chain.tasks[3] = (REQUESTER, (MEMBER,))
    p = parties(chain, clock, ttl_s=30.0)
    for _ in range(5):
        assert await p.roles_of(3, REQUESTER) == AS_REQUESTER
        assert await p.roles_of(3, MEMBER) == frozenset({TaskRole.COMMITTEE})
    assert chain.reads == 1
    clock.now += 30.0
    assert await p.roles_of(3, REQUESTER) == AS_REQUESTER and chain.reads == 2


@pytest.mark.asyncio
async def test_a_stale_set_refuses_for_at_most_miss_refresh_s() -> None:
    chain, clock = TaskManager(), Clock()
    chain.tasks[5] = (REQUESTER, (MEMBER,))
    p = parties(chain, clock, ttl_s=30.0, miss_refresh_s=1.0)
    assert await p.roles_of(5, REQUESTER) == AS_REQUESTER
    chain.tasks[5] = (OTHER, (MEMBER,))  # a reorg gave the id to another requester's task
    clock.now += 0.5
    assert await p.roles_of(5, OTHER) == frozenset() and chain.reads == 1  # too fresh to re-read
    clock.now += 0.5
    assert await p.roles_of(5, OTHER) == AS_REQUESTER and chain.reads == 2
    assert await p.roles_of(5, REQUESTER) == frozenset() and chain.reads == 2


@pytest.mark.asyncio
async def test_callers_without_a_role_cost_one_read_per_interval() -> None:
    chain, clock = TaskManager(), Clock()
    chain.tasks[5] = (REQUESTER, (MEMBER,))
    p = parties(chain, clock, miss_refresh_s=1.0)
    assert await p.roles_of(5, REQUESTER) == AS_REQUESTER
    for step in range(1, 4):
        clock.now += 1.0
        for _ in range(20):
            assert await p.roles_of(5, STRANGER) == frozenset()
        assert chain.reads == 1 + step
        assert await p.roles_of(5, MEMBER) == frozenset({TaskRole.COMMITTEE})  # members: cache hits
        assert chain.reads == 1 + step


@pytest.mark.asyncio
async def test_an_unreadable_chain_is_unavailable_not_unknown() -> None:
    chain, clock = TaskManager(), Clock()
    chain.down = True
    p = parties(chain, clock)
    with pytest.raises(AuthorizerUnavailable):
        await p.roles_of(1, REQUESTER)
    chain.down = False
    chain.tasks[1] = (REQUESTER, ())
    assert await p.roles_of(1, REQUESTER) == AS_REQUESTER
