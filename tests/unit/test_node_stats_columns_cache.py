"""The provider's columns cache: written after a checked full parse, used (without parsing the
CSV) while the file, the table and the salt are the same, ignored and rebuilt when tampered
with, never a way around the commitment, row-count or value checks; `columns_of` (made faster)
gives exactly the old results and errors."""

from __future__ import annotations

import hashlib
import secrets
import stat
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from eth_hash.auto import keccak

from compute.errors import SpecError
from compute.mpc import Column, TableSchema
from oracle.node import stats_datasets
from oracle.node.psi_datasets import (
    DatasetMismatch,
    LocalDataset,
    load_dataset,
    parse_csv_table,
    store_dataset,
)
from oracle.node.stats_datasets import (
    StatsMetadata,
    cache_columns,
    columns_cache_path,
    columns_of,
    describe_stats_csv,
    load_columns,
)

PEOPLE = TableSchema(
    "people",
    (
        Column.number("age", 18, 90, integer=True),
        Column.number("income", 0, 200_000),
        Column.category("region", ("north", "south")),
    ),
)
ROWS = [(20 + i, 1000.5 * i, "north" if i % 3 else "south") for i in range(40)]
CHAIN = 31337


def write_people(path: Path, rows: list[tuple[Any, Any, str]]) -> Path:
    path.write_text(
        "id,age,income,region\n" + "".join(f"{i},{a},{v},{r}\n" for i, (a, v, r) in enumerate(rows))
    )
    return path


def store(tmp_path: Path, meta: StatsMetadata, source: Path, dataset_id: int = 4) -> LocalDataset:
    data_dir = tmp_path / "node"
    store_dataset(
        data_dir,
        chain_id=CHAIN,
        dataset_id=dataset_id,
        source=source,
        key="",
        salt=meta.salt,
        document=meta.document(),
    )
    return load_dataset(data_dir, dataset_id)


def served(tmp_path: Path) -> tuple[LocalDataset, dict[str, Any]]:
    meta = describe_stats_csv(write_people(tmp_path / "p.csv", ROWS), PEOPLE)
    local = store(tmp_path, meta, tmp_path / "p.csv")
    args = {"chain_id": CHAIN, "metadata_hash": meta.metadata_hash, "row_count": meta.rows, "table": PEOPLE}
    return local, args


def cache_of(local: LocalDataset) -> Path:
    return columns_cache_path(local.path.parent, hashlib.sha256(local.path.read_bytes()).digest(), PEOPLE)


def cache_files(local: LocalDataset) -> list[Path]:
    return sorted(local.path.parent.glob("columns-*.npz"))


class CountingParser:
    """`parse_csv_table` that counts its calls (and may refuse to run at all)."""

    def __init__(self, *, forbid: bool = False) -> None:
        self.calls = 0
        self.forbid = forbid

    def __call__(self, data: bytes) -> Any:
        self.calls += 1
        if self.forbid:
            raise AssertionError("the CSV was parsed although a valid cache exists")
        return parse_csv_table(data)


def assert_people(columns: dict[str, npt.NDArray[Any]]) -> None:
    assert set(columns) == {"age", "income", "region"}
    assert columns["age"].dtype == np.float64 and columns["age"].tolist() == [float(a) for a, _, _ in ROWS]
    assert columns["income"].dtype == np.float64 and columns["income"].tolist() == [v for _, v, _ in ROWS]
    assert columns["region"].dtype == object and columns["region"].tolist() == [r for _, _, r in ROWS]
    assert all(type(v) is str for v in columns["region"])


# -- written, then used ---------------------------------------------------------------------------


def test_the_first_load_writes_the_cache_and_the_second_does_not_parse_the_csv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local, args = served(tmp_path)
    assert cache_files(local) == []
    stale = local.path.parent / ("columns-" + "00" * 32 + "-0000000000000000.npz")
    stale.write_bytes(b"an older cache")
    first = load_columns(local, **args)
    assert_people(first)
    path = cache_of(local)
    assert cache_files(local) == [path]  # the stale one is gone
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.name.startswith("columns-" + hashlib.sha256(local.path.read_bytes()).hexdigest() + "-")
    assert not list(local.path.parent.glob(".*.part"))
    monkeypatch.setattr(stats_datasets, "parse_csv_table", CountingParser(forbid=True))
    second = load_columns(local, **args)
    assert_people(second)
    for name in first:
        assert np.array_equal(first[name], second[name]) and first[name].dtype == second[name].dtype


