"""The integer money splits conserve every wei and pay by the documented rules."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from incentives.rewards import BPS, DatasetPayee, split_finalization, split_slash

UINT96 = 2**96 - 1
addresses = st.integers(1, 2**160 - 1).map(lambda a: f"0x{a:040x}")


@given(
    fee=st.integers(0, UINT96),
    bps=st.integers(0, BPS),
    signers=st.lists(addresses, min_size=1, max_size=8, unique=True),
    prices=st.lists(st.integers(0, 10**24), max_size=8),
)
def test_finalization_credits_sum_to_the_escrow(
    fee: int, bps: int, signers: list[str], prices: list[int]
) -> None:
    treasury = "treasury"
    datasets = [DatasetPayee(f"owner{i}", p) for i, p in enumerate(prices)]
    split = split_finalization(fee, bps, signers, treasury, datasets)
    assert split.total_wei == fee + sum(prices)

    owed = split.owed()
    shares = {owed.get(s, 0) for s in signers}
    assert len(shares) == 1  # every signer gets the same share
    share = shares.pop()
    protocol_fee = fee * bps // BPS
    assert share == (fee - protocol_fee) // len(signers)
    remainder = owed.get(treasury, 0) - protocol_fee
    assert 0 <= remainder < len(signers)
    for i, price in enumerate(prices):
        assert owed.get(f"owner{i}", 0) == price
    assert all(c.amount_wei > 0 for c in split.credits)


@given(slashed=st.integers(0, UINT96), bps=st.integers(0, BPS))
def test_slash_credits_sum_to_the_slash(slashed: int, bps: int) -> None:
    split = split_slash(slashed, bps, reporter="reporter", treasury="treasury")
    assert split.total_wei == slashed
    assert split.owed().get("reporter", 0) == slashed * bps // BPS


def test_a_worked_example() -> None:
    split = split_finalization(1_000, 700, ["a", "b", "c"], "t", [DatasetPayee("o", 50)])
    # protocol fee 70; (1000 - 70) // 3 = 310 each; treasury 1000 - 930 = 70
    assert [(c.account, c.amount_wei) for c in split.credits] == [
        ("t", 70),
        ("a", 310),
        ("b", 310),
        ("c", 310),
        ("o", 50),
    ]


def test_rejects_out_of_range_parameters() -> None:
    with pytest.raises(ValueError):
        split_finalization(1, BPS + 1, ["a"], "t")
    with pytest.raises(ValueError):
        split_finalization(1, 0, [], "t")
    with pytest.raises(ValueError):
        split_slash(-1, 0, "r", "t")
