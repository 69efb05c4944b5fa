"""Proving each webhook route from the host, the way its provider calls it.

A container that runs, is healthy and is on the bus says nothing of whether Meta can register the
whatsapp webhook: that takes a TLS certificate the caller trusts, an ingress that routes the path,
a channel behind it that listens where the route points, and the verify token the channel compares.
So `up` and `status` make the provider's own first call, over HTTPS, to the public URL:

- whatsapp: Meta's verification handshake, ``GET <path>?hub.mode=subscribe&hub.verify_token=<the
  channel's verify token>&hub.challenge=<random>``; the random challenge must come back, 200.
- slack (``http`` mode): Slack's ``url_verification`` event, signed (``X-Slack-Signature`` v0) with the
  channel's signing secret and stamped now; the challenge must come back, 200.
- webchat: a browser's first call, ``GET <path>/`` (the page); the channel must answer it, 2xx or a
  3xx redirect. There is no upstream package to say more of what it serves, so this proves the route,
  the certificate and a channel listening where the route points, not the page's content.

The connection goes to the address the ingress is published on (loopback for a wildcard), under the
name the provider uses (the domain, else ``localhost`` or the published address) for SNI, the
certificate check and ``Host``. So the route is proven before DNS points at this machine; ``doctor``
checks that the domain resolves. In ``internal`` mode only the ingress's own root
(``IngressPlan.root_cert_file``) is trusted; otherwise the system's CAs, which ``SSL_CERT_FILE`` can
replace (a private ACME server's root, say).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import http.client
import json
import os
import secrets
import socket
import ssl
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from nachos_deploy.core.ingress import IngressPlan, WebhookRoute
from nachos_deploy.core.plan_types import Plan
from nachos_deploy.core.results import WebhookReport
from nachos_deploy.io.channel_secrets import channel_secret

# What proves each kind of route, and the channel's own variable for the secret that call carries
# (None: the call carries none).
PROOFS: dict[str, tuple[str, str | None]] = {
    "whatsapp": ("meta-verification", "WHATSAPP_VERIFY_TOKEN"),
    "slack": ("slack-url-verification", "SLACK_SIGNING_SECRET"),
    "webchat": ("webchat-page", None),
}
# Seconds for one call: a provider gives up after about as long. Longer than the ingress holds a call
# for a channel that is away (ingress.CHANNEL_HOLD), so that such a channel is named by its 502.
ATTEMPT_TIMEOUT = 5.0
RETRY_EVERY = 0.25
MAX_ANSWER = 65_536  # bytes of an answer read: a challenge is a few dozen
META_AGENT = "facebookexternalua"  # the user agent Meta's webhook calls carry
SLACK_AGENT = "Slackbot 1.0 (+https://api.slack.com/robots)"
BROWSER_AGENT = "Mozilla/5.0 (compatible; nachos-deploy)"  # a browser's call, named as ours
# Statuses a route can show while it is still coming up: the ingress has no answer from the channel
# yet (502/504), or Caddy is still getting its certificate (503 from a health-gated upstream).
PASSING = frozenset({502, 503, 504})


@dataclass(frozen=True)
class Edge:
    """Where the host reaches the ingress, under which name, trusting what."""

    address: str  # connected to: the published address, loopback for a wildcard
    port: int
    server_name: str  # SNI, the certificate's name and the Host header
    context: ssl.SSLContext


@dataclass(frozen=True)
class Attempt:
    status: int | None
    problem: str | None  # None: proven
    passing: bool = False  # the problem can clear by waiting (the route is still coming up)
    ms: float | None = None


class _PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS to ``edge.address`` while naming ``edge.server_name``: the provider's view of the route,
    without waiting for DNS to point at this machine."""

    def __init__(self, edge: Edge, timeout: float) -> None:
        super().__init__(edge.server_name, edge.port, timeout=timeout, context=edge.context)
        self._edge = edge

    def connect(self) -> None:
        raw = socket.create_connection((self._edge.address, self._edge.port), self.timeout)
        try:
            self.sock = self._edge.context.wrap_socket(raw, server_hostname=self._edge.server_name)
        except BaseException:
            raw.close()
            raise


