"""What runs in the node's worker processes: HE evaluation from files to a file.

Imported by spawned workers, so it imports `compute` only (no web3, no aiohttp). Inputs
and outputs are paths: tens of megabytes never cross the process pipe.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from compute.errors import ComputeError, SpecError

__all__ = ["EvalOutcome", "evaluate_he", "exit_with_parent", "warm_up"]


@dataclass(frozen=True)
class EvalOutcome:
    """How an evaluation ended: the result's sha256 and size, or a clear error."""

    ok: bool
    result_sha256: str = ""
    size_bytes: int = 0
    seconds: float = 0.0
    error: str = ""


def exit_with_parent(parent_pid: int, every_s: float = 1.0) -> None:
    """Pool initializer: end this worker when the node process is gone (even if it was
    SIGKILLed and could not shut its pool down)."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(every_s)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def warm_up() -> int:
    """Import the engines once (the first task then pays nothing: a provider's first stats
    share needs SPU and JAX, 1-2 s to import); returns the worker's pid."""
    import spu  # noqa: F401

    import compute.he  # noqa: F401
    import compute.mpc  # noqa: F401

    from . import stats_worker  # noqa: F401

    return os.getpid()


def evaluate_he(spec_path: str, context_path: str, columns_path: str, result_path: str) -> EvalOutcome:
    """Evaluate the spec's formula on the encrypted columns; write the result envelope.

    Spec and evaluation errors (`SpecError`, `ComputeError`) come back as an outcome with
    the message; anything else propagates (a bug, or a native crash).
    """
    from compute.he import evaluate, spec_from_json

    started = time.perf_counter()
    try:
        spec = spec_from_json(Path(spec_path).read_bytes())
        context = Path(context_path).read_bytes()
        columns = Path(columns_path).read_bytes()
        result = evaluate(context, columns, spec.formula, limits=spec.limits)
    except (SpecError, ComputeError) as exc:
        return EvalOutcome(ok=False, error=str(exc), seconds=time.perf_counter() - started)
    out = Path(result_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    temp = out.with_name(f".{out.name}.{os.getpid()}.part")
    with temp.open("wb") as f:
        f.write(result)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temp, out)
    return EvalOutcome(
        ok=True,
        result_sha256=hashlib.sha256(result).hexdigest(),
        size_bytes=len(result),
        seconds=time.perf_counter() - started,
    )
