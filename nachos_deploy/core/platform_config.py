"""What nachos-deploy reads from the platform's own ``nachos.toml``, and which keys the platform accepts.

Pure: it works on the parsed TOML document; :mod:`nachos_deploy.io.loader` reads the file. The platform
refuses to start on a key it does not know ("Unknown config key: tools.code-runner") or on a missing
required one, and its components then exit 1 long after ``up`` began; checking the same rules here
turns that into a warning at render time. The key tree follows the platform's
``packages/shared/config/src/validation.ts``; subtrees nachos-deploy does not need are accepted whole.
"""

from __future__ import annotations

import datetime
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# A tree of accepted keys: a mapping descends, ``ANY`` accepts whatever is below it.
ANY: Mapping[str, Any] = {}
_SERVERS = {"servers": ANY, "dm": {"user_allowlist": ANY, "pairing": ANY}}


def _keys(*names: str, **nested: Any) -> dict[str, Any]:
    return {**dict.fromkeys(names, ANY), **nested}


PLATFORM_KEYS: dict[str, Any] = {
    "nachos": _keys("name", "version"),
    "llm": _keys(
        "provider",
        "model",
        "fallback_order",
        "profile_order",
        "max_tokens",
        "temperature",
        "base_url",
        "region",
        "profiles",
        "retry",
        "cooldowns",
    ),
    "channels": {
        "webchat": _keys("enabled", "port"),
        "slack": _keys(
            "enabled",
            "mode",
            "app_token",
            "bot_token",
            "signing_secret",
            "webhook_path",
            "typing_indicators",
            "commands",
            **_SERVERS,
        ),
        "discord": _keys(
            "enabled",
            "token",
            "allow_bots",
            "bot_allowlist",
            "typing_indicators",
            "commands",
            "status_emojis",
            **_SERVERS,
        ),
        "telegram": _keys("enabled", "token", **_SERVERS),
        "whatsapp": _keys(
            "enabled",
            "token",
            "phone_number_id",
            "verify_token",
            "webhook_path",
            "api_version",
            "app_secret",
            **_SERVERS,
        ),
        "matrix": _keys("enabled", "homeserver_url", "access_token", "user_id", "device_id", **_SERVERS),
    },
    "tools": {
        "filesystem": _keys("enabled", "paths", "write", "max_file_size"),
        "browser": _keys("enabled", "allowed_domains", "headless", "timeout"),
        "code_runner": _keys("enabled", "runtime", "languages", "timeout", "max_memory"),
        "shell": _keys("enabled", "rate_limit"),
        "web_search": _keys("enabled", "api_key_env", "default_country", "safe_search", "max_results"),
        "web_fetch": _keys(
            "enabled",
            "allowed_domains",
            "domain_allowlist",
            "max_chars",
            "timeout_ms",
            "timeout_seconds",
            "max_redirects",
            "user_agent",
        ),
        "bootstrap": _keys("enabled"),
        "github": _keys("enabled", "default_repo", "token_env", "repo_allowlist"),
        "bitbucket": _keys(
            "enabled",
            "default_workspace",
            "auth_type",
            "username_env",
            "password_env",
            "token_env",
            "workspace_allowlist",
        ),
        "composio": _keys("enabled", "api_key_env", "entity_id", "allowed_apps"),
        "copilot": _keys("enabled", "max_prompt_length", "max_output_size", "default_timeout", "max_timeout"),
        "claude_code_mcp": _keys("enabled", "max_prompt_length"),
        "agent_exec": _keys(
            "enabled", "max_concurrent", "default_timeout", "max_timeout", "max_output_buffer"
        ),
        "groups": ANY,
    },
    "security": _keys("mode", "i_understand_the_risks", "dlp", "approval", "rate_limits", "audit"),
    "runtime": ANY,
    "assistant": _keys("name", "system_prompt"),
    "skills": ANY,
    "admin": _keys("enabled", "port"),
    "scheduler": ANY,
    "heartbeat": _keys("enabled", "interval_minutes", "prompt", "channel"),
    "sessions": _keys("inactivity_timeout", "archive_ttl"),
    "plugins": ANY,
}
REQUIRED_KEYS: tuple[tuple[str, str], ...] = (
    ("nachos", "name"),
    ("nachos", "version"),
    ("llm", "provider"),
    ("llm", "model"),
    ("security", "mode"),
)

# nachos.toml spells tool names with '_' (code_runner); component names use '-' (code-runner).
CONTAINER_TOOLS = ("filesystem", "browser", "code_runner")


