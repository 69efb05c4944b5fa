"""What each component may do on the bus: the platform's subject map, templated per instance.

Pure. The lists follow what the upstream components' source subscribes to, answers, requests and
publishes (see docs/security.md). They must cover every subscription exactly: the
platform's components crash on a denied subscription, so a deploy file may extend any list per
component, and an extra (a user-defined component) gets only what it declares, plus its ping.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from nachos_deploy.core import config, subjects
from nachos_deploy.core.catalog import Role

INBOX = "_INBOX.>"  # replies to requests: no component sets a custom inbox prefix
PING = "nachos.health.ping.{name}"
GATEWAY_ANSWERS = (
    *(f"nachos.gateway.subagents.{verb}" for verb in ("list", "spawn", "info", "stop", "log")),
    *(f"nachos.gateway.sandbox.{verb}" for verb in ("explain", "list", "recreate")),
)
GATEWAY_PUBLISHES = (
    "nachos.gateway.processed",
    *(f"nachos.context.{event}" for event in ("extraction", "budget_update", "zone_change", "compaction")),
    "nachos.audit.log",
)


@dataclass(frozen=True)
class Permissions:
    """One component's rights. ``answers`` are request subjects it replies to, ``requests`` the
    ones it sends requests on (and so needs replies on ``_INBOX.>``)."""

    publish: tuple[str, ...] = ()
    subscribe: tuple[str, ...] = ()
    answers: tuple[str, ...] = ()
    requests: tuple[str, ...] = ()

    def local(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(publish, subscribe) allowed on the component's own sidecar; replies to what it answers
        go out through ``allow_responses``."""
        publish = _unique([*self.publish, *self.requests])
        subscribe = _unique([*self.subscribe, *self.answers, *([INBOX] if self.requests else [])])
        return publish, subscribe

    def at_hub(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(publish, subscribe) of the sidecar's leaf user at the hub: the same limits again, plus
        the inbox for the replies that cross the leaf connection."""
        publish, subscribe = self.local()
        if self.answers:
            publish = _unique([*publish, INBOX])
        return publish, subscribe


def for_component(
    name: str,
    role: Role,
    *,
    channels: Sequence[str] = (),
    tool_ids: Sequence[str] = (),
    tool_id: str | None = None,
    extra: Permissions = Permissions(),
) -> Permissions:
    """The role's rights for this instance, plus its ping and what the deploy file adds."""
    base = Permissions()
    if role is Role.GATEWAY:
        base = Permissions(
            publish=(
                *(f"nachos.channel.{c}.outbound" for c in (*channels, "cli")),
                *GATEWAY_PUBLISHES,
            ),
            subscribe=(*(f"nachos.channel.{c}.inbound" for c in channels), "nachos.llm.stream.*"),
            answers=GATEWAY_ANSWERS,
            requests=("nachos.llm.request", *(f"nachos.tool.{t}.request" for t in tool_ids)),
        )
    elif role is Role.LLM_PROXY:
        base = Permissions(
            publish=("nachos.llm.response", "nachos.llm.stream.*", "nachos.audit.log"),
            answers=("nachos.llm.request",),
        )
    elif role is Role.CHANNEL:
        base = Permissions(
            publish=(f"nachos.channel.{name}.inbound",), subscribe=(f"nachos.channel.{name}.outbound",)
        )
    elif role is Role.TOOL:
        base = Permissions(answers=(f"nachos.tool.{tool_id or name}.request",))
    return Permissions(
        publish=_unique([*base.publish, *extra.publish]),
        subscribe=_unique([*base.subscribe, *extra.subscribe]),
        answers=_unique([*base.answers, PING.format(name=name), *extra.answers]),
        requests=_unique([*base.requests, *extra.requests]),
    )


WHAT_A_WILDCARD_GIVES = {
    "publish": "publish as any component (forge channel messages, tool requests, audit records)",
    "subscribe": "read every component's messages",
    "respond": "answer requests meant for any component",
    "request": "send requests to any component",
}


def grant_warnings(component: str, grants: config.Permissions) -> list[str]:
    """What a deploy file's grants give away that validation lets through: a full wildcard (``>``,
    ``nachos.>``...: every component's subjects), and NATS's own subjects granted on purpose with
    ``allow_system``. Said by validate, doctor and up, one line per grant."""
    found = []
    for key, what in WHAT_A_WILDCARD_GIVES.items():
        for subject in getattr(grants, key):
            where = f"components.{component}.permissions.{key}: {subject!r}"
            if subjects.is_full_wildcard(subject):
                found.append(
                    f"{where} takes in every component's subjects: {component} can {what}. Name the "
                    "subjects it needs instead."
                )
            reached = subjects.reserved(subject)
            if reached and grants.allow_system:
                spaces = ", ".join(space.split(" ", 1)[0] for space in reached)
                found.append(
                    f"{where} reaches NATS's own subjects ({spaces}), granted on purpose by "
                    f"components.{component}.permissions.allow_system: {component} can change or read "
                    "the bus itself there."
                )
    return found


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))
