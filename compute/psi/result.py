"""Result types shared by every PSI engine."""

from __future__ import annotations

from dataclasses import dataclass, field

from compute.psi.labeled_dh import LabelTable
from compute.psi.spec import LabeledAlgorithm, Protocol, Reveal


@dataclass(frozen=True)
class PsiResult:
    """What one party of a PSI run learned.

    A receiver with reveal=rows gets its own rows whose key is in the intersection
    (`row_indices` into its input, ascending, and the rows themselves) and the number of
    distinct intersecting keys. With reveal=size it gets only `intersection_size`. A
    non-receiver gets neither: `intersection_size` is None and the row tuples are empty.
    `peer_size` is the peer's distinct key count where the protocol reveals it, else None.
    """

    protocol: Protocol
    reveal: Reveal
    rank: int
    is_receiver: bool
    intersection_size: int | None
    row_indices: tuple[int, ...]
    rows: tuple[tuple[str, ...], ...]
    own_size: int
    peer_size: int | None


@dataclass(frozen=True)
class LabeledMatch:
    """One requester row whose key the provider holds, with the provider's labels."""

    row_index: int
    labels: tuple[str, ...]


@dataclass(frozen=True)
class LabeledResult:
    """The requester's output of labeled PSI: its matching rows (ascending) and their labels.

    `query_size` counts distinct keys sent. `table_size` is the provider's distinct key count
    (DH reveals it; HE does not: None). `table` is the DH provider's encrypted table, to pass
    back as `cached_table` on the next query so it is not sent again (None for HE).
    """

    algorithm: LabeledAlgorithm
    label_columns: tuple[str, ...]
    matches: tuple[LabeledMatch, ...]
    query_size: int
    table_size: int | None
    table: LabelTable | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class ProviderReport:
    """All the provider learns from serving one labeled PSI query: its size.

    DH: the exact number of distinct query keys. HE: batches x batch_size, an upper bound.
    """

    algorithm: LabeledAlgorithm
    query_size: int
    table_size: int
