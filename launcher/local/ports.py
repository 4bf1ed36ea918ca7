"""A free TCP port for a listener that another process opens later (torchrun's rendezvous store)."""

from __future__ import annotations

import random
import socket
from pathlib import Path

EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LINUX_DEFAULT_EPHEMERAL = (32768, 60999)
LOWEST = 20000  # below: registered services (kubelet 10250, Prometheus 9090, ...) that may start later
TRIES = 64


def ephemeral_range(path: Path = EPHEMERAL_RANGE) -> tuple[int, int]:
    """The ports the kernel hands to outgoing connections (and to bind(port 0))."""
    try:
        low, high = map(int, path.read_text().split())
    except (OSError, ValueError):
        return LINUX_DEFAULT_EPHEMERAL
    return low, high


def _bindable(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1", ephemeral: tuple[int, int] | None = None) -> int:
    """A port nothing is bound to, picked outside the kernel's ephemeral range.

    The listener binds it seconds after this check, in another process. A port from bind(port 0) is an
    ephemeral one, so in that gap any outgoing connection on the machine may be given it, and the store
    then fails with EADDRINUSE (seen in CI, beside a running kubelet). Only explicit binds take the ports
    outside the range, and a random pick among thousands of them rarely meets another.
    """
    low, high = ephemeral or ephemeral_range()
    outside = [(LOWEST, low - 1), (high + 1, 65535)]
    spans = [(a, b) for a, b in outside if a <= b]
    for _ in range(TRIES if spans else 0):
        a, b = random.choice(spans)
        port = random.randint(a, b)
        if _bindable(host, port):
            return port
    with socket.socket() as s:  # the range covers every usable port: take what the kernel gives
        s.bind((host, 0))
        return s.getsockname()[1]
