"""The PSI network modes' node-side pieces in one process: the served matrix of the spec, the
provider's prepared label tables (stored, reused, rebuilt after a rotation or a changed
file), and a labeled DH query served from a reused table over a memory channel."""

from __future__ import annotations

import itertools
import stat
import threading
from pathlib import Path

import numpy as np
import pytest

from compute.errors import SpecError
from compute.psi import (
    DhProvider,
    LabeledResult,
    PartyData,
    Role,
    Table,
    memory_channel_pair,
    run_labeled,
)
from compute.psi.he_psi import HeSenderTable
from oracle.node.psi_labels import LabelTables, main, rotate_key
from oracle.node.psi_spec import LABEL_BATCH, SERVED, PsiTaskSpec, parse_message

BANK = Table(
    ("client_id", "income_class", "branch"),
    tuple((f"c{i:04d}", ("high", "low")[i % 2], f"Zürich-{i % 5}") for i in range(300)),
)


def labeled(protocol: str = "ecdh", labels: tuple[str, ...] = ("income_class", "branch")) -> PsiTaskSpec:
    return PsiTaskSpec.build(
        dataset_id=7, protocol=protocol, reveal="me", labels=labels, label_bytes=48, query_keys=100
    )


def test_every_served_combination_builds_and_every_other_is_refused() -> None:
    for protocol, has_labels, reveal in itertools.product(
        ("ecdh", "rr22", "kkrt", "he"), (False, True), ("me", "both", "size")
    ):
        labels = ("a",) if has_labels else ()
        args = {"dataset_id": 1, "protocol": protocol, "reveal": reveal, "labels": labels}
        if has_labels:
            args |= {"label_bytes": 16, "query_keys": 10}
        if (protocol, has_labels, reveal) in SERVED:
            spec = PsiTaskSpec.build(**args)  # type: ignore[arg-type]
            assert parse_message(PsiTaskSpec, spec.canonical_json(), "spec") == spec
            engine = spec.labeled_spec() if has_labels else spec.engine_spec()
            assert engine.digest()
        else:
            with pytest.raises(SpecError, match="not served|runs with --reveal me|DH cardinality"):
                PsiTaskSpec.build(**args)  # type: ignore[arg-type]
    both = PsiTaskSpec.build(dataset_id=1, protocol="he", reveal="both").engine_spec()
    assert both.receivers == (0, 1) and both.he is not None
    size = PsiTaskSpec.build(dataset_id=1, protocol="ecdh", reveal="size").engine_spec()
    assert size.receivers == (0,) and size.reveal.value == "size"
    spec = labeled()
    assert spec.max_query_keys == LABEL_BATCH and spec.duplicates == "reject"  # rounded up, one label a key
    assert (
        PsiTaskSpec.build(
            dataset_id=1, protocol="dh-oprf", reveal="me", labels=("a",), label_bytes=8, query_keys=1
        ).protocol
        == "ecdh"
    )


def test_the_dh_table_is_built_once_reused_and_rebuilt_after_a_rotation(tmp_path: Path) -> None:
    tables = LabelTables(tmp_path)
    spec = labeled()
    first = tables.prepared(spec, BANK, "client_id", "0xaa")
    assert first.built and first.epoch == 1 and isinstance(first.provider, DhProvider)
    folder = tmp_path / "psi" / "labels" / "7"
    files = sorted(p.name for p in folder.iterdir())
    assert "oprf-key.json" in files and len(files) == 2
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in folder.iterdir())
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700

    again = LabelTables(tmp_path).prepared(spec, BANK, "client_id", "0xaa")  # e.g. after a restart
    assert not again.built and again.epoch == 1
    assert isinstance(again.provider, DhProvider)
    assert again.provider.table.to_bytes() == first.provider.table.to_bytes()
    assert again.provider.key.key_id == first.provider.key.key_id

    other_file = tables.prepared(spec, BANK, "client_id", "0xbb")  # another commitment: rebuilt
    other_columns = tables.prepared(labeled(labels=("branch",)), BANK, "client_id", "0xaa")
    assert other_file.built and other_columns.built and tables.built == 3

    assert main(["rotate", "--data-dir", str(tmp_path), "--dataset", "7"]) == 0
    assert [p for p in folder.iterdir() if p.suffix == ".table"] == []
    rotated = tables.prepared(spec, BANK, "client_id", "0xaa")
    assert rotated.built and rotated.epoch == 2
    assert isinstance(rotated.provider, DhProvider)
    assert rotated.provider.key.key_id != first.provider.key.key_id
    assert rotate_key(tmp_path, 7) == 3

    after = tables.prepared(spec, BANK, "client_id", "0xaa")
    assert after.built and after.epoch == 3


def test_a_damaged_table_is_rebuilt_and_a_label_too_long_is_refused(tmp_path: Path) -> None:
    tables = LabelTables(tmp_path)
    spec = labeled()
    tables.prepared(spec, BANK, "client_id", "0xaa")
    (stored,) = (tmp_path / "psi" / "labels" / "7").glob("*.table")
    stored.write_bytes(b"not a table")
    assert tables.prepared(spec, BANK, "client_id", "0xaa").built
    tiny = PsiTaskSpec.build(
        dataset_id=7, protocol="ecdh", reveal="me", labels=("branch",), label_bytes=4, query_keys=1
    )
    with pytest.raises(SpecError, match="label record needs"):
        tables.prepared(tiny, BANK, "client_id", "0xaa")


def test_the_he_polynomials_are_stored_and_reloaded_equal(tmp_path: Path) -> None:
    tables = LabelTables(tmp_path)
    spec = labeled("he", ("income_class",))
    built = tables.prepared(spec, BANK, "client_id", "0xaa")
    loaded = LabelTables(tmp_path).prepared(spec, BANK, "client_id", "0xaa")
    assert built.built and not loaded.built
    assert isinstance(built.provider, HeSenderTable) and isinstance(loaded.provider, HeSenderTable)
    assert np.array_equal(built.provider.match_coeffs, loaded.provider.match_coeffs)
    assert np.array_equal(built.provider.value_coeffs, loaded.provider.value_coeffs)
    assert (built.provider.size, built.provider.label_bytes) == (
        loaded.provider.size,
        loaded.provider.label_bytes,
    )


def test_a_query_served_from_a_reused_dh_table_gives_the_plaintext_join(tmp_path: Path) -> None:
    spec = labeled()
    LabelTables(tmp_path).prepared(spec, BANK, "client_id", "0xaa")
    reused = LabelTables(tmp_path).prepared(spec, BANK, "client_id", "0xaa")
    assert not reused.built
    mine = Table(("client_id",), tuple((k,) for k in ["c0003", "zz", "c0150", "c0003", "c9999"]))
    provider_end, requester_end = memory_channel_pair(30.0)
    reports: list[object] = []
    server = threading.Thread(
        target=lambda: reports.append(
            run_labeled(
                spec.labeled_spec(), role=Role.PROVIDER, transport=provider_end, prepared=reused.provider
            )
        )
    )
    server.start()
    result = run_labeled(
        spec.labeled_spec(),
        role=Role.REQUESTER,
        transport=requester_end,
        data=PartyData(mine, ("client_id",)),
    )
    server.join(30)
    assert isinstance(result, LabeledResult)
    rows = {r[0]: r[1:] for r in BANK.rows}
    assert [(m.row_index, m.labels) for m in result.matches] == [
        (i, rows[k]) for i, (k,) in enumerate(mine.rows) if k in rows
    ]
    assert reports and getattr(reports[0], "query_size", None) == 4  # distinct query keys only
