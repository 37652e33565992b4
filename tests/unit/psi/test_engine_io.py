"""The engine's file and result plumbing: the digest CSV libpsi reads and writes, and the
mapping of matched digests back to rows, against plain Python definitions."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compute.errors import ComputeError, ProtocolAbort
from compute.psi import CaseRule, DuplicateRule, EmptyKeyRule, KeyRules, Table, index_keys
from compute.psi.run import _positions
from compute.psi.spu_psi import _read_digests, _write_digests

digest_lists = st.lists(st.binary(min_size=32, max_size=32), unique=True, max_size=50)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(digests=digest_lists)
def test_digest_csv_is_the_header_and_one_hex_line_per_digest(digests: list[bytes], tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    _write_digests(path, b"".join(digests))
    assert path.read_text("ascii") == "k\n" + "".join(d.hex() + "\n" for d in digests)
    assert _read_digests(path) == tuple(digests)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(digests=digest_lists, quoted=st.booleans())
def test_libpsi_output_with_quoted_header_and_crlf_is_read(
    digests: list[bytes], quoted: bool, tmp_path: Path
) -> None:
    path = tmp_path / "out.csv"
    header = '"k"' if quoted else "k"
    path.write_bytes((header + "\r\n" + "".join(f'"{d.hex()}"\r\n' for d in digests)).encode())
    assert _read_digests(path) == tuple(digests)


@pytest.mark.parametrize(
    "text",
    ["x\nab\n", "k\n" + "ab" * 31 + "\n", "k\n" + "zz" * 32 + "\n", ""],
    ids=["header", "short", "hex", "empty"],
)
def test_unexpected_libpsi_output_is_an_error(text: str, tmp_path: Path) -> None:
    path = tmp_path / "out.csv"
    path.write_text(text)
    with pytest.raises(ComputeError):
        _read_digests(path)


RULES = KeyRules(CaseRule.CASEFOLD, EmptyKeyRule.DROP, DuplicateRule.ALL)


@given(st.lists(st.sampled_from(["a", "A", "b", "c", "", "d", "e"]), max_size=30), st.data())
def test_positions_are_the_matched_keys_in_ascending_order(keys: list[str], data: st.DataObject) -> None:
    keyed = index_keys(Table(("k",), tuple((k,) for k in keys)), ("k",), RULES)
    chosen = data.draw(st.lists(st.sampled_from(keyed.digests), unique=True) if len(keyed) else st.just([]))
    matched = tuple(chosen) + tuple(chosen[:1])  # order and repeats do not matter
    assert _positions(keyed, matched) == sorted(keyed.digests.index(d) for d in chosen)
    with pytest.raises(ProtocolAbort):
        _positions(keyed, (*matched, b"\x00" * 32))
