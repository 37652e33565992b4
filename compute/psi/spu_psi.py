"""Two-party PSI through SPU's libpsi (RR22, KKRT, ECDH) over its own brpc link.

Each party calls `run_spu_psi` in its own process; the libpsi run happens in a worker process
(see link.py). libpsi reads and writes CSV files, so the worker writes, inside its private
run directory under the caller's work dir, one column of hex key digests (never the key text
or any other cell) and reads back the receiver's intersecting digests; the caller maps them
to its own rows. A non-receiver gets no output file at all. The run directory is removed
whatever happens.

Leakage: the receiver(s) learn which of their keys are in the intersection; both sides learn
the other's set size (inherent in these protocols). See docs/PSI.md.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compute.errors import ComputeError, ProtocolAbort
from compute.psi.link import EngineWorker, LinkConfig, LinkSession
from compute.psi.spec import Protocol

_LIBPSI_NAMES = {
    Protocol.RR22: "PROTOCOL_RR22",
    Protocol.KKRT: "PROTOCOL_KKRT",
    Protocol.ECDH: "PROTOCOL_ECDH",
}
_INPUT, _OUTPUT, _COLUMN = "input.csv", "output.csv", "k"
_DIGEST_BYTES = 32


@dataclass(frozen=True)
class LibpsiOutcome:
    """The receiver's intersecting digests (None at a non-receiver) and libpsi's counts.

    The digests cross the process pipe concatenated (`packed`): one bytes object pickles in
    milliseconds, a tuple of 10^5-10^6 small ones in a large fraction of a second.
    """

    packed: bytes | None
    original_count: int

    @property
    def matched(self) -> tuple[bytes, ...] | None:
        """The intersecting digests, or None at a non-receiver."""
        if self.packed is None:
            return None
        return tuple(self.packed[i : i + _DIGEST_BYTES] for i in range(0, len(self.packed), _DIGEST_BYTES))


def run_spu_psi(
    protocol: Protocol,
    receivers: tuple[int, ...],
    digests: tuple[bytes, ...],
    link: LinkConfig,
    work_dir: Path,
    handshake: bytes,
) -> LibpsiOutcome:
    """Run libpsi for this party; return its view of the intersection."""
    with EngineWorker(link, work_dir, handshake) as worker:
        return run_spu_psi_on(worker, protocol, receivers, digests)


def run_spu_psi_on(
    worker: EngineWorker, protocol: Protocol, receivers: tuple[int, ...], digests: tuple[bytes, ...]
) -> LibpsiOutcome:
    """`run_spu_psi` on a worker already started (and linked) while the digests were computed."""
    if protocol not in _LIBPSI_NAMES:
        raise ComputeError(f"libpsi does not run protocol {protocol}")
    if any(len(d) != _DIGEST_BYTES for d in digests):
        raise ComputeError("libpsi items are 32-byte key digests")
    # one bytes object crosses the pipe (a tuple of 10^6 small objects pickles slowly)
    return worker.run(_libpsi_target, (_LIBPSI_NAMES[protocol], receivers, b"".join(digests)))


def _libpsi_target(
    session: LinkSession, protocol_name: str, receivers: tuple[int, ...], packed: bytes
) -> LibpsiOutcome:
    from spu import psi  # native; imported only inside the worker

    count = len(packed) // _DIGEST_BYTES
    # libpsi cannot run on an empty input: tell the peer first whether we have any keys.
    session.channel.send(b"\x01" if count else b"\x00")
    peer_has_keys = session.channel.recv(1) == b"\x01"
    is_receiver = session.rank in receivers
    if not count or not peer_has_keys:
        return LibpsiOutcome(b"" if is_receiver else None, count)
    in_path, out_path = session.work_dir / _INPUT, session.work_dir / _OUTPUT
    _write_digests(in_path, packed)
    config = psi.PsiExecuteConfig(
        protocol_conf=psi.PsiProtocolConfig(
            protocol=getattr(psi.PsiProtocol, protocol_name),
            receiver_rank=receivers[0],
            broadcast_result=len(receivers) == 2,
            ecdh_params=psi.EcdhParams(curve=psi.EllipticCurveType.CURVE_25519),
        ),
        input_params=psi.InputParams(
            type=psi.SourceType.SOURCE_TYPE_FILE_CSV,
            path=str(in_path),
            selected_keys=[_COLUMN],
            keys_unique=True,
        ),
        # no alignment: libpsi would sort the output so both receivers list it in the same
        # order (an external sort, ~20% of an RR22 run at 10^6); we map digests to rows ourselves
        output_params=psi.OutputParams(
            type=psi.SourceType.SOURCE_TYPE_FILE_CSV, path=str(out_path), disable_alignment=True
        ),
        join_conf=psi.ResultJoinConfig(type=psi.ResultJoinType.JOIN_TYPE_INNER_JOIN),
    )
    try:
        report = psi.psi_execute(config, session.lctx)
    except RuntimeError as exc:
        raise ProtocolAbort(f"libpsi failed: {str(exc).splitlines()[0][:200]}") from None
    if not is_receiver:
        out_path.unlink(missing_ok=True)
        return LibpsiOutcome(None, int(report.original_count))
    packed = _read_packed(out_path)
    if len(packed) // _DIGEST_BYTES != int(report.intersection_count):
        raise ComputeError("libpsi output does not match its reported intersection size")
    return LibpsiOutcome(packed, int(report.original_count))


def _write_digests(path: Path, packed: bytes) -> None:
    """The CSV libpsi reads: a header, then one lowercase hex digest per line."""
    hexed = np.frombuffer(binascii.hexlify(packed), dtype=np.uint8).reshape(-1, 2 * _DIGEST_BYTES)
    lines = np.empty((hexed.shape[0], hexed.shape[1] + 1), dtype=np.uint8)
    lines[:, :-1] = hexed
    lines[:, -1] = ord("\n")
    with open(path, "wb") as handle:
        handle.write(_COLUMN.encode("ascii") + b"\n")
        handle.write(lines.tobytes())


def _read_digests(path: Path) -> tuple[bytes, ...]:
    """The digests of a libpsi output CSV, in file order."""
    raw = _read_packed(path)
    return tuple(raw[i : i + _DIGEST_BYTES] for i in range(0, len(raw), _DIGEST_BYTES))


def _read_packed(path: Path) -> bytes:
    """The digests of a libpsi output CSV, concatenated (header checked, quotes and CR stripped)."""
    with open(path, "rb") as handle:
        lines = handle.read().split(b"\n")
    if not lines or lines[0].strip().strip(b'"') != _COLUMN.encode("ascii"):
        raise ComputeError("unexpected libpsi output header")
    cells = [line.strip().strip(b'"') for line in lines[1:]]
    cells = [cell for cell in cells if cell]
    if any(len(cell) != 2 * _DIGEST_BYTES for cell in cells):
        raise ComputeError("unexpected libpsi output line")
    try:
        return binascii.unhexlify(b"".join(cells))
    except binascii.Error:
        raise ComputeError("unexpected libpsi output line") from None
