"""`Reveal.external()`: the model, its JSON form, and backward compatibility of the old form."""

from __future__ import annotations

import dataclasses
import json
import pickle

import pytest

from compute.errors import SpecError
from compute.mpc import Accuracy, Aggregate, Func, Partition, Query, Reveal, parse_sql

from .helpers import PEOPLE


def _query(reveal: Reveal) -> Query:
    return Query(
        (PEOPLE,), Partition.HORIZONTAL, (Aggregate(Func.COUNT),), None, None, 5, reveal, Accuracy(1e-3)
    )


def test_external_reveal_model() -> None:
    ext = Reveal.external()
    assert ext == Reveal(False, None, True) and ext.external is True
    assert ext.receivers(3) == () and ext.receivers(2) == ()
    assert Reveal.to(1).external is False and Reveal.everyone().external is False
    assert Reveal(False, 2) == Reveal.to(2)  # positional two-field construction still works
    assert dataclasses.replace(ext) == ext and pickle.loads(pickle.dumps(ext)) == ext
    assert hash(ext) == hash(Reveal(False, None, True)) and ext != Reveal.to(0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ext.external = False  # type: ignore[misc]
    with pytest.raises(SpecError, match="external reveal"):
        Reveal(True, None, True)
    with pytest.raises(SpecError, match="external reveal"):
        Reveal(False, 0, True)
    with pytest.raises(SpecError, match="reveal.external must be a boolean"):
        Reveal(False, None, 1)  # type: ignore[arg-type]
    with pytest.raises(SpecError, match="receiver must be a committee rank"):
        Reveal(False, None)


def test_query_json_round_trip_of_the_external_reveal() -> None:
    query = parse_sql(
        "SELECT mean(income) FROM people",
        [PEOPLE],
        min_group_size=5,
        reveal=Reveal.external(),
        accuracy=Accuracy(1e-3),
    )
    obj = json.loads(query.canonical_json())
    assert obj["reveal"] == {"public": False, "receiver": None, "external": True}
    again = Query.from_json(query.canonical_json())
    assert again == query and again.reveal.external and again.digest() == query.digest()
    assert _query(Reveal.external()).digest() != _query(Reveal.to(0)).digest()


def test_the_two_key_form_still_parses_and_keeps_its_hash() -> None:
    old = _query(Reveal.to(1)).to_json()
    assert old["reveal"] == {"public": False, "receiver": 1}  # committee reveals keep the old JSON
    assert Query.from_json(old).reveal == Reveal.to(1)
    explicit = {**old, "reveal": {"public": False, "receiver": 1, "external": False}}
    assert Query.from_json(explicit).digest() == Query.from_json(old).digest()
    public = {**old, "reveal": {"public": True, "receiver": None}}
    assert Query.from_json(public).reveal == Reveal.everyone()


@pytest.mark.parametrize(
    "reveal",
    [
        {"public": False, "receiver": 0, "external": True},
        {"public": True, "receiver": None, "external": True},
        {"public": False, "receiver": None, "external": "yes"},
        {"public": False, "receiver": None, "external": True, "extra": 1},
        {"public": False},
        [False, None, True],
    ],
)
def test_malformed_reveal_json_is_a_spec_error(reveal: object) -> None:
    with pytest.raises(SpecError):
        Query.from_json({**_query(Reveal.to(0)).to_json(), "reveal": reveal})
