"""What the Nachos platform's own components need from a deployment.

These defaults follow what the upstream components were observed to need (see the component table
in docs/components.md): the variables they read, the connection name they use on the bus, whether
they must reach the internet, the credentials they exit without, and how their health can be
proven. Any name not listed here is a user-defined extra.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    GATEWAY = "gateway"
    LLM_PROXY = "llm-proxy"
    CHANNEL = "channel"
    TOOL = "tool"
    EXTRA = "extra"
    SIDECAR = "sidecar"  # a component's own bus server; never a component itself
    # Services beside the components, not on the bus, started and judged with them (issue 20):
    STATE = "state"  # Redis, the gateway's rate limits and sessions; only the gateway reaches it
    INGRESS = "ingress"  # Caddy, HTTPS in front of the webhook channels; only they are behind it


# Roles of services that are not the platform's own: they read no nachos.toml and get no platform secret.
NOT_PLATFORM = frozenset({Role.EXTRA, Role.SIDECAR, Role.STATE, Role.INGRESS})


@dataclass(frozen=True)
class Secret:
    """An environment variable whose value comes from the host's environment, never from a file."""

    name: str
    required: bool = True


@dataclass(frozen=True)
class Known:
    """Defaults for one platform component."""

    role: Role
    image_name: str
    connection_name: str
    egress: bool = False
    enabled: bool = False
    secrets: tuple[Secret, ...] = ()
    environment: tuple[tuple[str, str], ...] = ()
    # The platform publishes no image for it (webchat): a deployment must name one.
    upstream_image: bool = True


CHANNELS = ("webchat", "slack", "discord", "telegram", "whatsapp")
TOOLS = ("filesystem", "browser", "code-runner")

GATEWAY_HEALTH_PORT = 3000
GATEWAY_DATA_DIR = "/app/data"
# runtime.state_dir in the platform's images (its default ./state under /app): the gateway's identity
# and memory stores, each channel's pairing list. Set by RUNTIME_STATE_DIR and, under the read-only
# root, a volume of the component's own (plan.state_volume), which volume-init hands to its user.
STATE_DIR = "/app/state"
PLATFORM_CONFIG_PATH = "/etc/nachos/nachos.toml"
WORKSPACE_DIR = "/workspace"
# The uid upstream's images are built for: their files under /app belong to it and are readable by
# anyone, so they also run under another uid (config.DEFAULT_RUN_AS) with only their data writable.
IMAGE_USER = "1001:1001"

_CHANNEL_SECRETS: dict[str, tuple[Secret, ...]] = {
    "webchat": (),
    "slack": (
        Secret("SLACK_BOT_TOKEN"),
        Secret("SLACK_APP_TOKEN", required=False),
        Secret("SLACK_SIGNING_SECRET", required=False),
    ),
    "discord": (Secret("DISCORD_BOT_TOKEN"),),
    "telegram": (Secret("TELEGRAM_BOT_TOKEN"),),
    "whatsapp": (
        Secret("WHATSAPP_TOKEN"),
        Secret("WHATSAPP_PHONE_NUMBER_ID"),
        Secret("WHATSAPP_VERIFY_TOKEN"),
        Secret("WHATSAPP_APP_SECRET", required=False),
    ),
}


def _channel(name: str) -> Known:
    return Known(
        role=Role.CHANNEL,
        image_name=f"channel-{name}",
        connection_name=f"channel-{name}",
        egress=name != "webchat",
        secrets=_CHANNEL_SECRETS.get(name, ()),
        upstream_image=name != "webchat",
    )


def _tool(name: str) -> Known:
    environment: tuple[tuple[str, str], ...] = ()
    if name == "filesystem":
        environment = (("TOOL_MODE", "read"), ("ALLOWED_PATHS", WORKSPACE_DIR))
    elif name == "code-runner":
        environment = (("LANGUAGE", "python"),)
    return Known(
        role=Role.TOOL,
        image_name=f"tool-{name}",
        connection_name=f"tool-{name}",  # replaced by tool-<tool id> in the plan
        egress=name == "browser",
        environment=environment,
    )


FILESYSTEM_MODES = {
    "read": "filesystem_read",
    "write": "filesystem_write",
    "edit": "filesystem_edit",
    "patch": "filesystem_patch",
    "config": "config_patch",
}
CODE_RUNNER_LANGUAGES = ("python", "javascript")


def tool_id(name: str, environment: Mapping[str, str]) -> str:
    """The id a tool answers under (``nachos.tool.<id>.request``), which upstream derives from its
    mode rather than its name. ValueError names the variable and the values allowed."""
    if name == "filesystem":
        mode = environment.get("TOOL_MODE", "read")
        if mode not in FILESYSTEM_MODES:
            raise ValueError(f"TOOL_MODE={mode!r}: the filesystem tool knows {', '.join(FILESYSTEM_MODES)}")
        return FILESYSTEM_MODES[mode]
    if name == "code-runner":
        language = environment.get("LANGUAGE", "python")
        if language not in CODE_RUNNER_LANGUAGES:
            allowed = ", ".join(CODE_RUNNER_LANGUAGES)
            raise ValueError(f"LANGUAGE={language!r}: the code-runner tool knows {allowed}")
        return f"code_runner_{language}"
    return environment.get("TOOL_ID") or name.replace("-", "_")


KNOWN: dict[str, Known] = {
    "gateway": Known(
        role=Role.GATEWAY,
        image_name="gateway",
        connection_name="gateway",
        enabled=True,
        environment=(
            ("GATEWAY_HEALTH_PORT", str(GATEWAY_HEALTH_PORT)),
            ("GATEWAY_DB_PATH", f"{GATEWAY_DATA_DIR}/gateway.db"),
            ("POLICY_PATH", "/app/policies"),
        ),
    ),
    "llm-proxy": Known(
        role=Role.LLM_PROXY,
        image_name="llm-proxy",
        connection_name="llm-proxy",
        egress=True,
        enabled=True,
        secrets=(
            Secret("ANTHROPIC_API_KEY", required=False),
            Secret("OPENAI_API_KEY", required=False),
        ),
    ),
    **{name: _channel(name) for name in CHANNELS},
    **{name: _tool(name) for name in TOOLS},
}


def known(name: str, role_hint: Role | None = None) -> Known:
    """Defaults for ``name``; a channel or tool the catalog does not list gets the generic ones."""
    if name in KNOWN:
        return KNOWN[name]
    if role_hint is Role.CHANNEL:
        return _channel(name)
    if role_hint is Role.TOOL:
        return _tool(name)
    return Known(role=Role.EXTRA, image_name=name, connection_name=name)
