"""free_port: the local run's rendezvous port is picked outside the kernel's ephemeral range, so no outgoing
connection can be given it between the check and torchrun's bind."""

from __future__ import annotations

import socket

from launcher.local import ports
from launcher.local.ports import LINUX_DEFAULT_EPHEMERAL, ephemeral_range, free_port


def test_the_port_is_outside_the_ephemeral_range_and_free():
    low, high = ephemeral_range()
    for _ in range(20):
        port = free_port()
        assert not low <= port <= high and port >= ports.LOWEST, (port, low, high)
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_a_bound_port_is_not_given(monkeypatch):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        # The only port outside this range is the held one: free_port falls back to the kernel's pick.
        monkeypatch.setattr(ports, "LOWEST", taken)
        only_taken = (taken + 1, 65535)
        assert free_port(ephemeral=only_taken) != taken
    assert free_port(ephemeral=only_taken) == taken  # released: now it is the one free port outside


def test_a_range_covering_every_port_falls_back_to_the_kernel():
    port = free_port(ephemeral=(1, 65535))
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_the_range_is_read_from_the_kernel_or_defaults(tmp_path):
    (tmp_path / "range").write_text("40000\t50000\n")
    assert ephemeral_range(tmp_path / "range") == (40000, 50000)
    (tmp_path / "bad").write_text("no numbers\n")
    assert ephemeral_range(tmp_path / "bad") == LINUX_DEFAULT_EPHEMERAL
    assert ephemeral_range(tmp_path / "missing") == LINUX_DEFAULT_EPHEMERAL
