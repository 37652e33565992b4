"""HETaskSpec: validation, canonical JSON, and its SHA-256 hash."""

from __future__ import annotations

import hashlib
import json

import pytest

from compute.errors import ComputeError, SpecError
from compute.he import HELimits, HETaskSpec, Scheme, spec_from_json


def make(**overrides: object) -> HETaskSpec:
    fields: dict[str, object] = {
        "scheme": Scheme.OU,
        "formula": "2.5*age + 0.3*income - 7",
        "columns": ("age", "income"),
        "scale": 100,
    }
    fields.update(overrides)
    return HETaskSpec(**fields)  # type: ignore[arg-type]


def test_formula_is_stored_canonically() -> None:
    assert make().formula == "(((2.5*age)+(0.3*income))-7)"
    assert make(formula="((2.5 * age) + 0.30*income) - 7.0").formula == make().formula


def test_canonical_json_and_hash() -> None:
    spec = make()
    raw = spec.canonical_json()
    obj = json.loads(raw)
    assert obj["scheme"] == "ou" and obj["scale"] == 100 and obj["columns"] == ["age", "income"]
    assert obj["kind"] == "he" and obj["version"] == 1 and obj["limits"]["max_depth"] == 32
    assert raw == json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    assert spec.spec_hash() == hashlib.sha256(raw).digest()
    assert len(spec.spec_hash()) == 32


def test_hash_covers_every_field() -> None:
    base = make().spec_hash()
    assert make(formula="2.5*age + 0.3*income - 8").spec_hash() != base
    assert make(scheme=Scheme.ZPAILLIER).spec_hash() != base
    assert make(scale=1000).spec_hash() != base
    assert make(columns=("income", "age")).spec_hash() != base
    assert make(limits=HELimits(max_rows=10)).spec_hash() != base
    assert make(formula="2.5 * age + 0.3 * income - 7").spec_hash() == base


def test_json_round_trip_in_any_key_order() -> None:
    spec = make(scheme=Scheme.CKKS, scale=2**40, formula="sum(age*income)")
    obj = json.loads(spec.canonical_json())
    shuffled = json.dumps(dict(reversed(list(obj.items()))), indent=2)
    again = spec_from_json(shuffled)
    assert again == spec and again.spec_hash() == spec.spec_hash()


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda o: o.update(scheme="bfv"), "unknown scheme"),
        (lambda o: o.update(version=2), "unsupported spec"),
        (lambda o: o.update(extra=1), "extra"),
        (lambda o: o.pop("scale"), "scale"),
        (lambda o: o.update(scale="100"), "scale"),
        (lambda o: o["limits"].update(max_rows=0), "max_rows"),
        (lambda o: o.update(formula="sum(age"), "position 7"),
        (lambda o: o.update(formula="sum(salary)"), "unknown column 'salary'"),
    ],
)
def test_invalid_spec_json(mutate: object, fragment: str) -> None:
    obj = json.loads(make().canonical_json())
    mutate(obj)  # type: ignore[operator]
    with pytest.raises(SpecError, match=fragment):
        spec_from_json(json.dumps(obj))


def test_invalid_specs() -> None:
    with pytest.raises(SpecError, match="2\\^40"):
        make(scheme=Scheme.CKKS, scale=100)
    with pytest.raises(SpecError, match="fixed-point scale"):
        make(scale=0)
    with pytest.raises(SpecError, match="duplicate"):
        make(columns=("age", "age"))
    with pytest.raises(SpecError, match="not an identifier"):
        make(columns=("age", "annual income"))
    with pytest.raises(SpecError, match="columns"):
        make(columns=())
    with pytest.raises(SpecError, match="unknown column"):
        make(columns=("age",))
    with pytest.raises(ComputeError, match="cannot multiply two ciphertexts"):
        make(formula="sum(age*income)")
    with pytest.raises(SpecError, match="scale must be an integer"):
        make(scale=1.5)


def test_spec_json_size_limit() -> None:
    with pytest.raises(SpecError, match="over 1 MiB"):
        spec_from_json(b" " * (1024 * 1024 + 1))
