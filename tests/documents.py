"""The deploy file of a test's stack, written one way: engine-picked ports (stacks of several tests and
workers side by side), no ingress (not the subject of these tests, and ports 80/443 are the host's: see
docs/ingress.md), and the gateway and llm-proxy off unless a test names them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

FAST_CHECKS = {"healthcheck_interval": "500ms"}
"""The bus set's checks twice a second: a node lost, or a sidecar back, is seen sooner."""


def stack_document(
    project: str,
    components: Mapping[str, object],
    *,
    bus: Mapping[str, object] = FAST_CHECKS,
    **top: object,
) -> dict[str, Any]:
    """``components`` over the default two turned off; ``bus`` over engine-picked ports; ``top``: other
    top-level keys (``output``, ``logging``, ...)."""
    return {
        "project": project,
        **top,
        "bus": {"client_port": 0, "monitor_port": 0, **bus},
        "ingress": {"enabled": False},
        "components": {"gateway": {"enabled": False}, "llm-proxy": {"enabled": False}, **components},
    }