@dataclass(frozen=True)
class Platform:
    """Which channels and tools ``nachos.toml`` enables, and what the platform would refuse in it."""

    path: Path | None = None
    channels: Mapping[str, bool] = field(default_factory=dict)
    tools: Mapping[str, bool] = field(default_factory=dict)
    problems: tuple[str, ...] = ()
    docker_subagents: bool = False  # see subagents_need_docker
    # The file as parsed, for each component's own copy (None: the user has none, or a record of a
    # deployment that did not keep it); and the secrets written in it as values (see inline_secrets).
    document: Mapping[str, Any] | None = None
    secrets: tuple[InlineSecret, ...] = ()


def docker_subagents_warning(path: Path | None) -> str:
    """The warning for :func:`subagents_need_docker`: the key, what will fail, and why."""
    where = f"{path}: " if path is not None else ""
    return (
        f'{where}runtime.subagents.enabled = true with runtime.subagents.sandbox.mode = "full" makes '
        "the gateway start each subagent as a Docker container of its own, through the Docker socket "
        "(/var/run/docker.sock or DOCKER_HOST); nachos-deploy gives no component the socket (whoever "
        "holds it controls the host), so every subagent run will fail (the gateway cannot reach "
        "Docker). Set runtime.subagents.sandbox.mode to another mode, or runtime.subagents.enabled "
        "to false."
    )


def subagents_need_docker(document: Mapping[str, Any]) -> bool:
    """Whether the gateway would run its subagents in Docker containers of its own: with
    ``[runtime.subagents] enabled = true`` and ``[runtime.subagents.sandbox] mode = "full"`` it
    drives the engine through dockerode (``DOCKER_HOST`` or ``/var/run/docker.sock``), and
    nachos-deploy gives no component the Docker socket, so every subagent run would fail."""
    runtime = document.get("runtime")
    subagents = runtime.get("subagents") if isinstance(runtime, Mapping) else None
    if not isinstance(subagents, Mapping) or subagents.get("enabled") is not True:
        return False
    sandbox = subagents.get("sandbox")
    return isinstance(sandbox, Mapping) and sandbox.get("mode") == "full"


def component_name(tool_key: str) -> str:
    return tool_key.replace("_", "-")


def unknown_keys(document: Mapping[str, Any], tree: Mapping[str, Any] = PLATFORM_KEYS) -> list[str]:
    """Dotted paths of keys the platform rejects as 'Unknown config key'."""
    found: list[str] = []

    def walk(node: Any, allowed: Mapping[str, Any], prefix: str) -> None:
        if allowed is ANY or not isinstance(node, Mapping):
            return
        for key, value in node.items():
            path = f"{prefix}{key}"
            if key not in allowed:
                found.append(path)
            else:
                walk(value, allowed[key], f"{path}.")

    walk(document, tree, "")
    return found


def missing_keys(document: Mapping[str, Any]) -> list[str]:
    missing = []
    for section, key in REQUIRED_KEYS:
        table = document.get(section)
        value = table.get(key) if isinstance(table, Mapping) else None
        if value in (None, ""):
            missing.append(f"{section}.{key}")
    return missing


def problems_in(document: Mapping[str, Any]) -> tuple[str, ...]:
    """What the platform would refuse, each as a clause naming the key."""
    problems = [f"unknown key {key}" for key in unknown_keys(document)]
    problems += [f"missing required key {key}" for key in missing_keys(document)]
    return tuple(problems)


def enabled_tables(document: Mapping[str, Any], section: str) -> dict[str, Any]:
    """``name -> enabled flag`` of ``[section.name]`` tables; a table without ``enabled`` is on,
    as the platform's registry reads it. Values that are not booleans are returned as they are,
    for the caller to refuse with the file's name."""
    table = document.get(section, {})
    if not isinstance(table, Mapping):
        raise TypeError(section)
    result: dict[str, Any] = {}
    for name, entry in table.items():
        if section == "tools" and name not in CONTAINER_TOOLS:
            continue  # the gateway runs these itself; only some tools are containers
        flag = entry.get("enabled", True) if isinstance(entry, Mapping) else False
        key = component_name(name) if section == "tools" else name
        result[key] = flag
    return result


# --------------------------------------------------------------------------------------------
# Each component's own copy of nachos.toml, and the secrets kept out of every copy (issue 19, item 4)

