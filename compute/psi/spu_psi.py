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

from dataclasses import dataclass
from pathlib import Path

from compute.errors import ComputeError, ProtocolAbort
from compute.psi.link import LinkConfig, LinkSession, run_in_worker
from compute.psi.spec import Protocol

_LIBPSI_NAMES = {
    Protocol.RR22: "PROTOCOL_RR22",
    Protocol.KKRT: "PROTOCOL_KKRT",
    Protocol.ECDH: "PROTOCOL_ECDH",
}
_INPUT, _OUTPUT, _COLUMN = "input.csv", "output.csv", "k"


@dataclass(frozen=True)
class LibpsiOutcome:
    """The receiver's intersecting digests (None at a non-receiver) and libpsi's counts."""

    matched: tuple[bytes, ...] | None
    original_count: int


def run_spu_psi(
    protocol: Protocol,
    receivers: tuple[int, ...],
    digests: tuple[bytes, ...],
    link: LinkConfig,
    work_dir: Path,
    handshake: bytes,
) -> LibpsiOutcome:
    """Run libpsi for this party; return its view of the intersection."""
    if protocol not in _LIBPSI_NAMES:
        raise ComputeError(f"libpsi does not run protocol {protocol}")
    return run_in_worker(
        _libpsi_target, (_LIBPSI_NAMES[protocol], receivers, digests), link, work_dir, handshake
    )


def _libpsi_target(
    session: LinkSession, protocol_name: str, receivers: tuple[int, ...], digests: tuple[bytes, ...]
) -> LibpsiOutcome:
    from spu import psi  # native; imported only inside the worker

    # libpsi cannot run on an empty input: tell the peer first whether we have any keys.
    session.channel.send(b"\x01" if digests else b"\x00")
    peer_has_keys = session.channel.recv(1) == b"\x01"
    is_receiver = session.rank in receivers
    if not digests or not peer_has_keys:
        return LibpsiOutcome(() if is_receiver else None, len(digests))
    in_path, out_path = session.work_dir / _INPUT, session.work_dir / _OUTPUT
    with open(in_path, "w", encoding="ascii") as handle:
        handle.write(_COLUMN + "\n")
        handle.writelines(d.hex() + "\n" for d in digests)
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
        output_params=psi.OutputParams(type=psi.SourceType.SOURCE_TYPE_FILE_CSV, path=str(out_path)),
        join_conf=psi.ResultJoinConfig(type=psi.ResultJoinType.JOIN_TYPE_INNER_JOIN),
    )
    try:
        report = psi.psi_execute(config, session.lctx)
    except RuntimeError as exc:
        raise ProtocolAbort(f"libpsi failed: {str(exc).splitlines()[0][:200]}") from None
    if not is_receiver:
        out_path.unlink(missing_ok=True)
        return LibpsiOutcome(None, int(report.original_count))
    matched = _read_digests(out_path)
    if len(matched) != int(report.intersection_count):
        raise ComputeError("libpsi output does not match its reported intersection size")
    return LibpsiOutcome(matched, int(report.original_count))


def _read_digests(path: Path) -> tuple[bytes, ...]:
    with open(path, encoding="ascii") as handle:
        lines = [line.strip().strip('"') for line in handle]
    if not lines or lines[0] != _COLUMN:
        raise ComputeError("unexpected libpsi output header")
    return tuple(bytes.fromhex(line) for line in lines[1:] if line)