def trust(ingress: IngressPlan, output_dir: Path) -> ssl.SSLContext:
    """TLS 1.2 or newer, trusting the ingress's own root in internal mode, else the system's CAs.
    FileNotFoundError when internal mode's root has not been written (no `up` got that far)."""
    cafile: str | None = None
    if ingress.tls == "internal" and ingress.root_cert_file:
        root = output_dir / ingress.root_cert_file
        if not root.is_file():
            raise FileNotFoundError(str(root))
        cafile = str(root)
    if cafile is None:
        context = ssl.create_default_context()  # the system's CAs, or SSL_CERT_FILE's
    else:
        # Only that root: a certificate the system trusts is not the ingress's in internal mode.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(cafile=cafile)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def edge(ingress: IngressPlan, context: ssl.SSLContext) -> Edge:
    wildcard = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}
    address = wildcard.get(ingress.host_ip, ingress.host_ip)
    return Edge(address, ingress.https_port, ingress.public_host.strip("[]"), context)


def prove_all(
    plan: Plan,
    output_dir: Path,
    *,
    deadline: float,
    environ: Mapping[str, str] | None = None,
) -> list[WebhookReport]:
    """Every route of ``plan``'s ingress, proven until ``deadline`` (monotonic) at the latest; a route
    still coming up is tried again until then, a wrong answer is final at once."""
    ingress: IngressPlan | None = plan.ingress
    if ingress is None:
        return []
    environ = os.environ if environ is None else environ
    context, no_trust = _trusted(ingress, output_dir)
    reports: list[WebhookReport] = []
    for route in ingress.routes:
        url = ingress.public_url(route)
        proof = PROOFS.get(route.kind)
        if proof is None:
            reports.append(WebhookReport(route.channel, route.kind, url, None))
            continue
        name, variable = proof
        if context is None:
            reports.append(WebhookReport(route.channel, route.kind, url, name, no_trust))
            continue
        secret: str | None = ""  # a browser's call (webchat) carries none
        if variable is not None:
            secret = channel_secret(plan.component(route.channel), variable, output_dir, environ)
        if secret is None:
            why = (
                f"{variable} is not set here (environment or {output_dir / '.env'}), and the call carries it"
            )
            reports.append(WebhookReport(route.channel, route.kind, url, name, unproven=why))
            continue
        attempt = prove(route, edge(ingress, context), secret, deadline=deadline)
        reports.append(
            WebhookReport(route.channel, route.kind, url, name, attempt.problem, attempt.status, attempt.ms)
        )
    return reports


def _trusted(ingress: IngressPlan, output_dir: Path) -> tuple[ssl.SSLContext | None, str | None]:
    """The client context, or why there is none (then no call is made: nothing unverified is sent)."""
    try:
        return trust(ingress, output_dir), None
    except FileNotFoundError as exc:
        return None, (
            f"the ingress's root certificate {exc} is missing (internal TLS), so its certificate cannot "
            "be checked; `nachos-deploy up` writes it"
        )
    except (OSError, ssl.SSLError) as exc:
        return None, f"the ingress's root certificate cannot be read: {exc}"


def prove(
    route: WebhookRoute,
    where: Edge,
    secret: str,
    *,
    deadline: float,
    clock: Callable[[], float] = time.monotonic,
) -> Attempt:
    """One route's proof, tried again while the route is still coming up and ``deadline`` allows."""
    call = CALLS[route.kind]
    while True:
        attempt = call(route, where, secret)
        if not attempt.passing or clock() + RETRY_EVERY >= deadline:
            return attempt
        time.sleep(RETRY_EVERY)


def meta_verification(route: WebhookRoute, where: Edge, verify_token: str) -> Attempt:
    """Meta's handshake when a webhook URL is registered: the challenge must come back."""
    challenge = str(secrets.randbelow(9 * 10**9) + 10**9)  # Meta sends a number, as text
    query = urllib.parse.urlencode(
        {"hub.mode": "subscribe", "hub.challenge": challenge, "hub.verify_token": verify_token}
    )
    headers = {"User-Agent": META_AGENT, "Accept": "*/*"}
    answered = _challenge_back(route, challenge, "verify token")
    return _judge(route, where, "GET", f"{route.path}?{query}", b"", headers, answered)


def slack_url_verification(route: WebhookRoute, where: Edge, signing_secret: str) -> Attempt:
    """Slack's first call to a Request URL: a signed url_verification whose challenge must come back."""
    challenge = secrets.token_urlsafe(24)
    body = json.dumps({"token": "nachos-deploy", "challenge": challenge, "type": "url_verification"}).encode()
    stamp = str(int(time.time()))
    headers = {
        "User-Agent": SLACK_AGENT,
        "Content-Type": "application/json",
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": slack_signature(signing_secret, stamp, body),
    }
    return _judge(
        route, where, "POST", route.path, body, headers, _challenge_back(route, challenge, "signing secret")
    )


