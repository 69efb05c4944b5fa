"""Which CA the host's clients trust for a ``tls://`` bus URL (bus.tls).

Every host-side client (the gate's round trip, monitoring over NATS, ``status``, ``request``,
``credentials rotate``, ``bench``) reaches the bus by a URL, and the CA a URL's certificate chains to
is known at the one place such URLs are made from a stack (``targets.base.bus_endpoints``), so it is
registered there, per address, rather than passed down through every function that takes a URL. A
``tls://`` URL nobody registered is checked against ``$NATS_CA_FILE`` when set (what ``env`` and
``up --env-file`` write, so ``bench --url "$NATS_URL"`` works in a pipeline), else the system's CAs
(a user's certificate from a public CA); a ``nats://`` URL gets no TLS: the client port refuses it
when it requires TLS, which is the promise the tests check.

The host's clients do the TLS handshake first, before the server's INFO (nats-py's
``tls_handshake_first``; the hub's ``handshake_first: auto`` takes both kinds of client). In NATS's
usual order (INFO in clear, then the upgrade) nats-py upgrades only when the INFO says
``tls_required``, whatever the URL's scheme: anything answering at the address with an INFO that does
not ask for TLS (a bus with TLS off, or someone in between) would get the CONNECT, and the operator's
password, in clear. Handshake first, such a server fails the handshake before a byte of it is sent.
"""

from __future__ import annotations

import functools
import logging
import os
import ssl
import threading
import urllib.parse
from pathlib import Path


class _QuietSslEof(logging.Filter):
    """nats-py's protocol asks to keep a half-closed connection, which asyncio cannot over TLS and
    says so on stderr at every close: noise to a user, as the connection is being closed anyway."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "eof_received() has no effect when using ssl" not in record.getMessage()


logging.getLogger("asyncio").addFilter(_QuietSslEof())

_lock = threading.Lock()
_trusted: dict[tuple[str, int], tuple[str | None, str | None]] = {}  # address -> (CA file, name)

TLS_SCHEME = "tls"
CA_FILE_VARIABLE = "NATS_CA_FILE"  # as the outputs name it (interfaces/outputs.py)


def trust(url: str, ca_file: str | None, server_name: str | None = None) -> None:
    """Trust ``ca_file`` (a PEM file; None: the system's CAs) for the bus at ``url``'s host and
    port, whose certificate must name ``server_name`` (None: the URL's host)."""
    key = _address(url)
    if key is None:
        return
    with _lock:
        if ca_file is None and server_name is None:
            _trusted.pop(key, None)
        else:
            _trusted[key] = (ca_file, server_name)


def server_name(url: str) -> str | None:
    """The name ``url``'s server certificate must carry: the URL's host unless registered otherwise."""
    key = _address(url)
    with _lock:
        found = _trusted.get(key) if key is not None else None
    return (found[1] if found else None) or urllib.parse.urlsplit(url).hostname


def uses_tls(url: str) -> bool:
    return urllib.parse.urlsplit(url).scheme == TLS_SCHEME


def context(url: str) -> ssl.SSLContext | None:
    """The TLS context for a client of ``url``: None for ``nats://``; for ``tls://``, one that checks
    the server's certificate and name against the registered CA (else the system's), TLS 1.2 at
    least. Cached per CA file and its modification time (about 1 ms to load otherwise)."""
    if not uses_tls(url):
        return None
    key = _address(url)
    with _lock:
        found = _trusted.get(key) if key is not None else None
    ca_file = (found[0] if found else None) or os.environ.get(CA_FILE_VARIABLE) or None
    if ca_file is None:
        return _context(None, 0)
    try:
        stamp = Path(ca_file).stat().st_mtime_ns
    except OSError:
        stamp = 0  # ssl then says which file it could not load
    return _context(ca_file, stamp)


@functools.lru_cache(maxsize=16)
def _context(ca_file: str | None, _stamp: int) -> ssl.SSLContext:
    tls = ssl.create_default_context(cafile=ca_file) if ca_file else ssl.create_default_context()
    tls.minimum_version = ssl.TLSVersion.TLSv1_2
    return tls


def _address(url: str) -> tuple[str, int] | None:
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname or port is None:
        return None
    return parts.hostname, port