def test_registration_fills_the_cache_of_the_stored_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = write_people(tmp_path / "p.csv", ROWS)
    meta = describe_stats_csv(source, PEOPLE)
    local = store(tmp_path, meta, source)
    assert cache_columns(local.path.parent, meta) == cache_of(local)
    monkeypatch.setattr(stats_datasets, "parse_csv_table", CountingParser(forbid=True))
    assert_people(
        load_columns(
            local, chain_id=CHAIN, metadata_hash=meta.metadata_hash, row_count=meta.rows, table=PEOPLE
        )
    )


def test_a_cache_that_cannot_be_written_only_costs_the_next_parse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local, args = served(tmp_path)

    def full_disk(*_: Any, **__: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", full_disk)
    assert_people(load_columns(local, **args))
    assert cache_files(local) == [] and not list(local.path.parent.glob(".*.part"))


# -- tampered caches are ignored and rebuilt --------------------------------------------------


def rewrite(path: Path, change: Any) -> None:
    with np.load(path, allow_pickle=False) as npz:
        entries = {k: npz[k] for k in npz.files}
    change(entries)
    with path.open("wb") as out:
        np.savez(out, **entries)


def set_value(entries: dict[str, Any], key: str, index: int, value: Any) -> None:
    array = entries[key].copy()
    array[index] = value
    entries[key] = array


TAMPERINGS = {
    # c0 age, c1 income, c2 region (declared order)
    "value changed within its range": lambda e: set_value(e, "c1", 3, 1234.0),
    "value outside its range": lambda e: set_value(e, "c0", 0, 95.0),
    "fractional value in an integer column": lambda e: set_value(e, "c0", 0, 20.5),
    "category changed to another declared one": lambda e: set_value(e, "c2", 1, "south"),
    "unknown category": lambda e: set_value(e, "c2", 1, "west"),
    "column removed": lambda e: e.pop("c1"),
    "column added": lambda e: e.update(c3=np.zeros(len(ROWS))),
    "mac removed": lambda e: e.pop("mac"),
    "number column as float32": lambda e: e.update(c1=e["c1"].astype(np.float32)),
    "number column as int64": lambda e: e.update(c0=e["c0"].astype(np.int64)),
    "category column as bytes": lambda e: e.update(c2=e["c2"].astype(np.bytes_)),
    "a row dropped everywhere": lambda e: e.update({k: e[k][:-1] for k in ("c0", "c1", "c2")}),
    "two dimensional": lambda e: e.update(c1=e["c1"].reshape(2, -1)),
}


@pytest.mark.parametrize("how", sorted(TAMPERINGS))
def test_a_tampered_cache_is_ignored_and_rebuilt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    local, args = served(tmp_path)
    load_columns(local, **args)
    path = cache_of(local)
    rewrite(path, TAMPERINGS[how])
    parser = CountingParser()
    monkeypatch.setattr(stats_datasets, "parse_csv_table", parser)
    assert_people(load_columns(local, **args))  # the file's values, not the cache's
    assert parser.calls == 1
    parser.forbid = True  # rebuilt: the next load uses it again
    assert_people(load_columns(local, **args))
    assert cache_files(local) == [path]


@pytest.mark.parametrize("content", [b"", b"not a zip file", b"PK\x03\x04" + b"\x00" * 40])
def test_an_unreadable_cache_is_ignored_and_rebuilt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: bytes
) -> None:
    local, args = served(tmp_path)
    load_columns(local, **args)
    cache_of(local).write_bytes(content)
    parser = CountingParser()
    monkeypatch.setattr(stats_datasets, "parse_csv_table", parser)
    assert_people(load_columns(local, **args))
    assert parser.calls == 1 and cache_of(local).stat().st_size > 1000