def slack_signature(secret: str, timestamp: str, body: bytes) -> str:
    """Slack's v0 request signature: HMAC-SHA256 of ``v0:<timestamp>:<raw body>``."""
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def webchat_page(route: WebhookRoute, where: Edge, _: str) -> Attempt:
    """A browser opening the chat at its public URL: the channel must answer with its page (2xx) or
    a redirect to it (3xx). Through the ingress only the channel can: Caddy itself answers that path
    502/503/504 while the channel is not reachable, and never 2xx or 3xx on HTTPS."""
    headers = {"User-Agent": BROWSER_AGENT, "Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    return _judge(route, where, "GET", route.path.rstrip("/") + "/", b"", headers, _page)


def _page(status: int, answer: bytes) -> Attempt | None:
    return Attempt(status, None) if 200 <= status < 400 else None


# A call per kind of route: (route, where the ingress is, the secret the call carries) -> Attempt
CALLS: dict[str, Callable[[WebhookRoute, Edge, str], Attempt]] = {
    "whatsapp": meta_verification,
    "slack": slack_url_verification,
    "webchat": webchat_page,
}


def _challenge_back(
    route: WebhookRoute, challenge: str, secret_name: str
) -> Callable[[int, bytes], Attempt | None]:
    """A provider's verification: proven by its challenge coming back; a refusal names the secret."""

    def answered(status: int, answer: bytes) -> Attempt | None:
        if status == 200 and _echoed(answer, challenge):
            return Attempt(status, None)
        if status == 200:
            return Attempt(status, f"answered 200 without the challenge (body {_shown(answer)})")
        if status in (401, 403):
            return Attempt(
                status,
                f"{route.channel} refused the call (HTTP {status}): the {secret_name} it holds is not the "
                "one nachos-deploy read for it",
            )
        return None

    return answered


def _judge(
    route: WebhookRoute,
    where: Edge,
    method: str,
    target: str,
    body: bytes,
    headers: Mapping[str, str],
    answered: Callable[[int, bytes], Attempt | None],
) -> Attempt:
    """One call; ``answered`` judges what the channel's kind makes of the answer (None: nothing
    particular, the statuses every route shares decide)."""
    started = time.perf_counter()
    try:
        status, answer = _call(where, method, target, body, headers)
    except ssl.SSLCertVerificationError as exc:
        why = exc.verify_message or str(exc)
        return Attempt(None, f"its certificate is not trusted for {where.server_name} ({why})", True)
    except (OSError, http.client.HTTPException) as exc:
        where_to = f"{where.address}:{where.port}"
        return Attempt(None, f"the ingress at {where_to} did not answer ({_describe(exc)})", True)
    ms = (time.perf_counter() - started) * 1000
    judged = answered(status, answer)
    if judged is not None:
        return judged if judged.problem else dataclasses.replace(judged, ms=ms)
    if status in PASSING:
        return Attempt(status, f"the ingress got no answer from {route.channel} (HTTP {status})", True)
    if status == 404:
        return Attempt(status, f"HTTP 404: {route.path} is not routed to {route.channel}")
    return Attempt(status, f"answered HTTP {status} (body {_shown(answer)})")


def _call(
    where: Edge, method: str, target: str, body: bytes, headers: Mapping[str, str]
) -> tuple[int, bytes]:
    connection = _PinnedHTTPS(where, ATTEMPT_TIMEOUT)
    try:
        connection.request(method, target, body=body or None, headers=dict(headers))
        response = connection.getresponse()
        return response.status, response.read(MAX_ANSWER)
    finally:
        connection.close()


def _echoed(answer: bytes, challenge: str) -> bool:
    """The challenge as the whole body (Meta's handshake, Slack's plain form) or as Bolt's JSON."""
    text = answer.decode("utf-8", errors="replace").strip()
    if text == challenge:
        return True
    try:
        doc = json.loads(text)
    except ValueError:
        return False
    return isinstance(doc, dict) and doc.get("challenge") == challenge


def _shown(answer: bytes) -> str:
    text = answer.decode("utf-8", errors="replace")
    return repr(text[:80] + ("..." if len(text) > 80 else ""))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError | socket.timeout):
        return f"no answer within {ATTEMPT_TIMEOUT:g} s"
    return " ".join(str(exc).split()) or type(exc).__name__
