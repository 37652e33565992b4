"""Bounded exponential backoff with a failure budget."""

from dataclasses import dataclass

__all__ = ["Backoff"]


@dataclass(frozen=True)
class Backoff:
    """Retry policy: delays double from `initial_delay_s` up to `max_delay_s`.

    `failure_budget` is the number of consecutive failed attempts after which the listener
    stops (it waits between them, never after the last). A success resets the count.
    """

    initial_delay_s: float = 0.1
    max_delay_s: float = 5.0
    failure_budget: int = 30

    def __post_init__(self) -> None:
        if self.initial_delay_s < 0 or self.max_delay_s < self.initial_delay_s:
            raise ValueError("need 0 <= initial_delay_s <= max_delay_s")
        if self.failure_budget < 1:
            raise ValueError("failure_budget must be at least 1")

    def delay_s(self, failures: int) -> float:
        """Delay after the `failures`-th consecutive failure (1-based)."""
        if failures < 1:
            return 0.0
        exponent = min(failures - 1, 62)  # 2**62 already exceeds any sane cap
        return float(min(self.max_delay_s, self.initial_delay_s * 2**exponent))

    def exhausted(self, failures: int) -> bool:
        """Whether `failures` consecutive failures spend the budget."""
        return failures >= self.failure_budget

    def total_wait_s(self) -> float:
        """How long the listener waits in all before giving up (for messages)."""
        return sum(self.delay_s(k) for k in range(1, self.failure_budget))
