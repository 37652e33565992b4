"""`make demo`, PSI: the car vendor and the bank, through the `datum` command.

1. The bank registers its list of middle-income clients on its own node (only a commitment
   goes on chain); the vendor learns which of its clients are on that list (RR22).
2. Labeled PSI: the bank also registers its client book (income class and credit band per
   client); the vendor gets those two columns for its matching clients only (DH-OPRF).
3. `--reveal size`: against the same book, the vendor learns only how many of its clients
   bank there.

Every answer is checked against the plaintext join.
"""

import csv
import random
from dataclasses import dataclass
from pathlib import Path

from demo_cli import check, console, datum, short
from rich.table import Table

CLASSES = ("low", "middle", "high")
BANDS = ("A", "B", "C", "D", "E")


@dataclass(frozen=True)
class Parties:
    """The vendor's clients (file order) and the bank's book: client -> (class, band)."""

    vendor: list[str]
    book: dict[str, tuple[str, str]]


def write_files(home: Path) -> Parties:
    rng = random.Random(11)
    population = [f"client-{i:05d}" for i in range(20_000)]
    vendor = rng.sample(population, 3_000)
    book = {
        c: (rng.choices(CLASSES, weights=(3, 5, 2))[0], rng.choice(BANDS))
        for c in rng.sample(population, 10_000)
    }
    with (home / "vendor.csv").open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["client_id", "model_interest"])
        out.writerows([c, f"model-{i % 3}"] for i, c in enumerate(vendor))
    with (home / "bank_middle_income.csv").open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["client_id", "income_class"])
        out.writerows([c, "middle"] for c, (cls, _) in book.items() if cls == "middle")
    with (home / "bank_book.csv").open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["client_id", "income_class", "credit_band"])
        out.writerows([c, cls, band] for c, (cls, band) in book.items())
    return Parties(vendor, book)


def register(home: Path, file: str) -> dict[str, object]:
    """The bank registers `file` on its own node 2 for PSI, at 5 DTM per task."""
    return datum(
        home, "data", "register", str(home / file), "--key", "client_id", "--node", "2",
        "--price", "5dtm", "--allow", "psi",
    )  # fmt: skip


def submit(home: Path, dataset_id: object, out: str, *mode: str) -> dict[str, object]:
    """The vendor's `datum task submit psi` against the bank's dataset."""
    return datum(
        home, "task", "submit", "psi", "--mine", str(home / "vendor.csv"), "--key", "client_id",
        "--with", str(dataset_id), *mode, "--out", str(home / out), "--wait",
    )  # fmt: skip


def read_rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as f:
        return list(csv.reader(f))


def chain_rows(table: Table, answer: dict[str, object]) -> None:
    tx = answer["tx"]
    assert isinstance(tx, dict)
    table.add_row("request / finalize tx", f"{short(tx['request'])} / {short(tx['finalize'])}")
    table.add_row("on chain", f"result commitment {short(answer['result_hash'])}, never a row")
    table.add_row("command wall time", f"{answer['_wall_s']:.1f} s (`datum task submit psi ... --wait`)")


def psi_examples(home: Path) -> None:
    """Run the three PSI steps; stop with a mismatch if any answer differs from plaintext."""
    parties = write_files(home)
    middle = {c for c, (cls, _) in parties.book.items() if cls == "middle"}

    # 1. which of the vendor's clients can afford the new car (RR22, reveal me)
    with console.status("PSI: the bank registers its list of middle-income clients on its own node"):
        listed = register(home, "bank_middle_income.csv")
    with console.status("PSI: the vendor intersects its client list with the bank's (RR22)"):
        answer = submit(home, listed["dataset_id"], "can_afford.csv", "--protocol", "rr22", "--reveal", "me")
    found = {row[0] for row in read_rows(home / "can_afford.csv")[1:]}
    expected = set(parties.vendor) & middle
    check(found == expected, f"RR22 PSI gave {len(found)} matches, plaintext {len(expected)}")
    table = Table(title="PSI: which of the vendor's clients can afford the new car")
    table.add_column("")
    table.add_column("value")
    table.add_row(
        "dataset (bank, on its node 2)",
        f"{listed['dataset_id']}: {len(middle)} rows, only a commitment on chain",
    )
    table.add_row("vendor's clients", str(len(parties.vendor)))
    table.add_row(
        "matches written for the vendor", f"{len(found)} (plaintext intersection {len(expected)}: equal)"
    )
    chain_rows(table, answer)
    console.print(table)

    # 2. labeled PSI: the bank's income class and credit band of the matching clients only
    with console.status("labeled PSI: the bank registers its client book on its node"):
        book = register(home, "bank_book.csv")
    with console.status(
        "labeled PSI: the vendor asks for income_class, credit_band of its matches (DH-OPRF)"
    ):
        labeled = submit(
            home,
            book["dataset_id"],
            "labels.csv",
            "--protocol",
            "ecdh",
            "--labels",
            "income_class,credit_band",
        )
    rows = read_rows(home / "labels.csv")
    join = [  # the plaintext inner join, in the vendor's row order
        [c, f"model-{i % 3}", *parties.book[c]] for i, c in enumerate(parties.vendor) if c in parties.book
    ]
    check(
        rows[0] == ["client_id", "model_interest", "income_class", "credit_band"],
        f"labeled PSI header {rows[0]}",
    )
    check(
        rows[1:] == join,
        f"labeled PSI gave {len(rows) - 1} rows, plaintext join {len(join)} (or labels differ)",
    )
    revealed = labeled["revealed"]
    assert isinstance(revealed, dict)
    table = Table(title="labeled PSI: the bank's labels for the vendor's matching clients only")
    table.add_column("")
    table.add_column("value")
    table.add_row("dataset (bank's book, node 2)", f"{book['dataset_id']}: {len(parties.book)} rows")
    table.add_row("mode", str(revealed["mode"]))
    table.add_row(
        "rows written for the vendor", f"{len(rows) - 1} (plaintext join {len(join)}: equal, labels too)"
    )
    table.add_row("first row", ", ".join(rows[1]))
    classes = {cls: sum(r[2] == cls for r in rows[1:]) for cls in CLASSES}
    table.add_row("income_class of the matches", ", ".join(f"{k} {v}" for k, v in classes.items()))
    table.add_row("vendor learned", str(revealed["requester"]))
    table.add_row("bank learned", str(revealed["provider"]))
    chain_rows(table, labeled)
    console.print(table)

    # 3. reveal size: only the number of the vendor's clients in the bank's book
    with console.status("PSI --reveal size: how many of the vendor's clients bank there (DH cardinality)"):
        sized = submit(home, book["dataset_id"], "size.csv", "--protocol", "ecdh", "--reveal", "size")
    size_rows = read_rows(home / "size.csv")
    size = len(set(parties.vendor) & set(parties.book))
    check(size_rows == [["intersection_size"], [str(size)]], f"PSI size gave {size_rows}, plaintext {size}")
    revealed = sized["revealed"]
    assert isinstance(revealed, dict)
    table = Table(title="PSI --reveal size: only the number")
    table.add_column("")
    table.add_column("value")
    table.add_row("intersection size", f"{size_rows[1][0]} (plaintext {size}: equal)")
    table.add_row("output file", "intersection_size and the number, no row")
    table.add_row("vendor learned", str(revealed["requester"]))
    table.add_row("bank learned", str(revealed["provider"]))
    chain_rows(table, sized)
    console.print(table)
