"""A server's monitoring read over NATS as the system account's user: ``$SYS.REQ.SERVER.<id>.CONNZ``
and the like, instead of the HTTP monitoring port.

The HTTP port answers anyone who reaches it (every connection, user name, address and subscription,
the names of failed logins), so the host no longer needs it published (issue 19, item 6). A request
goes to the server this connection reached (its id is in the INFO the server sends first), so a URL
reads one node, as an HTTP URL did, and the callers sum the nodes of a cluster as before.

It speaks the few lines of the NATS protocol this needs (INFO, CONNECT, SUB, PUB, PING, MSG/HMSG,
-ERR) over a blocking socket from the standard library: ``status`` loads no NATS client, and each
call is bounded by one deadline. The answer is ``{"server": {...}, "data": {...}}`` (or ``"error"``);
the ``data`` is the document the HTTP endpoint would have answered.
"""

from __future__ import annotations

import json
import secrets
import socket
import time
import urllib.parse
from typing import Any, BinaryIO

from nachos_deploy.bus import trust
from nachos_deploy.core.names import SYSTEM_READS
from nachos_deploy.core.results import redact

MONITOR_CONNECTION_NAME = "nachos-deploy-monitor"
"""Name of the monitoring reader's connection, so it can be told apart in ``/connz``."""

# The endpoint (its path) → the request subject's last token: the reads the hub lets the user make.
ENDPOINTS = {f"/{read.lower()}": read for read in SYSTEM_READS}
# HTTP query names whose option is spelled otherwise in a request's JSON body.
_OPTION_NAMES = {"subs": "subscriptions"}
_MAX_LINE = 64 * 1024
_MAX_ANSWER = 64 * 1024 * 1024  # a /connz of 10,000 connections is a few MB


class SysRequestError(Exception):
    """The request could not be made or was answered with an error; the message is one line."""


def options(query: str) -> dict[str, Any]:
    """The request's JSON options from an HTTP query string: ``true``/``1`` and numbers as such."""
    body: dict[str, Any] = {}
    for key, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
        name = _OPTION_NAMES.get(key, key)
        if value.lower() in ("true", "1", ""):
            body[name] = True
        elif value.lower() == "false":
            body[name] = False
        elif value.isdigit():
            body[name] = int(value)
        else:
            body[name] = value
    return body


def request(url: str, path: str, timeout: float) -> dict[str, Any]:
    """The ``data`` a server answers for ``path`` (``/connz?limit=10``), asked over NATS at ``url``
    (``nats://user:password@host:port``, the system user's; ``tls://`` on a bus with TLS) within
    ``timeout`` seconds. An unhealthy ``/healthz`` raises, as the HTTP endpoint's 503 did. Raises
    ``SysRequestError``."""
    endpoint, _, query = path.partition("?")
    token = ENDPOINTS.get(endpoint)
    if token is None:
        raise SysRequestError(f"{endpoint} cannot be asked over NATS")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("nats", trust.TLS_SCHEME) or not parts.hostname or parts.port is None:
        raise SysRequestError(f"{redact(url)} is not a nats://host:port or tls://host:port URL")
    deadline = time.monotonic() + timeout
    try:
        tls = trust.context(url)  # a CA file that cannot be read is an OSError too
        with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as raw:
            # tls://: the TLS handshake comes first, before the server's INFO (the hub's
            # handshake_first), so nothing, the password least, is ever sent in clear, whatever a
            # server at that address says it requires.
            sock = raw if tls is None else tls.wrap_socket(raw, server_hostname=trust.server_name(url))
            with sock, sock.makefile("rb") as reader:  # the reader closed too, or the close waits for it
                answer = _exchange(sock, reader, parts, token, options(query), deadline)
    except (OSError, ValueError) as exc:
        raise SysRequestError(_describe(exc)) from None
    error = answer.get("error")
    if isinstance(error, dict):
        raise SysRequestError(f"answered {error.get('code')}: {error.get('description')}")
    data = answer.get("data")
    if not isinstance(data, dict):
        raise SysRequestError("answered without data")
    if token == "HEALTHZ" and data.get("status") != "ok":
        detail = data.get("error") or data.get("status")
        raise SysRequestError(f"answered {data.get('status_code', 503)}: {detail}")
    return data


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    return " ".join(str(exc).split()) or type(exc).__name__


def _exchange(
    sock: socket.socket,
    reader: BinaryIO,
    parts: urllib.parse.SplitResult,
    token: str,
    body: dict[str, Any],
    deadline: float,
) -> dict[str, Any]:

    def line() -> bytes:
        sock.settimeout(max(0.001, deadline - time.monotonic()))
        got = reader.readline(_MAX_LINE)
        if not got:
            raise ConnectionResetError("the server closed the connection")
        return got

    info = line()
    if not info.startswith(b"INFO "):
        raise ValueError("the server did not introduce itself (no INFO): is this a NATS port?")
    server_id = json.loads(info[5:]).get("server_id")
    if not isinstance(server_id, str) or not server_id.isalnum():
        raise ValueError("the server's INFO has no server_id")
    connect = {
        "user": urllib.parse.unquote(parts.username or ""),
        "pass": urllib.parse.unquote(parts.password or ""),
        "name": MONITOR_CONNECTION_NAME,
        "verbose": False,
        "pedantic": False,
        "headers": True,
        "no_responders": True,
        "lang": "python-stdlib",
        "version": "1",
        "protocol": 1,
    }
    inbox = f"_INBOX.{secrets.token_hex(11)}"
    payload = json.dumps(body).encode()
    subject = f"$SYS.REQ.SERVER.{server_id}.{token}"
    sock.sendall(
        b"CONNECT "
        + json.dumps(connect).encode()
        + b"\r\n"
        + f"SUB {inbox} 1\r\nPUB {subject} {inbox} {len(payload)}\r\n".encode()
        + payload
        + b"\r\n"
    )
    while True:
        got = line()
        if got.startswith(b"PING"):
            sock.sendall(b"PONG\r\n")
        elif got.startswith(b"-ERR"):
            reason = got[4:].strip().strip(b"'").decode("utf-8", "replace")
            raise ValueError(f"the server refused: {reason}")
        elif got.startswith((b"MSG ", b"HMSG ")):
            fields = got.split()
            size = int(fields[-1])
            if size > _MAX_ANSWER:
                raise ValueError(f"an answer of {size} bytes is larger than expected")
            sock.settimeout(max(0.001, deadline - time.monotonic()))
            data = reader.read(size + 2)[:size]
            if got.startswith(b"HMSG "):
                headers, data = data[: int(fields[-2])], data[int(fields[-2]) :]
                if b" 503" in headers.split(b"\r\n", 1)[0]:
                    raise ValueError("no server answered the request (is this the system user?)")
            answer = json.loads(data)
            if not isinstance(answer, dict):
                raise ValueError("the answer is not a JSON object")
            return answer
        # +OK, PONG and INFO updates (a cluster's topology) carry nothing for us.
