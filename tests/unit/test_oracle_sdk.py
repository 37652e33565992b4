"""The developer SDK's spec builder: canonical value names, the stats network's canonical spec
carried inline, and the refusals (before anything touches a chain)."""

from __future__ import annotations

import hashlib
import json

import pytest

from compute.errors import SpecError
from compute.mpc import Accuracy, Column, Reveal, TableSchema, parse_sql
from oracle.node.oracle_path import inline_spec
from oracle.node.stats_spec import StatsTaskSpec
from oracle.oracle_sdk import canonical_value_names, inline_of, output_spec_of

BANK = TableSchema(
    "bank",
    (
        Column.number("income", 0, 300_000),
        Column.number("age", 18, 99, integer=True),
        Column.category("segment", ("young", "senior")),
    ),
)
SQL = "SELECT mean(income), count(*), quantile(age, 0.9) FROM bank WHERE age >= 21 GROUP BY segment"


def test_values_are_written_with_the_engine_labels() -> None:
    q = parse_sql(SQL, [BANK], min_group_size=10, reveal=Reveal.everyone(), accuracy=Accuracy(1e-3))
    names = canonical_value_names(
        q, ["avg(income)@young", "MEAN( bank.income )@senior", "count(*)@young", "quantile(age, 0.9)@senior"]
    )
    assert names == [
        "mean(bank.income)@young",
        "mean(bank.income)@senior",
        "count(*)@young",
        "quantile(bank.age, 0.9)@senior",
    ]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("sum(income)@young", "not selected"),
        ("mean(debt)", "unknown column"),
        ("mean(income)@old", "no group 'old'"),
        ("mean(income), count(*)", "not one aggregate"),
    ],
)
def test_values_the_query_does_not_produce_are_refused(value: str, reason: str) -> None:
    q = parse_sql(SQL, [BANK], min_group_size=10, reveal=Reveal.everyone(), accuracy=Accuracy(1e-3))
    with pytest.raises(SpecError, match=reason):
        canonical_value_names(q, [value])


def stats_spec(output: str, public_output: dict[str, object] | None) -> StatsTaskSpec:
    reveal = Reveal.everyone() if output == "public" else Reveal.external()
    query = parse_sql(
        "SELECT mean(income) FROM bank WHERE segment = 'young'",
        [BANK],
        min_group_size=10,
        reveal=reveal,
        accuracy=Accuracy(0.005),
    )
    return StatsTaskSpec.model_validate(
        {
            "schema": "datum.stats.v1",
            "query": query.to_json(),
            "parts": [{"dataset_id": 4, "table": "bank"}, {"dataset_id": 9, "table": "bank"}],
            "protocol": "aby3",
            "output": output,
            "recv_timeout_ms": 30_000,
            "connect_timeout_ms": 30_000,
            "deadline_s": 600,
            "public_output": public_output,
        }
    )


def test_a_public_stats_spec_is_carried_inline_with_its_output_spec() -> None:
    published = {"values": ["mean(bank.income)"], "types": ["uint256"], "decimals": 2}
    spec = stats_spec("public", published)
    built = inline_of(spec)
    assert built.spec_json == spec.canonical_json() and built.spec_hash == spec.spec_hash()
    assert built.spec_hash == hashlib.sha256(built.spec_json).digest()
    assert inline_spec(built.spec_uri, built.spec_hash) == built.spec_json
    assert StatsTaskSpec.parse(built.spec_json) == spec
    assert built.output.model_dump() == published
    assert output_spec_of(built.spec_json) == built.output
    assert len(built.spec_json) < 1_024


def test_a_spec_without_a_public_answer_is_no_oracle_spec() -> None:
    with pytest.raises(SpecError, match="publishes its answer"):
        inline_of(stats_spec("public", None))
    with pytest.raises(SpecError, match="publishes its answer"):
        inline_of(stats_spec("requester", None))


def test_an_output_spec_is_read_only_from_a_json_object_that_has_one() -> None:
    assert output_spec_of(b"not json") is None
    assert output_spec_of(json.dumps({"schema": "x"}).encode()) is None
    with pytest.raises(SpecError, match="decimals"):
        output_spec_of(json.dumps({"public_output": {"values": ["a"], "types": ["uint256"]}}).encode())
