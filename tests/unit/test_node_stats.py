"""The stats task's pieces a node and a requester share: the spec (its hash is on chain) and
the plan derived from it, the served dataset's declared table against its on-chain
commitment, the consent check with the minimum group size, the share blobs a member checks
(real SPU shares), the committee's link and output-hash messages and the statement."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from eth_hash.auto import keccak

from compute.errors import SpecError
from compute.mpc import Accuracy, Column, Reveal, TableSchema, parse_sql
from oracle.node.oracle_path import inline_spec_uri
from oracle.node.psi_chain import AssetView
from oracle.node.psi_datasets import DatasetMismatch, load_dataset, store_dataset
from oracle.node.stats_chain import stats_consent_problem
from oracle.node.stats_datasets import describe_stats_csv, load_columns, read_schema_file
from oracle.node.stats_spec import (
    LinkMessage,
    OutputHashMessage,
    StatsPart,
    StatsTaskSpec,
    StatusMessage,
    canonical_json,
    result_statement,
    session_id_for,
    share_blob,
    share_part_of,
    spec_uri,
    stats_servable,
)
from oracle.node.stats_worker import check_share_blob, share_columns

PEOPLE = TableSchema(
    "people",
    (
        Column.number("age", 18, 90, integer=True),
        Column.number("income", 0, 200_000),
        Column.category("region", ("north", "south")),
    ),
)


def make_spec(output: str = "requester", **overrides: Any) -> StatsTaskSpec:
    reveal = Reveal.external() if output == "requester" else Reveal.everyone()
    query = parse_sql(
        "SELECT count(*), mean(income) FROM people WHERE age >= 30 GROUP BY region",
        [PEOPLE],
        min_group_size=5,
        reveal=reveal,
        accuracy=Accuracy(1e-3),
    )
    fields: dict[str, Any] = {
        "schema": "datum.stats.v1",
        "query": query.to_json(),
        "parts": [StatsPart(dataset_id=1, table="people"), StatsPart(dataset_id=2, table="people")],
        "protocol": "aby3",
        "output": output,
        "recv_timeout_ms": 20_000,
        "connect_timeout_ms": 20_000,
        "deadline_s": 300,
    }
    return StatsTaskSpec.model_validate(fields | overrides)


# -- spec ---------------------------------------------------------------------------------------


def test_the_spec_round_trips_through_its_canonical_json_and_hash() -> None:
    spec = make_spec()
    data = spec.canonical_json()
    assert data == canonical_json(json.loads(data))  # canonical: sorted, no whitespace
    again = StatsTaskSpec.parse(data)
    assert again == spec and again.spec_hash() == hashlib.sha256(data).digest()
    assert spec.world == 3 and spec.dataset_ids == (1, 2)
    assert make_spec("public").spec_hash() != spec.spec_hash()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"parts": [StatsPart(dataset_id=1, table="sales")]}, "not a table of the query"),
        ({"parts": [StatsPart(dataset_id=1, table="people")] * 2}, "listed twice"),
        ({"protocol": "semi2k"}, "protocol"),
        ({"recv_timeout_ms": 10}, "recv_timeout_ms"),
        ({"public_output": {"values": ["count(*)"], "types": ["uint256"], "decimals": 0}}, "public_output"),
    ],
)
def test_inconsistent_specs_are_refused(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_spec(**overrides)


def test_a_requester_spec_must_reveal_externally() -> None:
    spec = make_spec("public")
    raw = json.loads(spec.canonical_json())
    raw["output"] = "requester"
    with pytest.raises(SpecError, match="external"):
        StatsTaskSpec.parse(canonical_json(raw))
    raw = json.loads(make_spec().canonical_json())
    raw["output"] = "public"  # an external reveal cannot be published
    with pytest.raises(SpecError, match="everyone"):
        StatsTaskSpec.parse(canonical_json(raw))
    with pytest.raises(SpecError, match="invalid"):
        StatsTaskSpec.parse(b'{"schema": "datum.stats.v1"}')


def test_every_node_derives_the_same_plan_from_the_chain_row_counts() -> None:
    spec = make_spec()
    plan = spec.plan({1: 40, 2: 25})
    assert [(p.table, p.provider, p.rows) for p in plan.parts] == [
        ("people", "dataset-1", 40),
        ("people", "dataset-2", 25),
    ]
    assert spec.plan({2: 25, 1: 40}).digest() == plan.digest()
    assert spec.plan({1: 41, 2: 25}).digest() != plan.digest()
    with pytest.raises(SpecError, match="no row count"):
        spec.plan({1: 40})


def test_spec_uris_and_inline_specs_are_servable_and_others_not() -> None:
    spec = make_spec("public")
    digest = spec.spec_hash()
    assert stats_servable(3, digest, spec_uri(digest))
    assert stats_servable(3, digest, inline_spec_uri(spec.canonical_json()))
    assert not stats_servable(3, digest, inline_spec_uri(b'{"other": 1}'))  # hash mismatch
    assert not stats_servable(3, digest, "ipfs://somewhere")
    assert stats_servable(1, digest, "ipfs://somewhere")  # other kinds: their own checks


def test_blob_names_and_session_ids() -> None:
    assert share_blob(2) == "mpc-share-2" and share_part_of("mpc-share-2") == 2
    assert share_part_of("mpc-share-x") is None and share_part_of("spec") is None
    addresses = ("127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003")
    sid = session_id_for(7, b"\x01" * 32, addresses)
    assert sid.startswith("t7-") and len(sid) <= 64
    assert sid == session_id_for(7, b"\x01" * 32, addresses)
    assert sid != session_id_for(7, b"\x01" * 32, addresses[::-1])
    assert sid != session_id_for(8, b"\x01" * 32, addresses)
    LinkMessage.parse(LinkMessage(task_id=7, rank=1, address="127.0.0.1:9002").model_dump_json().encode())
    with pytest.raises(SpecError):
        LinkMessage.parse(b'{"task_id": 7, "rank": 1, "address": "nowhere"}')
    with pytest.raises(SpecError):
        OutputHashMessage.parse(b'{"task_id": 7, "rank": 1, "session_id": "s", "sha256": "00"}')
    status = StatusMessage(task_id=7, rank=2, state="failed", reason="ProtocolAbort: party 1 vanished")
    assert StatusMessage.parse(status.model_dump_json().encode()) == status
    with pytest.raises(SpecError):
        StatusMessage.parse(b'{"task_id": 7, "rank": 2, "state": "done", "reason": ""}')


def test_the_statement_binds_the_run_and_every_share_hash() -> None:
    spec = make_spec()
    plan = spec.plan({1: 40, 2: 25})
    shares = ["aa" * 32, "bb" * 32, "cc" * 32]
    one = result_statement(
        task_id=3, session_id="t3-x", spec_hash=spec.spec_hash(), plan=plan, share_sha256=shares
    )
    statement = json.loads(one)
    assert statement["share_sha256"] == shares and statement["plan_digest"] == "0x" + plan.digest().hex()
    other = result_statement(
        task_id=3, session_id="t3-x", spec_hash=spec.spec_hash(), plan=plan, share_sha256=shares[::-1]
    )
    assert hashlib.sha256(one).digest() != hashlib.sha256(other).digest()


# -- consent -------------------------------------------------------------------------------------


def asset(**changes: Any) -> AssetView:
    fields: dict[str, Any] = {
        "dataset_id": 4,
        "owner": "0x" + "11" * 20,
        "revoked": False,
        "is_model": False,
        "row_count": 10,
        "metadata_hash": b"\x00" * 32,
        "allowed_kinds": 1 << 3,
        "open": True,
        "expires_at": 0,
        "remaining_uses": 3,
        "min_group_size": 5,
    }
    return AssetView(**(fields | changes))


@pytest.mark.parametrize(
    ("changes", "listed", "min_group", "message"),
    [
        ({}, False, 5, None),
        ({"allowed_kinds": 1 << 2}, False, 5, "does not allow stats"),
        ({"revoked": True}, False, 5, "revoked"),
        ({"expires_at": 99}, False, 5, "expired"),
        ({"open": False}, False, 5, "not allowed"),
        ({"open": False}, True, 5, None),
        ({}, False, 4, "minimum group size 5"),
        ({"is_model": True}, False, 5, "model"),
    ],
)
def test_consent_now_with_the_minimum_group_size(
    changes: dict[str, Any], listed: bool, min_group: int, message: str | None
) -> None:
    problem = stats_consent_problem(asset(**changes), listed=listed, now=100, min_group_size=min_group)
    if message is None:
        assert problem is None
    else:
        assert problem is not None and message in problem


# -- the served dataset ---------------------------------------------------------------------------


def write_people(path: Path, rows: list[tuple[int, float, str]]) -> Path:
    path.write_text(
        "id,age,income,region\n" + "".join(f"{i},{a},{v},{r}\n" for i, (a, v, r) in enumerate(rows))
    )
    return path


ROWS = [(20 + i, 1000.5 * i, "north" if i % 3 else "south") for i in range(30)]


def served(tmp_path: Path) -> tuple[Path, bytes, int]:
    file = write_people(tmp_path / "p.csv", ROWS)
    meta = describe_stats_csv(file, PEOPLE)
    assert meta.document()["table"] == PEOPLE.to_json() and meta.rows == 30
    data_dir = tmp_path / "node"
    store_dataset(
        data_dir, chain_id=31337, dataset_id=4, source=file, key="", salt=meta.salt, document=meta.document()
    )
    return data_dir, meta.metadata_hash, meta.rows


def test_the_served_copy_opens_its_commitment_and_gives_the_declared_columns(tmp_path: Path) -> None:
    data_dir, metadata_hash, rows = served(tmp_path)
    local = load_dataset(data_dir, 4)
    columns = load_columns(local, chain_id=31337, metadata_hash=metadata_hash, row_count=rows, table=PEOPLE)
    assert columns["age"].tolist() == [float(a) for a, _, _ in ROWS]
    assert columns["region"].tolist() == [r for _, _, r in ROWS]
    assert "id" not in columns  # undeclared columns never leave
    assert keccak(json.dumps(local.document, sort_keys=True, separators=(",", ":")).encode()) == metadata_hash


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"metadata_hash": b"\x01" * 32}, "metadata_mismatch"),
        ({"row_count": 31}, "row_count_mismatch"),
        ({"chain_id": 1}, "wrong_chain"),
        ({"table": TableSchema("people", PEOPLE.columns[:2])}, "schema_mismatch"),
    ],
)
def test_a_copy_that_does_not_match_the_chain_or_the_query_is_refused(
    tmp_path: Path, change: dict[str, Any], code: str
) -> None:
    data_dir, metadata_hash, rows = served(tmp_path)
    args: dict[str, Any] = {
        "chain_id": 31337,
        "metadata_hash": metadata_hash,
        "row_count": rows,
        "table": PEOPLE,
    }
    with pytest.raises(DatasetMismatch) as refused:
        load_columns(load_dataset(data_dir, 4), **(args | change))
    assert refused.value.code == code


def test_a_changed_file_no_longer_opens_its_commitment(tmp_path: Path) -> None:
    data_dir, metadata_hash, rows = served(tmp_path)
    local = load_dataset(data_dir, 4)
    local.path.write_text(local.path.read_text().replace("1000.5", "1000.6"))
    with pytest.raises(DatasetMismatch) as refused:
        load_columns(local, chain_id=31337, metadata_hash=metadata_hash, row_count=rows, table=PEOPLE)
    assert refused.value.code == "commitment_mismatch"


def test_registration_refuses_values_outside_their_declaration_naming_counts_not_values(
    tmp_path: Path,
) -> None:
    bad = write_people(tmp_path / "bad.csv", [*ROWS, (95, 123456.789, "north"), (30, 5.0, "west")])
    with pytest.raises(SpecError, match="column age has 1 values outside its declared range") as refused:
        describe_stats_csv(bad, PEOPLE)
    assert "123456" not in str(refused.value) and "95" not in str(refused.value)
    west = write_people(tmp_path / "west.csv", [*ROWS, (30, 5.0, "west")])
    with pytest.raises(SpecError, match="region has 1 values outside its categories"):
        describe_stats_csv(west, PEOPLE)
    schema = tmp_path / "s.json"
    schema.write_text(json.dumps(PEOPLE.to_json()))
    assert read_schema_file(schema) == PEOPLE
    schema.write_text("{not json")
    with pytest.raises(SpecError, match="not JSON"):
        read_schema_file(schema)


# -- shares (real SPU) ------------------------------------------------------------------------


def test_share_blobs_are_bound_to_plan_part_and_rank(tmp_path: Path) -> None:
    spec = make_spec()
    plan = spec.plan({1: 30, 2: 20})
    rng = np.random.default_rng(5)
    columns = {
        "age": rng.integers(18, 91, 30).astype(float),
        "income": rng.uniform(0, 200_000, 30),
        "region": np.array(rng.choice(["north", "south"], 30), dtype=object),
    }
    blobs = share_columns(plan, "aby3", 0, columns)
    assert len(blobs) == 3
    assert all(check_share_blob(plan, "aby3", 0, r, blobs[r]) is None for r in range(3))
    assert "rank 0; this is rank 1" in (check_share_blob(plan, "aby3", 0, 1, blobs[0]) or "")
    assert "shares are for part 0" in (check_share_blob(plan, "aby3", 1, 0, blobs[0]) or "")
    other = spec.plan({1: 31, 2: 20})
    assert check_share_blob(other, "aby3", 0, 0, blobs[0]) is not None  # another plan digest
    assert "over the plan's limit" in (check_share_blob(plan, "aby3", 0, 0, blobs[0] * 50) or "")
    stored = tmp_path / "share.bin"  # a member's worker reads the received file itself
    stored.write_bytes(blobs[2])
    assert check_share_blob(plan, "aby3", 0, 2, stored) is None
    assert "rank 2; this is rank 1" in (check_share_blob(plan, "aby3", 0, 1, stored) or "")
    stored.write_bytes(blobs[0] * 50)
    assert "over the plan's limit" in (check_share_blob(plan, "aby3", 0, 0, stored) or "")
    assert "cannot be read" in (check_share_blob(plan, "aby3", 0, 0, tmp_path / "gone.bin") or "")
    columns["age"][0] = 95.0
    with pytest.raises(SpecError, match="outside its declared range"):
        share_columns(plan, "aby3", 0, columns)


# -- the CLI's argument parsing and rendering ------------------------------------------------------


def test_the_cli_reads_dataset_lists_and_schema_files(tmp_path: Path) -> None:
    from rich.console import Console

    from compute.errors import ConfigError
    from oracle.cli.task_stats import _parts, _render, _tables

    assert _parts("1,2, 3") == ([1, 2, 3], None)
    assert _parts("1:a,dataset2:b") == ([1, 2], {1: "a", 2: "b"})
    for bad in ("1,x", "0", "1:a,2"):
        with pytest.raises(ConfigError):
            _parts(bad)
    one = tmp_path / "one.json"
    one.write_text(json.dumps(PEOPLE.to_json()))
    assert _tables(one) == [PEOPLE]
    both = tmp_path / "both.json"
    both.write_text(
        json.dumps([PEOPLE.to_json(), TableSchema("sales", (Column.number("x", 0, 1),)).to_json()])
    )
    assert [t.name for t in _tables(both)] == ["people", "sales"]
    console = Console(record=True, width=120)
    payload = {
        "task_id": 4,
        "output": "requester",
        "tx": {"finalize": "0xabc"},
        "result": {
            "groups": ["north", "south"],
            "aggregates": [{"label": "mean(people.income)", "values": [1.5, 2.5], "bounds": [0.01, 0.02]}],
        },
    }
    _render(payload)(console)
    text = console.export_text()
    assert "mean(people.income)" in text and "2.5" in text and "0.02" in text and "0xabc" in text
