"""What nachos-deploy reads from the platform's own ``nachos.toml``, and which keys the platform accepts.

Pure: it works on the parsed TOML document; :mod:`nachos_deploy.io.loader` reads the file. The platform
refuses to start on a key it does not know ("Unknown config key: tools.code-runner") or on a missing
required one, and its components then exit 1 long after ``up`` began; checking the same rules here
turns that into a warning at render time. The key tree follows the platform's
``packages/shared/config/src/validation.ts``; subtrees nachos-deploy does not need are accepted whole.
"""

from __future__ import annotations

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
