"""Gas of every external function (forge gas report) and the targeted gas measurements.

Runs the forge suite with `--gas-report`, keeps the deployable contracts' tables, and
runs the gas tests (`TaskManagerGas`, the election budget test) verbosely to collect the
numbers they log. Prints markdown for docs/BENCHMARKS.md.

    .venv/bin/python bench/gas_report.py > gas.md
"""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FORGE = ROOT / "node_modules/@foundry-rs/forge-linux-amd64/bin/forge"
DEPLOYABLE = ("DatumToken", "NodeRegistry", "DataRegistry", "TaskManager", "DataOracle", "CreditScoreLender")
TABLE_HEAD = re.compile(r"^\| (contracts/\S+):(\w+) Contract")


def forge(*args: str) -> str:
    done = subprocess.run([str(FORGE), *args], cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"forge {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done.stdout


def function_tables(report: str) -> list[str]:
    """Markdown tables of min/median/max gas per external function, per deployable contract."""
    out: list[str] = []
    current: str | None = None
    for line in report.splitlines():
        head = TABLE_HEAD.match(line)
        if head:
            current = head.group(2) if head.group(2) in DEPLOYABLE else None
            if current:
                out += [f"\n**{current}** (`{head.group(1)}`)\n", "| function | min | median | max | calls |"]
                out.append("|---|---:|---:|---:|---:|")
            continue
        if current is None:
            continue
        if line.startswith("╰"):
            current = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[0][:1].islower() and cells[1].isdigit():
            name, low, _avg, median, high, calls = cells
            out.append(f"| `{name}` | {low} | {median} | {high} | {calls} |")
    return out


def logged_numbers(verbose: str) -> list[str]:
    """The `name: gas` lines the gas tests log."""
    lines, label = [], ""
    for line in verbose.splitlines():
        text = line.strip()
        if text.startswith("electCommittee gas"):
            label = text  # the election test logs its label and its number on two lines
        elif re.search(r"\d{4,}$", text) and any(w in text for w in ("gas", "requestTask", "submitResult")):
            lines.append(f"- {label + ': ' if text.startswith('gas ') and label else ''}{text}")
    return lines


def main() -> None:
    report = forge("test", "--gas-report")
    targeted = forge("test", "--match-test", "Gas", "-vv")
    print("### Targeted measurements (execution gas, without the 21k transaction base)\n")
    print("\n".join(logged_numbers(targeted)))
    print("\n### Every external function (forge gas report over the whole suite)\n")
    print("Includes the 21k base and calldata; min/max span revert paths and every fuzz/invariant input.")
    print("\n".join(function_tables(report)))


if __name__ == "__main__":
    main()
