"""``credentials rotate`` on a running stack: the new passwords reach the hub and the sidecars by a
reload, so the components are never touched.

Only the hub's passwords and the sidecars' leaf logins change; a component's own connection goes to
its sidecar and needs none, so it stays where it is. The order keeps every sidecar logged in:

1. the new files are written (atomically, in folders the servers mount read-only);
2. the hub's nodes reload: from then on they accept only the new passwords, but a reload leaves the
   connections already logged in alone (nats-server 2.x), so the sidecars keep their leaf links;
3. once the hub accepts the new operator password, every sidecar reloads: each drops its leaf link
   and logs in again with its new URL at once (a few milliseconds without a link);
4. the proof: every sidecar has a new leaf connection at the hub (made after step 2, so with its
   new password), and the hub refuses the old operator password (read from the same file as the
   leaf passwords, so the hub has dropped those too). An old leaf password is not tried on the
   client port: that port refuses every leaf user, whatever its password, so the try would prove
   nothing.

A sidecar that has not logged in again within :data:`RELOGIN_TIMEOUT` is restarted (its component
then reconnects to it); one still missing after that is an error (exit 6). Engines that cannot
reload in place (Swarm) get None back: their caller runs ``up``, which replaces those services.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from nachos_deploy.bus import monitor, natsclient
from nachos_deploy.bus.monitor import BusUnavailable
from nachos_deploy.core.catalog import Role
from nachos_deploy.core.errors import BusFailure, ComponentFailure
from nachos_deploy.core.names import STATE_CLIENTS_COMMAND, STATE_GATEWAY_USER
from nachos_deploy.core.results import Endpoints, redact
from nachos_deploy.io import credentials, locks, state_credentials
from nachos_deploy.io.stack import Stack
from nachos_deploy.targets import Target

Progress = Callable[[str], None]
HUB_TIMEOUT = 10.0  # seconds for the hub's nodes to accept the new operator password after SIGHUP
RELOGIN_TIMEOUT = 10.0  # seconds for every sidecar to log in again after its SIGHUP (or its restart)
POLL = 0.05


@dataclass(frozen=True)
class Reloaded:
    """A rotation done in place: how long from the new files to the last sidecar logged in again,
    which sidecars reloaded (and which had to be restarted), and how many old logins the hub refused
    afterwards (the operator's)."""

    seconds: float
    sidecars: tuple[str, ...]
    restarted: tuple[str, ...]
    refused_old: int


def rotate(stack: Stack, target: Target, endpoints: Endpoints, progress: Progress) -> Reloaded | None:
    """Write new passwords and bring them to the running servers in place (see the module's
    docstring); None when this engine cannot reload them, after the new files are written."""
    with locks.project_lock(stack.project, progress):
        old_operator = endpoints.nats_url
        credentials.ensure(stack.output_dir, stack.plan, rotate=True)
        new_tls_key(stack)  # read by the same reload (nats-server re-reads its TLS files on SIGHUP)
        state_credentials.rotate(stack)  # the state store's: Redis and the gateway start again below
        started = time.monotonic()
        states = target.states()
        running = {name for name, state in states.items() if state.status == "running"}
        nodes = [node.name for node in stack.plan.bus.nodes if node.name in running]
        sidecars = [s.service.name for s in stack.plan.sidecars if s.service.name in running]
        progress("Reloading the bus with the new passwords")
        if not target.reload(nodes):
            return None
        if stack.plan.bus.tls is not None:  # the hub has read the new TLS key too: no reload at next up
            from nachos_deploy.io import bus_tls

            bus_tls.record_loaded(stack.output_dir)
        fresh = target.endpoints(states)
        if fresh is None:
            raise BusFailure("The bus's port forwarder stopped during the rotation; run `nachos-deploy up`.")
        _wait_for_hub(fresh)
        monitors = fresh.node_monitors or (fresh.monitor_url,)
        before = _leafs(monitors)
        progress("Reloading the sidecars with their new logins")
        target.reload(sidecars)
        missing = _wait_for_logins(monitors, before, sidecars)
        if missing:
            progress(f"Restarting {', '.join(missing)}: not logged in again after its reload")
            target.restart(missing)
            still = _wait_for_logins(monitors, before, missing)
            if still:
                raise ComponentFailure(
                    f"{', '.join(still)} did not log in at the bus with the new password within "
                    f"{RELOGIN_TIMEOUT:g} s of a restart; see `nachos-deploy logs {still[0]}`, then run "
                    "`nachos-deploy up` to bring the stack back."
                )
        seconds = time.monotonic() - started
        refused = _refused(old_operator)
        _restart_state(stack, target, running, progress)
        target.note_credentials()  # proven in use: the next up starts nothing over for them
        return Reloaded(seconds, tuple(sidecars), tuple(missing), refused)


def new_tls_key(stack: Stack) -> None:
    """A new key and certificate for the client port's TLS (bus.tls), from the same CA, so that no
    client needs a new trust file; a user's own files are theirs to renew (bus.tls.cert_file)."""
    tls = stack.plan.bus.tls
    if tls is not None and tls.generated:
        from nachos_deploy.io import bus_tls  # cryptography: loaded only for a bus with TLS

        bus_tls.ensure(stack.output_dir, stack.plan, rotate=True)


STATE_TIMEOUT = 30.0  # seconds for the recreated gateway to log in at the restarted state store


def _restart_state(stack: Stack, target: Target, running: set[str], progress: Progress) -> None:
    """The state store's new passwords in use: Redis reads its ACL file only at start (no user may
    run ACL LOAD), and the gateway its URLs from its env file, which only a new container reads. The
    sessions stay on the store's volume. Proven when the store lists the gateway's user again."""
    state = stack.plan.state
    if state is None or state.name not in running:
        return
    gateways = [c for c in stack.plan.components if c.role is Role.GATEWAY and c.name in running]
    progress("Restarting the state store and the gateway with the gateway's new password")
    target.restart([state.name])
    target.start_components(gateways, target.states())  # recreated: its env file changed
    if not gateways:
        return
    deadline = time.monotonic() + STATE_TIMEOUT
    while True:
        container = target.states().get(state.name)
        listed = (
            target.exec_output(container.container, STATE_CLIENTS_COMMAND, 3.0)
            if container is not None and container.status == "running"
            else None
        )
        if listed is not None and f"user={STATE_GATEWAY_USER} " in listed:
            return
        if time.monotonic() > deadline:
            raise ComponentFailure(
                f"The gateway did not log in at the state store with its new password within "
                f"{STATE_TIMEOUT:g} s; see `nachos-deploy logs {gateways[0].name} state`, then run "
                "`nachos-deploy up`."
            )
        time.sleep(0.2)


def _wait_for_hub(endpoints: Endpoints) -> None:
    """Until every node accepts the new operator password: its reload is done."""
    urls = [url for _, url, _ in endpoints.nodes] or [endpoints.nats_url]
    deadline = time.monotonic() + HUB_TIMEOUT
    for url in urls:
        while True:
            try:
                refusal = natsclient.login_refusal(url, timeout=1.0)
            except BusUnavailable as exc:
                refusal = str(exc)
            if refusal is None:
                break
            if time.monotonic() > deadline:
                raise BusFailure(
                    f"The bus still refuses the new operator password {HUB_TIMEOUT:g} s after its reload "
                    f"({refusal}); see `nachos-deploy logs bus`."
                )
            time.sleep(POLL)


def _leafs(monitors: Sequence[str]) -> dict[str, dict[str, int]]:
    """Monitoring URL → (server name → leaf connection id) at each node; a node that does not answer
    for a moment lists none."""
    found = {}
    for url in monitors:
        try:
            found[url] = monitor.leaf_ids(url)
        except BusUnavailable:
            found[url] = {}
    return found


def _wait_for_logins(
    monitors: Sequence[str], before: Mapping[str, Mapping[str, int]], sidecars: Sequence[str]
) -> list[str]:
    """The sidecars that have no leaf connection newer than ``before`` at any node by the deadline."""
    deadline = time.monotonic() + RELOGIN_TIMEOUT
    while True:
        now = _leafs(monitors)
        missing = [
            name
            for name in sidecars
            if not any(
                name in now[url] and now[url][name] != before.get(url, {}).get(name) for url in monitors
            )
        ]
        if not missing or time.monotonic() > deadline:
            return missing
        time.sleep(POLL)


def _refused(old_operator: str) -> int:
    """How many old logins the hub refuses now (all of them, or this raises naming the first one it
    still accepts), tried from the host on the bus's client port: the operator's old URL. The old
    leaf logins are not tried there, since that port refuses the leaf users whatever their password
    (``allowed_connection_types``), and the leaf port is not published."""
    if natsclient.login_refusal(old_operator) is None:
        raise BusFailure(
            f"The bus still accepts an old password after the rotation ({redact(old_operator)}). Run "
            "`nachos-deploy credentials rotate` again, and report this as a bug."
        )
    return 1
