"""A compromised component flooding its own sidecar: run inside a component container (the probe
image has python3), fed on stdin, ``python3 - MODE SECONDS SUBJECT``; standard library only.

It speaks the NATS protocol on raw sockets, as fast as the kernel takes the bytes (a client library
would be the bottleneck, and an attacker uses none), to the URL in the container's NATS_URL (its
sidecar), and connects again whenever the sidecar cuts it off. Modes (issue 19, attack 3):
  small    16-byte messages on SUBJECT, as fast as possible
  big      10 MB messages on SUBJECT
  conns    as many connections as the sidecar accepts, up to 1,500, held open
  subs     20,000 queue subscriptions on SUBJECT, each in its own queue group
On exit it prints one JSON line: what it sent and what the sidecar said (-ERR lines, counted)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
import urllib.parse

CONNECT = b'CONNECT {"verbose":false,"pedantic":false,"name":"flooder","lang":"raw","version":"0"}\r\n'
BIG = 10 * 1000 * 1000
CONNECTIONS = 1500
SUBSCRIPTIONS = 20_000


def address() -> tuple[str, int]:
    url = urllib.parse.urlsplit(os.environ.get("NATS_URL", "nats://bus:4222"))
    return url.hostname or "bus", url.port or 4222


def connect(timeout: float = 2.0) -> socket.socket:
    sock = socket.create_connection(address(), timeout=timeout)
    sock.recv(4096)  # INFO
    sock.sendall(CONNECT + b"PING\r\n")
    return sock


_partial: dict[int, bytes] = {}  # socket -> the start of a line the server has not finished yet


def drain(sock: socket.socket, errors: dict[str, int]) -> bool:
    """Read what the server sent without waiting; answer its PINGs. False once it closed. (No
    select(): it fails on descriptors above 1024, and the connection flood holds 1,500.)"""
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        while True:
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                return True
            except OSError:
                return False
            if not data:
                return False
            # A line may end in the next read: keep its start until then.
            *lines, _partial[sock.fileno()] = (_partial.get(sock.fileno(), b"") + data).split(b"\r\n")
            for line in lines:
                if line.startswith(b"-ERR"):
                    text = line.decode(errors="replace")[:120]
                    errors[text] = errors.get(text, 0) + 1
                elif line == b"PING":
                    try:
                        sock.sendall(b"PONG\r\n")
                    except OSError:
                        return False
    finally:
        with contextlib.suppress(OSError):
            sock.settimeout(timeout)


def publish(subject: str, size: int, seconds: float) -> dict[str, object]:
    payload = b"x" * size
    one = b"PUB %s %d\r\n%s\r\n" % (subject.encode(), size, payload)
    batch = one * max(1, 65536 // len(one))
    per_batch = batch.count(b"PUB ")
    sent = connections = refused = 0
    errors: dict[str, int] = {}
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            sock = connect()
            connections += 1
        except OSError:
            refused += 1
            time.sleep(0.05)
            continue
        sock.settimeout(10.0)
        try:
            while time.monotonic() < end:
                sock.sendall(batch)
                sent += per_batch
                if not drain(sock, errors):
                    break
        except OSError:
            pass
        with contextlib.suppress(OSError):
            drain(sock, errors)
        sock.close()
    return {
        "sent": sent,
        "bytes": sent * size,
        "connections": connections,
        "refused": refused,
        "errors": errors,
    }


def hold_connections(seconds: float) -> dict[str, object]:
    """Open up to CONNECTIONS, and every second open again the ones the sidecar closed."""
    held: list[socket.socket] = []
    errors: dict[str, int] = {}
    most = failed = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        while len(held) < CONNECTIONS and time.monotonic() < end:
            try:
                held.append(connect())
            except OSError:
                failed += 1
                break
        time.sleep(1.0)
        alive = [sock for sock in held if drain(sock, errors)]
        for sock in set(held) - set(alive):
            sock.close()
        held = alive
        most = max(most, len(held))
    for sock in held:
        sock.close()
    return {"most_open": most, "failed_to_connect": failed, "errors": errors}


def subscribe(subject: str, seconds: float) -> dict[str, object]:
    errors: dict[str, int] = {}
    sent = connections = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            sock = connect()
            connections += 1
        except OSError:
            time.sleep(0.05)
            continue
        lines = b"".join(b"SUB %s q%d %d\r\n" % (subject.encode(), i, i) for i in range(SUBSCRIPTIONS))
        try:
            sock.sendall(lines)
            sent += SUBSCRIPTIONS
            # Read every answer: a sidecar under its CPU cap takes seconds to refuse 20,000 of them
            # on a busy machine. Until it has been quiet for a second past the flood's end (at most
            # 30 s more).
            last, quiet_since, hard = -1, time.monotonic(), end + 30
            while drain(sock, errors):
                now, said = time.monotonic(), sum(errors.values())
                if said != last:
                    last, quiet_since = said, now
                elif now >= end and now - quiet_since > 1.0:
                    break
                if now > hard:
                    break
                time.sleep(0.1)
        except OSError:
            pass
        _partial.pop(sock.fileno(), None)
        sock.close()
    return {"sent": sent, "connections": connections, "errors": errors}


def main() -> None:
    mode, seconds, subject = sys.argv[1], float(sys.argv[2]), sys.argv[3]
    began = time.monotonic()
    if mode == "small":
        result = publish(subject, 16, seconds)
    elif mode == "big":
        result = publish(subject, BIG, seconds)
    elif mode == "conns":
        result = hold_connections(seconds)
    elif mode == "subs":
        result = subscribe(subject, seconds)
    else:
        raise SystemExit(f"unknown mode {mode}")
    result["mode"] = mode
    result["seconds"] = round(time.monotonic() - began, 2)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