def test_a_cache_keyed_by_another_salt_is_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Someone who can write the folder but does not know the salt cannot forge a cache."""
    local, args = served(tmp_path)
    forged = {
        "age": np.full(len(ROWS), 50.0),
        "income": np.full(len(ROWS), 7.0),
        "region": np.array(["south"] * len(ROWS), dtype=object),
    }
    sha = hashlib.sha256(local.path.read_bytes()).digest()
    stats_datasets._write_cache(local.path.parent, sha, secrets.token_bytes(32), PEOPLE, forged)
    parser = CountingParser()
    monkeypatch.setattr(stats_datasets, "parse_csv_table", parser)
    assert_people(load_columns(local, **args))
    assert parser.calls == 1


# -- refusals are the same, cache or not -----------------------------------------------------------


def test_a_changed_file_is_refused_as_before_even_with_a_cache_under_its_new_hash(tmp_path: Path) -> None:
    local, args = served(tmp_path)
    load_columns(local, **args)
    old_cache = cache_of(local)
    local.path.write_text(local.path.read_text().replace("1000.5", "1000.6"))
    # a cache that would match the changed file's sha256 (copied there by whoever changed it)
    cache_of(local).write_bytes(old_cache.read_bytes())
    with pytest.raises(DatasetMismatch) as refused:
        load_columns(local, **args)
    assert refused.value.code == "commitment_mismatch"
    assert "does not open its content commitment" in str(refused.value)
    # even a cache with a valid MAC for the changed file (made with the salt) does not help
    parsed = parse_csv_table(local.path.read_bytes())
    columns = columns_of(parsed.columns, parsed.rows, PEOPLE, "changed")
    sha = hashlib.sha256(local.path.read_bytes()).digest()
    assert stats_datasets._write_cache(local.path.parent, sha, local.salt, PEOPLE, columns) == cache_of(local)
    with pytest.raises(DatasetMismatch) as refused:
        load_columns(local, **args)
    assert refused.value.code == "commitment_mismatch"


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"chain_id": 1}, "wrong_chain"),
        ({"metadata_hash": b"\x01" * 32}, "metadata_mismatch"),
        ({"table": TableSchema("people", PEOPLE.columns[:2])}, "schema_mismatch"),
        ({"row_count": len(ROWS) + 1}, "row_count_mismatch"),
        ({"row_count": len(ROWS) - 1}, "row_count_mismatch"),
    ],
)
def test_every_other_refusal_stands_with_a_valid_cache(
    tmp_path: Path, change: dict[str, Any], code: str
) -> None:
    local, args = served(tmp_path)
    load_columns(local, **args)
    assert cache_files(local) == [cache_of(local)]
    with pytest.raises(DatasetMismatch) as refused:
        load_columns(local, **(args | change))
    assert refused.value.code == code
    if code == "row_count_mismatch":
        assert f"holds {len(ROWS)} rows, the chain commits to {change['row_count']}" in str(refused.value)


def committed_as_is(tmp_path: Path, rows: list[tuple[Any, Any, str]]) -> tuple[LocalDataset, dict[str, Any]]:
    """A copy whose metadata commits to `rows` as they are (registration's value check skipped,
    as a tampered or foreign node record would)."""
    source = write_people(tmp_path / "bad.csv", rows)
    salt = secrets.token_bytes(32)
    meta = StatsMetadata(
        name=source.name,
        columns=("id", "age", "income", "region"),
        key="",
        rows=len(rows),
        content_commitment=keccak(salt + hashlib.sha256(source.read_bytes()).digest()),
        salt=salt,
        table=PEOPLE,
    )
    local = store(tmp_path, meta, source)
    args = {"chain_id": CHAIN, "metadata_hash": meta.metadata_hash, "row_count": meta.rows, "table": PEOPLE}
    return local, args


@pytest.mark.parametrize(
    ("bad_row", "message"),
    [
        ((95, 10.0, "north"), "column age has 1 values outside its declared range"),
        ((30, 10.0, "west"), "column region has 1 values outside its categories"),
        ((30, "ten", "north"), "column income has 1 non-numeric values"),
    ],
)
def test_a_refused_dataset_never_gets_a_cache(
    tmp_path: Path, bad_row: tuple[Any, Any, str], message: str
) -> None:
    local, args = committed_as_is(tmp_path, [*ROWS, bad_row])
    for _ in range(2):
        with pytest.raises(SpecError, match=message) as refused:
            load_columns(local, **args)
        assert not isinstance(refused.value, DatasetMismatch)
        assert cache_files(local) == [] and not list(local.path.parent.glob(".*.part"))


def test_a_row_count_refusal_writes_no_cache(tmp_path: Path) -> None:
    local, args = served(tmp_path)
    with pytest.raises(DatasetMismatch) as refused:
        load_columns(local, **(args | {"row_count": 7}))
    assert refused.value.code == "row_count_mismatch" and cache_files(local) == []


# -- columns_of: the faster path gives exactly the old results and errors -------------------------


def columns_of_before(
    header: tuple[str, ...], rows: tuple[tuple[str, ...], ...], table: TableSchema, where: str
) -> dict[str, npt.NDArray[Any]]:
    """`columns_of` as it was before it was sped up (the reference)."""
    out: dict[str, npt.NDArray[Any]] = {}
    for column in table.columns:
        if column.name not in header:
            raise SpecError(f"{where}: declared column {column.name!r} is not in the file")
        j = header.index(column.name)
        raw = [r[j].strip() for r in rows]
        if column.is_number:
            try:
                values = np.array([float(v) for v in raw], dtype=np.float64)
            except ValueError:
                bad = sum(1 for v in raw if not _is_float(v))
                raise SpecError(f"{where}: column {column.name} has {bad} non-numeric values") from None
            outside = int(
                np.count_nonzero(~np.isfinite(values) | (values < column.lo) | (values > column.hi))
            )
            if outside:
                raise SpecError(
                    f"{where}: column {column.name} has {outside} values outside its declared range"
                )
            if column.integer and not np.array_equal(values, np.floor(values)):
                raise SpecError(
                    f"{where}: column {column.name} is declared integer but has fractional values"
                )
            out[column.name] = values
        else:
            allowed = set(column.categories)
            unknown = sum(1 for v in raw if v not in allowed)
            if unknown:
                raise SpecError(f"{where}: column {column.name} has {unknown} values outside its categories")
            out[column.name] = np.array(raw, dtype=object)
    return out


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


TRICKY = TableSchema(
    "t",
    (
        Column.number("n", -1000, 1000),
        Column.number("k", -5, 5000, integer=True),
        Column.category("c", ("north", "south", "a b")),
    ),
)
GOOD = [
    (" 1e3 ", "3.0", " north "),
    ("-0", "-0.0", "a b"),
    ("-0.0", " 12 ", "south\t"),
    ("1_0.5", "1E3", "north"),
    ("\u0661\u0662", "+4", "south"),  # Arabic-Indic digits: float() takes them
    ("\t.5\n", "0", "north"),
    ("-1000", "5000.000", "\u00a0south\u2003"),  # non-breaking and em spaces strip off
]
TRICKY_CASES = {
    "all good": GOOD,
    "out of range": [*GOOD, ("1000.0001", "1", "north"), ("-2000", "1", "north")],
    "not finite": [*GOOD, ("nan", "1", "north"), ("inf", "1", "north"), ("-Infinity", "1", "north")],
    "non-numeric": [
        *GOOD,
        ("abc", "1", "north"),
        ("", "1", "north"),
        ("1,5", "1", "north"),
        ("0x10", "1", "north"),
    ],
    "fractional integer": [*GOOD, ("1", "2.5", "north")],
    "integer out of range": [*GOOD, ("1", "-6", "north")],
    "unknown category first": [("1", "1", "west"), *GOOD],
    "unknown category": [*GOOD, ("1", "1", "west"), ("1", "1", "North"), ("1", "1", "ab"), ("1", "1", "")],
}


@pytest.mark.parametrize("case", sorted(TRICKY_CASES))
def test_columns_of_gives_the_old_results_and_errors(case: str) -> None:
    header = ("c", "n", "k", "extra")
    rows = tuple((c, n, k, "x") for n, k, c in TRICKY_CASES[case])
    try:
        expected: dict[str, npt.NDArray[Any]] | str = columns_of_before(header, rows, TRICKY, "f.csv")
    except SpecError as exc:
        expected = str(exc)
    try:
        got: dict[str, npt.NDArray[Any]] | str = columns_of(header, rows, TRICKY, "f.csv")
    except SpecError as exc:
        got = str(exc)
    if isinstance(expected, str):
        assert got == expected and "f.csv: column" in got
        return
    assert case == "all good" and isinstance(got, dict) and set(got) == set(expected) == {"n", "k", "c"}
    for name in expected:
        assert got[name].dtype == expected[name].dtype
        assert got[name].tolist() == expected[name].tolist()
    for name in ("n", "k"):  # negative zero stays negative
        assert np.array_equal(np.signbit(got[name]), np.signbit(expected[name]))
    assert np.signbit(got["n"][1]) and got["n"][0] == 1000.0 and got["k"][3] == 1000.0


def test_columns_of_names_a_missing_declared_column_as_before() -> None:
    rows = (("1", "2"),)
    for impl in (columns_of, columns_of_before):
        with pytest.raises(SpecError, match="f.csv: declared column 'c' is not in the file"):
            impl(("n", "k"), rows, TRICKY, "f.csv")
