"""The host's TCP listeners on wildcard addresses (``0.0.0.0`` and ``::``), read from ``/proc``.

A listener on a wildcard address answers on every address of the host, including the gateway address
each Docker bridge gets on the host. Docker filters what a container sends elsewhere, but not what it
sends to the host itself, so such a listener answers a shell inside any component, on its internal
network too (issue 19, item 7). ``doctor`` lists them; ``nachos-deploy firewall install`` closes the
path (docs/security.md#the-host-behind-the-private-networks).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

LISTEN = "0A"  # the state column of /proc/net/tcp for a listening socket
WILDCARDS = {"00000000": "0.0.0.0", "0" * 32: "::"}
PROC = Path("/proc")


@dataclass(frozen=True)
class Listener:
    """One listening socket: its wildcard address, its port, and the program that holds it (when this
    user may see it: another user's processes need root)."""

    address: str
    port: int
    inode: int
    program: str = ""

    def describe(self) -> str:
        where = f"[{self.address}]:{self.port}" if ":" in self.address else f"{self.address}:{self.port}"
        return f"{where} ({self.program})" if self.program else where


def parse_proc_net_tcp(text: str) -> list[Listener]:
    """The wildcard listeners in the text of ``/proc/net/tcp`` or ``/proc/net/tcp6``: a header line,
    then one socket a line (``sl local_address rem_address st ... uid timeout inode``), addresses as
    hex ``ADDR:PORT``. Sockets bound to one address (127.0.0.1, a LAN address) are not wildcards."""
    found: list[Listener] = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or fields[3] != LISTEN:
            continue
        address, _, port = fields[1].partition(":")
        if address in WILDCARDS:
            found.append(Listener(WILDCARDS[address], int(port, 16), int(fields[9])))
    return found


def wildcard_listeners(proc: Path = PROC) -> list[Listener]:
    """This network namespace's TCP listeners on 0.0.0.0 and ::, sorted by port, each named by the
    program holding it when it can be seen; none when ``/proc`` cannot be read (not Linux)."""
    found: list[Listener] = []
    for name in ("tcp", "tcp6"):
        try:
            found.extend(parse_proc_net_tcp((proc / "net" / name).read_text()))
        except OSError:
            continue
    owners = _socket_owners(proc, {listener.inode for listener in found})
    named = {Listener(f.address, f.port, f.inode, owners.get(f.inode, "")) for f in found}
    return sorted(named, key=lambda listener: (listener.port, listener.address))


def _socket_owners(proc: Path, inodes: set[int]) -> dict[int, str]:
    """Socket inode → ``program pid N``, from the ``socket:[inode]`` links of each process's open
    files; processes this user may not look into are skipped."""
    owners: dict[int, str] = {}
    if not inodes:
        return owners
    for entry in proc.iterdir() if proc.is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            links = list((entry / "fd").iterdir())
        except OSError:
            continue
        for link in links:
            try:
                target = str(link.readlink())
            except OSError:
                continue
            if target.startswith("socket:[") and int(target[8:-1]) in inodes:
                try:
                    program = (entry / "comm").read_text().strip()
                except OSError:
                    program = "?"
                owners.setdefault(int(target[8:-1]), f"{program} pid {entry.name}")
    return owners
