"""Row alignment for a vertical (PSI-aligned join) stats query (docs/STATS_NETWORK.md).

A PSI task with ``--reveal both`` gives each side its own rows of the intersection, each in
its own file's order, so the two sides' rows are not yet aligned. Both sides then sort their
matched rows by the key as PSI normalized it (NFC, trimmed, optionally case-folded; compared
as UTF-8 bytes): the same keys on both sides, so the same order, so row i of one side and row
i of the other are one entity. The key column stays in the provider's file (its own data) and
is left out of the declared schema, so it never enters the MPC table.
"""

from __future__ import annotations

import csv
import io

from compute.errors import SpecError
from compute.psi.keys import normalize_value
from compute.psi.spec import CaseRule

from .node.psi_datasets import parse_csv_table

__all__ = ["align_csv"]


def align_csv(data: bytes, key: str, case: CaseRule = CaseRule.EXACT) -> tuple[bytes, int]:
    """The CSV `data` (header first) with its rows sorted by the normalized `key`, and the row
    count. `SpecError` for a missing key column, an empty key or a key held by two rows (an
    alignment needs one row per key); messages name counts, never key values."""
    table = parse_csv_table(data)
    if key not in table.columns:
        raise SpecError(f"key column {key!r} is not in the file (columns: {', '.join(table.columns)})")
    j = table.columns.index(key)
    keyed = [(normalize_value(row[j], case).encode(), row) for row in table.rows]
    empty = sum(1 for k, _ in keyed if not k)
    if empty:
        raise SpecError(f"{empty} rows have an empty key {key!r}: they cannot be aligned")
    distinct = len({k for k, _ in keyed})
    if distinct != len(keyed):
        raise SpecError(
            f"{len(keyed) - distinct} rows repeat a key {key!r} held by another row: an alignment "
            "needs one row per key"
        )
    keyed.sort(key=lambda item: item[0])
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(table.columns)
    writer.writerows(row for _, row in keyed)
    return out.getvalue().encode(), len(keyed)
