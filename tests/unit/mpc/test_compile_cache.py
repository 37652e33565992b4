"""The on-disk cache of compiled executables (compute/mpc/cache.py), in one process."""

from __future__ import annotations

from pathlib import Path

import pytest

from compute.mpc import Accuracy, Field, PartInfo, Protocol, cache, parse_sql, plan_query, simulate
from compute.mpc.engine import Compiled
from compute.mpc.plan import Plan

from .helpers import PEOPLE, TO_ZERO, assert_within, frame, people

SQL = "SELECT mean(income), count(*) FROM people WHERE age > 40"


LOOSE = Accuracy(1e-3)


def _plan(accuracy: Accuracy = LOOSE) -> Plan:
    query = parse_sql(SQL, [PEOPLE], min_group_size=5, reveal=TO_ZERO, accuracy=accuracy)
    return plan_query(query, [PartInfo("people", "a", 40), PartInfo("people", "b", 30)])


class Counting:
    """How often the fixture saw compile_uncached called."""

    calls = 0


@pytest.fixture
def compiles(monkeypatch: pytest.MonkeyPatch) -> Counting:
    counter = Counting()
    original = cache.compile_uncached

    def wrapped(plan: Plan) -> Compiled:
        counter.calls += 1
        return original(plan)

    monkeypatch.setattr(cache, "compile_uncached", wrapped)
    return counter


def test_a_second_compile_of_the_same_plan_is_read_from_the_cache(tmp_path: Path, compiles: Counting) -> None:
    plan = _plan()
    first, hit = cache.load_or_compile(plan, Protocol.ABY3, tmp_path)
    assert not hit and compiles.calls == 1
    entries = list(tmp_path.iterdir())
    assert [p.name for p in entries] == [cache.cache_key(plan, Protocol.ABY3).hex() + cache.SUFFIX]
    second, hit = cache.load_or_compile(plan, Protocol.ABY3, tmp_path)
    assert hit and compiles.calls == 1 and second == first
    assert cache.compile_plan(plan, cache_dir=None) == first  # no cache: compiles (same program)
    assert compiles.calls == 2


def test_keys_separate_protocols_and_numerics() -> None:
    plan = _plan()
    forced = _plan(Accuracy(1e-3, Field.FM64, 18))
    assert plan.numerics != forced.numerics
    keys = {
        cache.cache_key(plan, Protocol.ABY3),
        cache.cache_key(plan, Protocol.CHEETAH),
        cache.cache_key(forced, Protocol.ABY3),
    }
    assert len(keys) == 3
    assert cache.cache_key(_plan(), Protocol.ABY3) == cache.cache_key(plan, Protocol.ABY3)


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty", "other-key", "garbage"])
def test_a_damaged_entry_is_ignored_and_rewritten(tmp_path: Path, compiles: Counting, damage: str) -> None:
    plan = _plan()
    good, _ = cache.load_or_compile(plan, Protocol.ABY3, tmp_path)
    path = tmp_path / (cache.cache_key(plan, Protocol.ABY3).hex() + cache.SUFFIX)
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        path.write_bytes(data[:-10] + bytes([data[-10] ^ 1]) + data[-9:])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "other-key":  # a valid entry of another plan under this name
        cache.load_or_compile(plan, Protocol.CHEETAH, tmp_path)
        other = tmp_path / (cache.cache_key(plan, Protocol.CHEETAH).hex() + cache.SUFFIX)
        path.write_bytes(other.read_bytes())
    else:
        path.write_bytes(b"\x00" * 5000)
    calls = compiles.calls
    again, hit = cache.load_or_compile(plan, Protocol.ABY3, tmp_path)
    assert not hit and again == good and compiles.calls == calls + 1
    assert path.read_bytes() == data  # rewritten whole
    assert cache.load_or_compile(plan, Protocol.ABY3, tmp_path) == (good, True)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_an_unwritable_cache_directory_only_costs_the_cache(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    compiled, hit = cache.load_or_compile(_plan(), Protocol.ABY3, not_a_dir)
    assert not hit and compiled.executable
    assert "could not write" in caplog.text


def test_simulate_uses_the_cache(tmp_path: Path, compiles: Counting) -> None:
    data = {"people": [people(40, 5), people(30, 6)]}
    query = parse_sql(SQL, [PEOPLE], min_group_size=5, reveal=TO_ZERO, accuracy=Accuracy(1e-3))
    first = simulate(query, data, cache_dir=tmp_path)
    second = simulate(query, data, cache_dir=tmp_path)
    assert compiles.calls == 1
    df = frame(data["people"])
    for result in (first, second):
        assert result.value("count(*)") == int((df.age > 40).sum())
        assert_within(result, "mean(people.income)", "*", df[df.age > 40].income.mean())
