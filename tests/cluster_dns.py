"""A stand-in for cluster DNS (CoreDNS's `kubernetes` plugin), played by Debian's dnsmasq (package dnsmasq-base).

Only the names a headless Service gets, from its real Endpoints object (written by the endpoints controller
of kube-controller-manager): `<svc>.<ns>.svc.<domain>` -> the ready addresses, and
`<hostname>.<svc>.<ns>.svc.<domain>` -> the address of a pod that sets hostname and subdomain = the Service
(the controller puts that hostname on the address). A thread lists Services and Endpoints every `interval`
s, rewrites dnsmasq's addn-hosts file when they change and sends SIGHUP to reload it. Nothing else: no
ClusterIP Services (no kube-proxy here), no SRV or pod-IP records, no upstream forwarding (unknown names are
NXDOMAIN under the cluster domain, REFUSED elsewhere). dnsmasq listens on `listen_ip`:`port` only; the
kubelet's clusterDNS points at it, clusterDomain = `domain`.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

from poller import Poller


def query(server: str, name: str, port: int = 53, qtype: int = 1, timeout: float = 2.0) -> tuple[int, list[str]]:
    """One DNS query over UDP, as a stub resolver sends it: (rcode, A addresses of the answer)."""
    qid = int.from_bytes(os.urandom(2), "big")
    packet = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)  # RD set, one question
    packet += b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".")) + b"\0"
    packet += struct.pack(">HH", qtype, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(packet, (server, port))
        while True:
            reply = s.recv(4096)
            if reply[:2] == packet[:2]:
                break
    _, flags, qd, an, _, _ = struct.unpack(">HHHHHH", reply[:12])
    pos = 12
    for _ in range(qd):
        pos = _skip_name(reply, pos) + 4
    addresses = []
    for _ in range(an):
        pos = _skip_name(reply, pos)
        rtype, _, _, length = struct.unpack(">HHIH", reply[pos:pos + 10])
        pos += 10
        if rtype == 1 and length == 4:
            addresses.append(socket.inet_ntoa(reply[pos:pos + 4]))
        pos += length
    return flags & 0xF, sorted(addresses)


def _skip_name(msg: bytes, pos: int) -> int:
    while msg[pos]:
        if msg[pos] & 0xC0 == 0xC0:  # compression pointer ends the name
            return pos + 2
        pos += msg[pos] + 1
    return pos + 1


NOERROR, NXDOMAIN, REFUSED = 0, 3, 5


def records_from(services: list[dict], endpoints: list[dict], domain: str) -> dict[str, list[str]]:
    """Name -> addresses, as CoreDNS answers A queries for headless Services (ready addresses only)."""
    by_key = {(e["metadata"]["namespace"], e["metadata"]["name"]): e for e in endpoints}
    out: dict[str, set[str]] = {}
    for svc in services:
        if (svc.get("spec") or {}).get("clusterIP") != "None":
            continue
        ns, name = svc["metadata"]["namespace"], svc["metadata"]["name"]
        for subset in (by_key.get((ns, name)) or {}).get("subsets") or []:
            for addr in subset.get("addresses") or []:  # notReadyAddresses are left out, as CoreDNS does
                out.setdefault(f"{name}.{ns}.svc.{domain}", set()).add(addr["ip"])
                if addr.get("hostname"):
                    out.setdefault(f"{addr['hostname']}.{name}.{ns}.svc.{domain}", set()).add(addr["ip"])
    return {k: sorted(v) for k, v in sorted(out.items())}


class ClusterDNS(Poller):
    """dnsmasq on listen_ip:port serving the headless Services of every namespace of `plane` (ControlPlane.api)."""

    def __init__(self, plane, listen_ip: str, state_dir, domain: str = "cluster.local", port: int = 53,
                 interval: float = 0.5):
        self.plane, self.listen_ip, self.domain, self.port, self.interval = plane, listen_ip, domain, port, interval
        self.state_dir = Path(state_dir)
        self.hosts_file, self.log_file = self.state_dir / "cluster-hosts", self.state_dir / "dnsmasq.log"
        self.records: dict[str, list[str]] = {}  # what dnsmasq was last told
        self.errors: list[str] = []
        self.reloads = 0
        self.proc: subprocess.Popen | None = None

    def start(self) -> ClusterDNS:
        dnsmasq = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
        if not os.access(dnsmasq, os.X_OK):
            raise RuntimeError("cluster DNS needs dnsmasq (Debian package dnsmasq-base): "
                               "run scripts/install-test-deps.sh")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.hosts_file.write_text("")
        user = pwd.getpwuid(os.getuid()).pw_name  # stay this user: state_dir may be private to it
        group = grp.getgrgid(os.getgid()).gr_name
        self.proc = subprocess.Popen(
            [dnsmasq, "--keep-in-foreground", "--conf-file=/dev/null", "--pid-file=", f"--user={user}",
             f"--group={group}", f"--listen-address={self.listen_ip}", "--bind-interfaces", f"--port={self.port}",
             "--no-resolv", "--no-hosts", f"--addn-hosts={self.hosts_file}", f"--local=/{self.domain}/",
             "--bogus-priv", "--no-negcache", "--local-ttl=0", f"--log-facility={self.log_file}", "--log-queries"],
            stdout=subprocess.DEVNULL, stderr=(self.state_dir / "dnsmasq.stderr").open("w"))
        deadline = time.monotonic() + 20
        while True:  # ready once it answers (NXDOMAIN for a name under the domain)
            if self.proc.poll() is not None:
                raise RuntimeError(f"dnsmasq exited with {self.proc.returncode}: "
                                   f"{(self.state_dir / 'dnsmasq.stderr').read_text()[-1000:]}")
            try:
                query(self.listen_ip, f"ready.svc.{self.domain}", self.port, timeout=0.5)
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"dnsmasq on {self.listen_ip}:{self.port} did not answer in 20 s") from None
        self.refresh()
        self.start_polling("cluster-dns")
        return self

    def stop(self) -> None:
        self.stop_polling()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # by PID
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def poll(self) -> None:
        try:
            self.refresh()
        except Exception as e:  # noqa: BLE001 - keep serving the last names, as CoreDNS does when the API fails
            self.errors.append(str(e))

    def refresh(self) -> bool:
        """Read Services and Endpoints once; rewrite the hosts file and reload dnsmasq if the names changed."""
        services = (self.plane.api("GET", "/api/v1/services") or {}).get("items") or []
        endpoints = (self.plane.api("GET", "/api/v1/endpoints") or {}).get("items") or []
        records = records_from(services, endpoints, self.domain)
        if records == self.records:
            return False
        tmp = self.hosts_file.with_suffix(".tmp")
        tmp.write_text("".join(f"{ip} {name}\n" for name, ips in records.items() for ip in ips))
        tmp.replace(self.hosts_file)  # dnsmasq never reads a half-written file
        self.proc.send_signal(signal.SIGHUP)  # re-read addn-hosts, drop the cache
        self.records, self.reloads = records, self.reloads + 1
        return True
