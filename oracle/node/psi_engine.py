"""The provider's engine for one PSI session, whatever the mode (docs/PSI_NETWORK.md).

Plain PSI runs `compute.psi.run_psi` as rank 1 (a receiver only with ``reveal=both``);
labeled PSI runs `run_labeled` as the provider with the prepared table (`psi_labels`). Both
run in an engine process over the SPU link, supervised from a daemon thread, so the event
loop never blocks and a stopping node never waits for it.

With ``reveal=both`` the provider's own matching rows are written to
``<data_dir>/datasets/<id>/results/task-<task>.csv`` (0600 in a 0700 directory: only the
node's operator reads them); nothing else about the intersection is kept.
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path

from compute.psi import (
    DhProvider,
    LinkConfig,
    PartyData,
    ProviderReport,
    PsiResult,
    Role,
    Table,
    run_labeled,
    run_psi,
)
from compute.psi.he_psi import HeSenderTable

from .psi_datasets import DATASETS_DIR
from .psi_spec import PsiTaskSpec

__all__ = ["EngineJob", "EngineOutcome", "provider_result_path", "start_engine", "write_provider_result"]

RESULTS_DIR = "results"


@dataclass(frozen=True)
class EngineJob:
    """What the provider's engine runs: the spec, its table and key column, and for labeled
    PSI the prepared side."""

    spec: PsiTaskSpec
    table: Table
    key: str
    prepared: DhProvider | HeSenderTable | None = None


@dataclass(frozen=True)
class EngineOutcome:
    """What the provider learned from one session: its key count, the query size (labeled
    PSI) and, with ``reveal=both``, its own matching rows."""

    own_size: int
    query_size: int | None = None
    rows: tuple[tuple[str, ...], ...] | None = None


def run_provider(job: EngineJob, link: LinkConfig, work_dir: Path) -> EngineOutcome:
    """This node's side of the session (blocking: run it in a thread)."""
    if job.spec.labeled:
        report = run_labeled(
            job.spec.labeled_spec(),
            role=Role.PROVIDER,
            transport=link,
            prepared=job.prepared,
            work_dir=work_dir,
        )
        assert isinstance(report, ProviderReport)
        return EngineOutcome(report.table_size, query_size=report.query_size)
    result: PsiResult = run_psi(
        job.spec.engine_spec(), data=PartyData(job.table, (job.key,)), link=link, work_dir=work_dir
    )
    rows = result.rows if result.is_receiver and job.spec.reveal == "both" else None
    return EngineOutcome(result.own_size, rows=rows)


def start_engine(
    job: EngineJob, link: LinkConfig, work_dir: Path, task_id: int
) -> asyncio.Future[EngineOutcome]:
    """Run `run_provider` in a daemon thread; the future settles on the running loop."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[EngineOutcome] = loop.create_future()

    def settle(result: EngineOutcome | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            assert result is not None
            future.set_result(result)

    def run() -> None:
        try:
            result = run_provider(job, link, work_dir)
        except BaseException as exc:  # noqa: BLE001 - handed to the event loop
            outcome: tuple[EngineOutcome | None, BaseException | None] = (None, exc)
        else:
            outcome = (result, None)
        try:
            loop.call_soon_threadsafe(settle, *outcome)
        except RuntimeError:  # the loop closed: the node stopped
            pass

    threading.Thread(target=run, name=f"psi-engine-{task_id}", daemon=True).start()
    return future


def provider_result_path(data_dir: Path, dataset_id: int, task_id: int) -> Path:
    """Where the provider's side of a ``reveal=both`` intersection is written."""
    return data_dir / DATASETS_DIR / str(dataset_id) / RESULTS_DIR / f"task-{task_id}.csv"


def write_provider_result(
    data_dir: Path, dataset_id: int, task_id: int, header: tuple[str, ...], rows: tuple[tuple[str, ...], ...]
) -> Path:
    """Write the provider's matching rows (its CSV header first), 0600, atomically."""
    path = provider_result_path(data_dir, dataset_id, task_id)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.part")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text.getvalue())
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    return path
