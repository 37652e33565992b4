"""`evaluate` is deterministic: byte-identical output for identical input, across processes,
so committee members can sign `result_digest(output)`."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from compute.he import HETaskSpec, OwnerKeys, Scheme, decrypt, encrypt_columns, evaluate, result_digest

from .helpers import ckks_spec, rng

X = rng(21).integers(-500, 500, 64)
Y = rng(22).integers(0, 100, 64)

DOT = f"dot(x, [{','.join(str(i % 5 - 2) for i in range(64))}])"
FORMULAS = {
    Scheme.OU: ["sum(x)", "2.5*x - 0.5*y + 3", DOT],
    Scheme.ZPAILLIER: ["mean(x - y)", "-x + y"],
    Scheme.CKKS: ["sum(x*y)", "2.5*x - 0.5*y + 3", "mean(x) + 1"],
}


def spec_for(scheme: Scheme, formula: str) -> HETaskSpec:
    return (
        ckks_spec(formula, ("x", "y"))
        if scheme is Scheme.CKKS
        else HETaskSpec(scheme, formula, ("x", "y"), 1)
    )


@pytest.mark.parametrize("scheme", list(FORMULAS), ids=[s.value for s in FORMULAS])
def test_same_inputs_same_bytes(
    scheme: Scheme, key_store: dict[Scheme, OwnerKeys], request: pytest.FixtureRequest
) -> None:
    keys = request.getfixturevalue(
        {Scheme.OU: "ou_keys", Scheme.ZPAILLIER: "zp_keys", Scheme.CKKS: "ckks_keys"}[scheme]
    )
    blob = encrypt_columns(keys, {"x": X, "y": Y}, spec_for(scheme, "sum(x)"))
    for formula in FORMULAS[scheme]:
        first = evaluate(keys.public_context, blob, formula)
        second = evaluate(keys.public_context, blob, formula)
        assert first == second
        assert result_digest(first) == result_digest(second) == hashlib.sha256(first).digest()


def test_spelling_does_not_change_the_result(ou_keys: OwnerKeys) -> None:
    blob = encrypt_columns(ou_keys, {"x": X, "y": Y}, spec_for(Scheme.OU, "sum(x)"))
    assert evaluate(ou_keys.public_context, blob, "2*x+1") == evaluate(
        ou_keys.public_context, blob, "((2 * x)) + 1.0"
    )


def test_encryption_is_randomized_but_results_agree(ou_keys: OwnerKeys) -> None:
    spec = spec_for(Scheme.OU, "sum(x)")
    one = encrypt_columns(ou_keys, {"x": X, "y": Y}, spec)
    two = encrypt_columns(ou_keys, {"x": X, "y": Y}, spec)
    assert one != two  # fresh randomness per encryption...
    r1, r2 = evaluate(ou_keys.public_context, one, "sum(x)"), evaluate(ou_keys.public_context, two, "sum(x)")
    assert r1 != r2  # ...so results bind to their exact inputs,
    assert decrypt(ou_keys, r1, spec) == decrypt(ou_keys, r2, spec) == int(X.sum())  # and agree in value


NODE = """
import hashlib, sys
from pathlib import Path
from compute.he import evaluate
d = Path(sys.argv[1])
out = evaluate((d / "ctx").read_bytes(), (d / "cols").read_bytes(), sys.argv[2])
print(hashlib.sha256(out).hexdigest())
"""


@pytest.mark.parametrize(
    ("scheme", "formula"), [(Scheme.OU, "2.5*x - y"), (Scheme.CKKS, "sum(x*y)")], ids=["ou", "ckks"]
)
def test_another_process_computes_the_same_bytes(
    scheme: Scheme, formula: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    keys = request.getfixturevalue("ou_keys" if scheme is Scheme.OU else "ckks_keys")
    blob = encrypt_columns(keys, {"x": X.astype(np.float64), "y": Y}, spec_for(scheme, formula))
    (tmp_path / "ctx").write_bytes(keys.public_context)
    (tmp_path / "cols").write_bytes(blob)
    here = hashlib.sha256(evaluate(keys.public_context, blob, formula)).hexdigest()
    root = Path(__file__).resolve().parents[3]
    done = subprocess.run(
        [sys.executable, "-c", NODE, str(tmp_path), formula],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=root,
        check=True,
    )
    assert done.stdout.strip().splitlines()[-1] == here  # HEU may log a line before it
