"""Vertical (PSI-aligned join) stats on the client side: the alignment of each side's PSI
rows, several schemas on the command line, one table per dataset in order, and the refusal of
unequal committed row counts before any request (docs/STATS_NETWORK.md)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from compute.errors import ConfigError, SpecError
from compute.mpc import Column, TableSchema
from compute.psi.spec import CaseRule
from oracle.client_stats import prepare_stats
from oracle.stats_align import align_csv

SHOP = TableSchema("a", (Column.number("unit_price", 0, 500), Column.category("channel", ("web", "store"))))
LOGISTICS = TableSchema("b", (Column.number("units", 0, 400, integer=True),))
QUERY = "SELECT sum(a.unit_price * b.units), count(*) FROM a JOIN b WHERE b.units > 100 GROUP BY a.channel"


def test_both_sides_sort_to_the_same_order_whatever_their_file_order() -> None:
    shop = b"id,unit_price,channel\nk3,1.50,web\n k1 ,2.00,store\nk2,3.25,web\n"
    logistics = b"units,id\n7,k2\n9,k3\n5,k1\n"
    a, rows_a = align_csv(shop, "id")
    b, rows_b = align_csv(logistics, "id")
    assert rows_a == rows_b == 3
    assert a.decode().splitlines() == [
        "id,unit_price,channel",
        " k1 ,2.00,store",
        "k2,3.25,web",
        "k3,1.50,web",
    ]
    assert b.decode().splitlines() == ["units,id", "5,k1", "7,k2", "9,k3"]
    # casefold: keys that PSI matched case-insensitively sort alike on both sides
    upper, _ = align_csv(b"id,x\nB,1\na,2\n", "id", CaseRule.CASEFOLD)
    lower, _ = align_csv(b"id,y\nb,3\nA,4\n", "id", CaseRule.CASEFOLD)
    assert [r.split(",")[0].lower() for r in upper.decode().splitlines()[1:]] == ["a", "b"]
    assert [r.split(",")[0].lower() for r in lower.decode().splitlines()[1:]] == ["a", "b"]


def test_alignment_refuses_what_has_no_one_row_per_key() -> None:
    with pytest.raises(SpecError, match="key column 'id' is not in the file"):
        align_csv(b"key,x\n1,2\n", "id")
    with pytest.raises(SpecError, match="1 rows have an empty key") as empty:
        align_csv(b"id,x\n,2\nsecret-key,3\n", "id")
    assert "secret" not in str(empty.value)
    with pytest.raises(SpecError, match="1 rows repeat a key") as twice:
        align_csv(b"id,x\nsecret-key,2\nsecret-key ,3\n", "id")
    assert "secret" not in str(twice.value)


def test_the_cli_takes_several_schema_files(tmp_path: Path) -> None:
    from oracle.cli.task_stats import _tables

    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(SHOP.to_json()))
    b.write_text(json.dumps(LOGISTICS.to_json()))
    assert _tables([f"{a},{b}"]) == [SHOP, LOGISTICS]
    assert _tables([str(a), str(b)]) == [SHOP, LOGISTICS]
    assert _tables(a) == [SHOP]
    with pytest.raises(SpecError, match="cannot read"):
        _tables([f"{a},{tmp_path / 'missing.json'}"])
    with pytest.raises(ConfigError):
        _tables([","])


class _Chain:
    """The one chain call `prepare_stats` makes: getAsset(id) -> (owner, price, isModel,
    revoked, rowCount, metadataHash, policy, uri)."""

    def __init__(self, rows: dict[int, int]) -> None:
        self.rows = rows

    def call(self, _contract: object, name: str, dataset_id: int) -> tuple[Any, ...]:
        assert name == "getAsset"
        policy = (1 << 3, True, 0, 10, 5)
        return (f"0x{dataset_id:040x}", 0, False, False, self.rows[dataset_id], b"", policy, "")


class _Contracts:
    data = object()


def prepare(rows: dict[int, int], tables: list[TableSchema], **kw: Any) -> Any:
    return asyncio.run(
        prepare_stats(
            _Chain(rows),  # type: ignore[arg-type]
            _Contracts(),  # type: ignore[arg-type]
            dataset_ids=list(rows),
            tables=tables,
            sql=QUERY,
            output="requester",
            **kw,
        )
    )


def test_one_schema_per_dataset_pairs_them_in_order_and_plans_the_join() -> None:
    prepared = prepare({7: 200, 9: 200}, [SHOP, LOGISTICS])
    assert [(p.dataset_id, p.table) for p in prepared.spec.parts] == [(7, "a"), (9, "b")]
    assert prepared.plan.total_rows == 200
    explicit = prepare({7: 200, 9: 200}, [LOGISTICS, SHOP], table_of={7: "a", 9: "b"})
    assert explicit.spec.parts == prepared.spec.parts
    with pytest.raises(SpecError, match="3 tables declared for 2 datasets"):
        prepare({7: 200, 9: 200}, [SHOP, LOGISTICS, TableSchema("c", (Column.number("z", 0, 1),))])


def test_unequal_committed_row_counts_are_refused_naming_the_datasets() -> None:
    with pytest.raises(SpecError) as refused:
        prepare({7: 300, 9: 200}, [SHOP, LOGISTICS])
    text = str(refused.value)
    assert "row-aligned" in text and "datum data align" in text
    assert "table a (dataset 7): 300 rows" in text and "table b (dataset 9): 200 rows" in text
    # a table in two parts counts its parts together
    prepare({7: 120, 8: 80, 9: 200}, [SHOP, LOGISTICS], table_of={7: "a", 8: "a", 9: "b"})
    with pytest.raises(SpecError, match=r"table a \(datasets 7, 8\): 201 rows"):
        prepare({7: 121, 8: 80, 9: 200}, [SHOP, LOGISTICS], table_of={7: "a", 8: "a", 9: "b"})
