"""NATS subject patterns as sets: whether two overlap, which of NATS's own subject spaces a grant
reaches, and whether it takes in every component's subjects.

Pure. NATS wildcards: ``*`` matches exactly one token, ``>`` one or more tokens and only as the last
token; a literal token matches itself only, ``$`` included (``*`` matches ``$JS`` as it matches any
token). A permission grant is a pattern, and what it allows is the set of subjects it matches, so the
question a deploy file raises is a set question: does ``>`` reach ``$JS.API.STREAM.DELETE.AUDIT``?
"""

from __future__ import annotations

RESERVED: tuple[tuple[str, str], ...] = (
    ("$SYS.>", "the system account"),
    ("$JS.>", "the JetStream API, where $JS.API.STREAM.DELETE.AUDIT deletes the audit stream"),
    ("$JSC.>", "JetStream's cluster internals"),
    ("$NRG.>", "the cluster's Raft groups"),
    ("$KV.>", "key-value stores"),
    ("$O.>", "object stores"),
)
"""NATS's own subject spaces: a component granted any of them steps outside the platform's subject map
and can read or change the bus itself. ``$JS``, ``$KV`` and ``$O`` are the JetStream API and the stores
built on it, ``$SYS`` the system account, ``$JSC`` and ``$NRG`` what a clustered bus uses internally."""


def overlap(first: str, second: str) -> bool:
    """Whether some subject matches both patterns."""
    a, b = first.split("."), second.split(".")
    for index in range(max(len(a), len(b))):
        x = a[index] if index < len(a) else None
        y = b[index] if index < len(b) else None
        if x is None or y is None:
            return False  # one ran out of tokens while the other needs more (``>`` needs at least one)
        if x == ">" or y == ">":
            return True  # the other has a token here, and ``>`` takes it and whatever follows
        if x != "*" and y != "*" and x != y:
            return False
    return True


def reserved(grant: str) -> list[str]:
    """The reserved spaces (``$SYS.>``...) ``grant`` reaches, each with what it holds."""
    return [f"{space} ({what})" for space, what in RESERVED if overlap(grant, space)]


def is_full_wildcard(grant: str) -> bool:
    """Whether ``grant`` takes in the subjects of every component: ``>``, ``*.>``, ``nachos.>``,
    ``nachos.*.>``... (it ends in ``>`` and names no component, channel or tool before it)."""
    tokens = grant.split(".")
    if tokens[-1] != ">":
        return False
    head = tokens[1:-1] if tokens[0] == "nachos" else tokens[:-1]
    return all(token == "*" for token in head)
