"""Properties of the election mirror (its equality with the contract is checked on anvil in
tests/integration/test_chain.py)."""

from collections import Counter

import pytest
from eth_hash.auto import keccak
from hypothesis import given, settings
from hypothesis import strategies as st

from incentives.committee import NotEnoughNodes, draw_value, elect, node_weight, task_seed

seeds = st.binary(min_size=32, max_size=32)
weight_lists = st.lists(st.one_of(st.just(0), st.integers(1, 10**24)), min_size=1, max_size=40)


@st.composite
def elections(draw: st.DrawFn) -> tuple[bytes, list[int], int, list[int]]:
    weights = draw(weight_lists)
    n = len(weights)
    exclude = draw(st.lists(st.integers(0, n + 3), max_size=6))
    eligible = sum(1 for i, w in enumerate(weights, 1) if w > 0 and i not in exclude)
    k = draw(st.integers(0, eligible))
    return draw(seeds), weights, k, exclude


@given(elections())
def test_picks_k_distinct_positive_non_excluded_nodes(case: tuple[bytes, list[int], int, list[int]]) -> None:
    seed, weights, k, exclude = case
    picked = elect(seed, weights, k, exclude)
    assert len(picked) == k
    assert len(set(picked)) == k
    for index in picked:
        assert 1 <= index <= len(weights)
        assert weights[index - 1] > 0
        assert index not in exclude


@given(elections())
def test_each_draw_is_the_election_of_one_fewer(case: tuple[bytes, list[int], int, list[int]]) -> None:
    seed, weights, k, exclude = case
    full = elect(seed, weights, k, exclude)
    for j in range(k):
        assert elect(seed, weights, j, exclude) == full[:j]


@given(elections(), st.integers(1, 5))
def test_zero_weight_nodes_change_nothing(case: tuple[bytes, list[int], int, list[int]], extra: int) -> None:
    seed, weights, k, exclude = case
    in_range = [i for i in exclude if 1 <= i <= len(weights)]
    assert elect(seed, weights + [0] * extra, k, in_range) == elect(seed, weights, k, in_range)
    zero = [i for i, w in enumerate(weights, 1) if w == 0]
    assert elect(seed, weights, k, in_range + zero) == elect(seed, weights, k, in_range)


@given(seeds, weight_lists, st.lists(st.integers(1, 40), max_size=5))
def test_not_enough_nodes_reports_the_eligible_count(
    seed: bytes, weights: list[int], exclude: list[int]
) -> None:
    eligible = sum(1 for i, w in enumerate(weights, 1) if w > 0 and i not in exclude)
    with pytest.raises(NotEnoughNodes) as info:
        elect(seed, weights, eligible + 1, exclude)
    assert (info.value.requested, info.value.eligible) == (eligible + 1, eligible)


@given(seeds, st.integers(0, 100))
def test_first_draw_follows_the_prefix_sum_rule(seed: bytes, extra_weight: int) -> None:
    weights = [3, 0, 5, 1 + extra_weight, 2]
    r = draw_value(seed, 0) % sum(weights)
    prefix, expected = 0, 0
    for index, weight in enumerate(weights, 1):
        prefix += weight
        if prefix > r:
            expected = index
            break
    assert elect(seed, weights, 1) == [expected]


def test_the_pick_is_stake_weighted() -> None:
    weights = [1, 3, 0, 6]
    counts = Counter(elect(keccak(i.to_bytes(4, "big")), weights, 1)[0] for i in range(4000))
    assert counts[3] == 0
    # expected 400 / 1200 / 2400; binomial sd <= 32, so 5 sd bounds
    assert abs(counts[1] - 400) < 160
    assert abs(counts[2] - 1200) < 160
    assert abs(counts[4] - 2400) < 160


def test_task_seed_is_keccak_of_the_abi_encoded_pair() -> None:
    randao = bytes(range(32))
    assert task_seed(randao, 7) == keccak(randao + (7).to_bytes(32, "big"))
    assert task_seed(int.from_bytes(randao, "big"), 7) == task_seed(randao, 7)
    assert task_seed(randao, 7) != task_seed(randao, 8)


def test_draw_value_is_keccak_of_seed_and_draw_index() -> None:
    seed = b"\x11" * 32
    assert draw_value(seed, 3) == int.from_bytes(keccak(seed + (3).to_bytes(32, "big")), "big")


@settings(max_examples=50)
@given(st.integers(0, 10**24), st.integers(0, 10**24))
def test_node_weight_is_the_stake_at_or_above_the_minimum(stake: int, minimum: int) -> None:
    assert node_weight(stake, minimum) == (stake if stake >= minimum else 0)


def test_rejects_malformed_input() -> None:
    with pytest.raises(ValueError):
        elect(b"short", [1], 1)
    with pytest.raises(ValueError):
        elect(b"\x00" * 32, [1, -1], 1)
