"""`parse_csv`: CSV text handed to it (no file I/O) becomes numeric columns, end to end."""

from __future__ import annotations

import numpy as np
import pytest

from compute.errors import SpecError
from compute.he import HELimits, HETaskSpec, OwnerKeys, Scheme, parse_csv

from .helpers import run

CSV = "age,income,score\n34,52000.50,-3\n51,61000.25,7\n29,38000,0\n"


def test_types_are_inferred_per_column() -> None:
    cols = parse_csv(CSV)
    assert list(cols) == ["age", "income", "score"]
    assert cols["age"].dtype == np.int64 and cols["age"].tolist() == [34, 51, 29]
    assert cols["income"].dtype == np.float64 and cols["income"].tolist() == [52000.5, 61000.25, 38000.0]
    assert cols["score"].tolist() == [-3, 7, 0]


def test_bytes_with_bom_crlf_and_blank_lines() -> None:
    data = b"\xef\xbb\xbfa, b\r\n1, 2.5\r\n\r\n3, 4\r\n"
    cols = parse_csv(data)
    assert cols["a"].tolist() == [1, 3] and cols["b"].tolist() == [2.5, 4.0]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "header row"),
        ("a,b\n", "header row"),
        ("a,a\n1,2\n", "duplicate"),
        ("annual income\n1\n", "not an identifier"),
        ("a,b\n1\n", "line 2 has 1 cells"),
        ("a\nx\n", "non-numeric"),
        ("a\n\n1\n\n2,\n", "line 5 has 2 cells"),
        ("a\nnan\n", "NaN"),
        ("a\n9223372036854775807\n", "2\\^62"),
    ],
)
def test_malformed_csv(text: str, fragment: str) -> None:
    with pytest.raises(SpecError, match=fragment):
        parse_csv(text)


def test_size_and_shape_limits() -> None:
    with pytest.raises(SpecError, match="over the limit"):
        parse_csv("a\n" + "1\n" * 100, HELimits(max_columns_bytes=50))
    with pytest.raises(SpecError, match="rows, over the limit"):
        parse_csv("a\n" + "1\n" * 11, HELimits(max_rows=10))
    with pytest.raises(SpecError, match="columns, over the limit"):
        parse_csv("a,b,c\n1,2,3\n", HELimits(max_columns=2))
    with pytest.raises(SpecError, match="UTF-8"):
        parse_csv(b"a\n\xff\n")


def test_csv_to_encrypted_mean(ou_keys: OwnerKeys) -> None:
    cols = parse_csv(CSV)
    spec = HETaskSpec(Scheme.OU, "mean(income) - 2*mean(age)", ("age", "income"), scale=100)
    value, _ = run(ou_keys, spec, cols)
    assert value == pytest.approx(cols["income"].mean() - 2 * cols["age"].mean(), abs=1e-9)