# The keys of nachos.toml that hold a secret and that the platform's config loader also reads from its
# environment overlay (``packages/shared/config/src/env.ts`` upstream), with the variable and the
# one component that reads them: a channel's credentials are its own (``channels.<name>.*``), the
# Redis URL with its password the gateway's. A key here is never written into a rendered copy.
OVERLAY_SECRETS: dict[tuple[str, ...], str] = {
    ("channels", "slack", "app_token"): "CHANNEL_SLACK_APP_TOKEN",
    ("channels", "slack", "bot_token"): "CHANNEL_SLACK_BOT_TOKEN",
    ("channels", "slack", "signing_secret"): "CHANNEL_SLACK_SIGNING_SECRET",
    ("channels", "discord", "token"): "CHANNEL_DISCORD_TOKEN",
    ("channels", "telegram", "token"): "CHANNEL_TELEGRAM_TOKEN",
    ("channels", "whatsapp", "token"): "CHANNEL_WHATSAPP_TOKEN",
    ("channels", "whatsapp", "verify_token"): "CHANNEL_WHATSAPP_VERIFY_TOKEN",
    ("channels", "whatsapp", "app_secret"): "CHANNEL_WHATSAPP_APP_SECRET",
    ("runtime", "redis_url"): "RUNTIME_REDIS_URL",
}
# A channel's own variable (which it takes when its configuration has no value: upstream's adapters read
# ``channelConfig.token ?? secrets.WHATSAPP_TOKEN``) and the overlay variable that fills the same key:
# either one set is the secret given.
OWN_VARIABLES: dict[str, str] = {
    "WHATSAPP_TOKEN": "CHANNEL_WHATSAPP_TOKEN",
    "WHATSAPP_VERIFY_TOKEN": "CHANNEL_WHATSAPP_VERIFY_TOKEN",
    "WHATSAPP_APP_SECRET": "CHANNEL_WHATSAPP_APP_SECRET",
    "SLACK_BOT_TOKEN": "CHANNEL_SLACK_BOT_TOKEN",
    "SLACK_APP_TOKEN": "CHANNEL_SLACK_APP_TOKEN",
    "SLACK_SIGNING_SECRET": "CHANNEL_SLACK_SIGNING_SECRET",
    "DISCORD_BOT_TOKEN": "CHANNEL_DISCORD_TOKEN",
    "TELEGRAM_BOT_TOKEN": "CHANNEL_TELEGRAM_TOKEN",
}
SECRETS_ENV_DIR = "credentials"  # the output folder's private folder (0700), beside the bus passwords
# What a channel or tool needs of the platform-wide sections: the platform's loader refuses a file
# without [nachos] name and version, [llm] provider and model (and region for bedrock) and
# [security] mode (and the acknowledgement that permissive mode needs).
_NEEDED_BY_ALL: dict[str, tuple[str, ...]] = {
    "nachos": ("name", "version"),
    "llm": ("provider", "model", "region"),
    "security": ("mode", "i_understand_the_risks"),
}
_REFERENCE = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}")


def _is_reference(value: object) -> bool:
    """Whether ``value`` is ``${VAR}`` alone, which the platform expands from its reader's environment:
    no secret, so it stays in that reader's copy."""
    return isinstance(value, str) and _REFERENCE.fullmatch(value) is not None


@dataclass(frozen=True)
class InlineSecret:
    """A secret written as a value in nachos.toml: where, which overlay variable carries it to its one
    reader instead, and the value (kept out of every repr, so a log or a traceback never shows it)."""

    key: str  # dotted, e.g. channels.whatsapp.token
    variable: str  # e.g. CHANNEL_WHATSAPP_TOKEN
    component: str  # the component that reads it: the channel, or the gateway
    value: str = field(repr=False)


def secret_reader(path: tuple[str, ...]) -> str:
    """The one component that reads the secret at ``path``."""
    return path[1] if path[0] == "channels" else "gateway"


def secrets_env_file(component: str) -> str:
    """Where nachos-deploy writes ``component``'s inline secrets (relative to the output folder, 0600)."""
    return f"{SECRETS_ENV_DIR}/platform-{component}.env"


def inline_secrets(document: Mapping[str, Any]) -> tuple[InlineSecret, ...]:
    """The secrets written as values in ``document``. A ``${VAR}`` reference is not one (the platform
    expands it from the reader's environment), nor an empty value, nor a Redis URL without a password."""
    found = []
    for path, variable in OVERLAY_SECRETS.items():
        node: Any = document
        for part in path:
            node = node.get(part) if isinstance(node, Mapping) else None
        if not isinstance(node, str) or not node or _is_reference(node):
            continue
        if path == ("runtime", "redis_url") and "@" not in node:
            continue
        found.append(InlineSecret(".".join(path), variable, secret_reader(path), node))
    return tuple(found)


