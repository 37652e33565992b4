"""Integer money splits, mirrored from `TaskManager` (finalization, refund, slash).

All amounts are token wei. Every function returns the credits the contract writes to its
`owed` ledger, in the order it writes them, and the credits always add up to the amount
split: nothing is created or lost to rounding.
"""

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["BPS", "Credit", "DatasetPayee", "Split", "split_finalization", "split_slash"]

BPS = 10_000


@dataclass(frozen=True)
class Credit:
    """`amount_wei` credited to `account` (an address or a role name)."""

    account: str
    amount_wei: int


@dataclass(frozen=True)
class DatasetPayee:
    """A dataset's owner and the price snapshotted when the task consumed it."""

    owner: str
    price_wei: int


@dataclass(frozen=True)
class Split:
    """The credits of one money event, in the contract's order."""

    credits: tuple[Credit, ...]

    @property
    def total_wei(self) -> int:
        """Sum of every credit."""
        return sum(c.amount_wei for c in self.credits)

    def owed(self) -> dict[str, int]:
        """Credits summed per account (an account may be credited twice, e.g. treasury)."""
        totals: dict[str, int] = {}
        for credit in self.credits:
            totals[credit.account] = totals.get(credit.account, 0) + credit.amount_wei
        return totals


def _check_bps(name: str, value: int) -> None:
    if not 0 <= value <= BPS:
        raise ValueError(f"{name} must be within 0..{BPS}, got {value}")


def split_finalization(
    fee_wei: int,
    protocol_fee_bps: int,
    signers: Sequence[str],
    treasury: str,
    datasets: Sequence[DatasetPayee] = (),
) -> Split:
    """Split a finalized task's escrow (`fee_wei` + dataset prices).

    The treasury gets ``fee_wei * protocol_fee_bps // 10000`` plus the remainder of the
    equal division among the signers; each signer gets ``(fee_wei - protocolFee) // n``;
    each dataset's price goes to its owner. Zero credits are skipped, as on chain.
    """
    if fee_wei < 0 or any(d.price_wei < 0 for d in datasets):
        raise ValueError("amounts must be non-negative")
    if not signers:
        raise ValueError("a finalized task has at least one signer")
    _check_bps("protocol_fee_bps", protocol_fee_bps)
    protocol_fee_wei = fee_wei * protocol_fee_bps // BPS
    share_wei = (fee_wei - protocol_fee_wei) // len(signers)
    treasury_wei = fee_wei - share_wei * len(signers)
    credits = [Credit(treasury, treasury_wei)]
    credits += [Credit(signer, share_wei) for signer in signers]
    credits += [Credit(d.owner, d.price_wei) for d in datasets]
    return Split(tuple(c for c in credits if c.amount_wei > 0))


def split_slash(slashed_wei: int, reporter_reward_bps: int, reporter: str, treasury: str) -> Split:
    """Split a slash that landed in the TaskManager: the reporter's share, the rest to the treasury."""
    if slashed_wei < 0:
        raise ValueError("amounts must be non-negative")
    _check_bps("reporter_reward_bps", reporter_reward_bps)
    reporter_wei = slashed_wei * reporter_reward_bps // BPS
    credits = (Credit(reporter, reporter_wei), Credit(treasury, slashed_wei - reporter_wei))
    return Split(tuple(c for c in credits if c.amount_wei > 0))
