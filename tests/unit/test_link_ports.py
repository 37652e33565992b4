"""Link ports for SPU engines: drawn at random below the ephemeral range, free when drawn."""

from __future__ import annotations

import socket

from compute.spu_link import LINK_PORTS, pick_link_port


def test_picked_ports_are_free_in_range_and_not_handed_out_twice_in_a_row() -> None:
    picks = [pick_link_port("127.0.0.1") for _ in range(50)]
    assert all(p in LINK_PORTS for p in picks)
    # bind(0) tends to return the port just released; random draws over 12,768 ports
    # repeat within 50 draws with probability about 9%, back to back almost never
    assert all(a != b for a, b in zip(picks, picks[1:], strict=False))
    for port in picks[:5]:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # free right after it was picked


def test_a_port_in_use_is_not_picked() -> None:
    held = []
    try:
        for port in LINK_PORTS[:2000]:
            sock = socket.socket()
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                sock.close()
                continue
            held.append(sock)
        taken = {s.getsockname()[1] for s in held}
        picks = [pick_link_port("127.0.0.1") for _ in range(200)]
        assert not taken.intersection(picks)
    finally:
        for sock in held:
            sock.close()