def default_document(project: str) -> dict[str, Any]:
    """The minimal platform configuration the components start with when the user has none."""
    return {
        "nachos": {"name": project, "version": "1.0"},
        "llm": {"provider": "anthropic", "model": "claude-sonnet-4-5"},
        "security": {"mode": "standard"},
    }


def without_secrets(node: Any, path: tuple[str, ...] = ()) -> Any:
    """``node`` (found at ``path`` in nachos.toml) without the values of :data:`OVERLAY_SECRETS`;
    a ``${VAR}`` reference stays, being none."""
    if not isinstance(node, Mapping):
        return node
    return {
        key: without_secrets(value, (*path, key))
        for key, value in node.items()
        if (*path, key) not in OVERLAY_SECRETS or _is_reference(value)
    }


def component_document(document: Mapping[str, Any], component: str, role: str) -> dict[str, Any]:
    """The part of ``document`` that ``component`` (of ``role``) reads, without a secret.

    The gateway reads nearly every section, but not ``[channels]``: it takes its channels from
    ``GATEWAY_CHANNELS``, which nachos-deploy sets, and the platform's loader would refuse an
    enabled channel whose token is missing. llm-proxy reads ``[llm]`` and ``[security]``. A channel
    reads its own ``[channels.<name>]``, a tool its ``[tools.<name>]`` (``_`` for ``-``); both also
    get what the loader requires of every file."""
    if role == "gateway":
        return {k: without_secrets(v, (k,)) for k, v in document.items() if k != "channels"}
    if role == "llm-proxy":
        picked = {k: document[k] for k in ("nachos", "llm", "security") if k in document}
        return {k: without_secrets(v, (k,)) for k, v in picked.items()}
    result: dict[str, Any] = {}
    for section, keys in _NEEDED_BY_ALL.items():
        table = document.get(section)
        if isinstance(table, Mapping):
            result[section] = {key: table[key] for key in keys if key in table}
    own = ("channels", component) if role == "channel" else ("tools", component.replace("-", "_"))
    tables = document.get(own[0])
    mine = tables.get(own[1]) if isinstance(tables, Mapping) else None
    if isinstance(mine, Mapping):
        result[own[0]] = {own[1]: without_secrets(mine, own)}
    return result


def toml_text(document: Mapping[str, Any], header: str = "") -> str:
    """``document`` as TOML that ``tomllib`` reads back equal: plain keys first, then each table under
    its own header; arrays of tables are written as arrays of inline tables."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]

    def table(node: Mapping[str, Any], path: tuple[str, ...]) -> None:
        plain = [(k, v) for k, v in node.items() if not isinstance(v, Mapping)]
        nested = [(k, v) for k, v in node.items() if isinstance(v, Mapping)]
        if path and (plain or not nested):
            lines.append("")
            lines.append("[" + ".".join(_toml_key(part) for part in path) + "]")
        lines.extend(f"{_toml_key(key)} = {_toml_value(value)}" for key, value in plain)
        for key, value in nested:
            table(value, (*path, key))

    table(document, ())
    return "\n".join(lines).lstrip("\n") + "\n"


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _toml_string(key)


def _toml_string(text: str) -> str:
    # JSON's escapes are TOML's, but for DEL, which TOML wants escaped and JSON leaves as it is.
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"not a TOML value: {type(value).__name__}")


def inline_secrets_warning(path: Path | None, secrets: tuple[InlineSecret, ...]) -> str:
    """The one warning for secrets written in nachos.toml: which, where they go now, how to move them."""
    where = str(path) if path is not None else "nachos.toml"
    moves = "; ".join(f"{s.key} → {s.variable} (read by {s.component})" for s in secrets)
    return (
        f"{where} holds secrets written as values ({', '.join(s.key for s in secrets)}). nachos-deploy "
        "keeps them out of every rendered file and passes each only to the component that reads it, "
        f"through the overlay variable in the output folder's {SECRETS_ENV_DIR}/platform-<component>.env "
        f"(0600); but {where} itself is readable by whoever can read it, and goes into backups and "
        "version control. Move each: delete the key from "
        f"{where} and set its variable in nachos-deploy's environment or the output folder's .env "
        f"({moves}); nachos-deploy hands the variable to that component alone."
    )
