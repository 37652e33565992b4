"""What every `make demo` step shares: the console, the `datum` command as a user types it,
and the check that stops the demo (non-zero exit) when an answer differs from plaintext."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console

console = Console()


class Mismatch(SystemExit):
    """A step's answer differs from its plaintext reference: the demo is a smoke test too."""


def check(ok: bool, what: str) -> None:
    """Stop the demo with exit code 1 and one line saying what differed, unless `ok`."""
    if not ok:
        console.print(f"[bold red]MISMATCH[/]: {what}")
        raise Mismatch(1)


def datum(home: Path, *args: str) -> dict[str, Any]:
    """Run `datum ARGS --json` against the demo's devnet; its one JSON object (the command's
    wall time, Python start included, is added as `_wall_s`)."""
    env = {**os.environ, "DATUM_HOME": str(home)}
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "oracle.cli", *args, "--json"], env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"datum {' '.join(args[:3])} failed: {done.stderr.strip()}")
    answer: dict[str, Any] = json.loads(done.stdout)
    answer["_wall_s"] = time.monotonic() - start
    return answer


def short(tx: object) -> str:
    """A transaction or hash shortened for a table cell."""
    text = str(tx)
    return text if len(text) <= 24 else f"{text[:14]}…{text[-6:]}"
