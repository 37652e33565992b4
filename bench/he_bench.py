"""Side-by-side HE throughput: HEU ZPaillier and OU vs phe (+gmpy2), and TenSEAL CKKS.

Run from the repository root::

    .venv/bin/python bench/he_bench.py            # Paillier-2048, prints a markdown table
    .venv/bin/python bench/he_bench.py --quick    # smaller counts, for a smoke run

Rows marked "datum" go through `compute.he` end to end (envelopes, checks, canonical
serialization); the other rows call the libraries directly. One process, wall clock.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compute.he import HETaskSpec, Scheme, decrypt, encrypt_columns, evaluate, generate_keys  # noqa: E402

Row = tuple[str, str, int, float]  # (library, operation, count, ops per second)


def timed(count: int, fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return count / (time.perf_counter() - start)


def bench_phe(bits: int, n: int) -> list[Row]:
    from phe import paillier

    pk, sk = paillier.generate_paillier_keypair(n_length=bits)
    xs = [random.randrange(-(10**9), 10**9) for _ in range(n)]
    cts: list[Any] = []
    rows = [("phe", "encrypt", n, timed(n, lambda: cts.extend(pk.encrypt(x) for x in xs)))]
    rows.append(("phe", "decrypt", n, timed(n, lambda: [sk.decrypt(c) for c in cts])))
    rows.append(
        (
            "phe",
            "add ct+ct",
            n,
            timed(n, lambda: [a + b for a, b in zip(cts, cts[1:] + cts[:1], strict=True)]),
        )
    )
    rows.append(("phe", "mul ct*pt", n, timed(n, lambda: [c * 12345 for c in cts])))
    return rows


def bench_heu(scheme: Scheme, bits: int, n: int) -> list[Row]:
    from heu import numpy as hnp
    from heu import phe

    kit = hnp.setup(phe.SchemaType.ZPaillier if scheme is Scheme.ZPAILLIER else phe.SchemaType.OU, bits)
    enc = kit.integer_encoder(scale=1)
    xs = np.array([random.randrange(-(10**9), 10**9) for _ in range(n)], dtype=np.int64)
    plain = kit.array(xs, enc)
    weights = kit.array(np.full(n, 12345, dtype=np.int64), enc)
    box: dict[str, Any] = {}
    name = f"heu {scheme.value}"
    rows = [(name, "encrypt", n, timed(n, lambda: box.update(ct=kit.encryptor().encrypt(plain))))]
    rows.append((name, "decrypt", n, timed(n, lambda: kit.decryptor().decrypt(box["ct"]))))
    rows.append((name, "add ct+ct", n, timed(n, lambda: kit.evaluator().add(box["ct"], box["ct"]))))
    rows.append((name, "mul ct*pt", n, timed(n, lambda: kit.evaluator().mul(box["ct"], weights))))
    return rows


def bench_datum_paillier(scheme: Scheme, bits: int, n: int) -> list[Row]:
    keys = generate_keys(scheme, key_bits=bits)
    data = {"x": np.random.default_rng(1).integers(-(10**9), 10**9, n), "y": np.arange(n)}
    spec = HETaskSpec(scheme, "x + y", ("x", "y"), scale=1)
    box: dict[str, Any] = {}
    name = f"datum {scheme.value}"
    rows = [
        (
            name,
            "encrypt (2 columns)",
            2 * n,
            timed(2 * n, lambda: box.update(c=encrypt_columns(keys, data, spec))),
        )
    ]
    rows.append(
        (
            name,
            "evaluate x + y (cold: loads the key)",
            n,
            timed(n, lambda: box.update(r=evaluate(keys.public_context, box["c"], "x + y"))),
        )
    )
    rows.append((name, "decrypt column", n, timed(n, lambda: decrypt(keys, box["r"], spec))))
    weights = ",".join(str(k) for k in np.random.default_rng(2).integers(1, 1000, n))
    rows.append(
        (
            name,
            "evaluate dot(x, w) (key cached)",
            n,
            timed(n, lambda: evaluate(keys.public_context, box["c"], f"dot(x,[{weights}])")),
        )
    )
    return rows


def bench_ckks(slots: int = 4096) -> list[Row]:
    import tenseal as ts

    keys = generate_keys(Scheme.CKKS)
    rng = np.random.default_rng(3)
    x, y, w = rng.normal(0, 1, slots), rng.normal(0, 1, slots), rng.normal(0, 1, slots).round(4)
    ctx = keys.secret
    ex, ey = ts.ckks_vector(ctx, x.tolist()), ts.ckks_vector(ctx, y.tolist())
    rows = [("tenseal ckks", f"encrypt {slots} values", 1, timed(1, lambda: ts.ckks_vector(ctx, x.tolist())))]
    rows.append(("tenseal ckks", f"dot ct.ct ({slots})", 1, timed(1, lambda: ex.dot(ey))))
    rows.append(("tenseal ckks", f"dot ct.pt ({slots})", 1, timed(1, lambda: ex.dot(w.tolist()))))
    spec = HETaskSpec(Scheme.CKKS, "sum(x*y)", ("x", "y"), scale=2**40)
    box: dict[str, Any] = {}
    rows.append(
        (
            "datum ckks",
            f"encrypt 2x{slots}",
            1,
            timed(1, lambda: box.update(c=encrypt_columns(keys, {"x": x, "y": y}, spec))),
        )
    )
    rows.append(
        ("datum ckks", "evaluate sum(x*y) (cold: loads 35 MB context)", 1,
         timed(1, lambda: box.update(r=evaluate(keys.public_context, box["c"], spec.formula))))
    )  # fmt: skip
    rows.append(
        ("datum ckks", "evaluate sum(x*y) (context cached)", 1,
         timed(1, lambda: evaluate(keys.public_context, box["c"], spec.formula)))
    )  # fmt: skip
    err = abs(decrypt(keys, box["r"], spec) - float(x @ y))
    print(f"ckks sum(x*y) over {slots} values: |error| = {err:.2e}", file=sys.stderr)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bits", type=int, default=2048)
    parser.add_argument("--n", type=int, default=2000, help="values per HEU / datum measurement")
    parser.add_argument("--phe-n", type=int, default=200, help="values per phe measurement")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n, phe_n = (200, 30) if args.quick else (args.n, args.phe_n)
    random.seed(0)
    rows = bench_phe(args.bits, phe_n)
    for scheme in (Scheme.ZPAILLIER, Scheme.OU):
        rows += bench_heu(scheme, args.bits, n)
    for scheme in (Scheme.ZPAILLIER, Scheme.OU):
        rows += bench_datum_paillier(scheme, args.bits, n)
    rows += bench_ckks()
    phe = {op: rate for lib, op, _, rate in rows if lib == "phe"}
    print(f"Paillier key: {args.bits} bits; CKKS: N=8192, scale 2^40\n")
    print("| library | operation | count | ops/s | vs phe |")
    print("|---|---|---:|---:|---:|")
    for lib, op, count, rate in rows:
        base = phe.get(op) or (phe.get("encrypt") if op.startswith("encrypt") and "ckks" not in lib else None)
        ratio = f"{rate / base:.0f}x" if base and lib != "phe" else ""
        print(f"| {lib} | {op} | {count} | {rate:,.1f} | {ratio} |")


if __name__ == "__main__":
    main()
