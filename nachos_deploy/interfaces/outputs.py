"""Connection details for the next step of a pipeline: a dotenv file, GitHub step outputs and
environment, or text to print (dotenv, JSON, shell ``export`` lines).

Machine-readable by design: ``NATS_URL`` carries the operator's credentials so that a caller can use
it as it is. Files are written atomically with mode 0600; nothing here prints for people.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import tempfile
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from urllib.parse import urlsplit

from nachos_deploy.core.errors import ConfigError, OutputError
from nachos_deploy.core.results import Endpoints

GITHUB_OUTPUT = "GITHUB_OUTPUT"
GITHUB_ENV = "GITHUB_ENV"
STEP_OUTPUTS = {
    "NATS_URL": "nats_url",
    "NATS_SERVERS": "nats_servers",
    "NATS_MONITOR_URL": "monitor_url",
    "NATS_CA_FILE": "ca_file",
    "NACHOS_PROJECT": "project",
}
_PLAIN = re.compile(r"^[A-Za-z0-9_.,:/@%+=\[\]-]*$")


class Format(StrEnum):
    DOTENV = "dotenv"
    JSON = "json"
    SHELL = "shell"


def values(endpoints: Endpoints, project: str, webhooks: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables every output carries, in a stable order; NATS_MONITOR_URL only where the HTTP
    monitoring port is published (bus.publish_monitor), NATS_CA_FILE only where the bus speaks TLS
    with a CA the system does not trust (bus.tls: NATS_URL is then tls://). ``webhooks``: channel ->
    public webhook URL, each as NACHOS_WEBHOOK_URL_<CHANNEL> (what to paste into the provider's
    console).

    NATS_SERVERS, only for a clustered bus: NATS_URL, then each node's own URL, comma-separated (what
    the NATS CLI and nats.go take as a URL; nats-py and nats.js take the list). A client given them
    all moves to another URL at once when its node goes, where with NATS_URL alone it redials that
    one URL, which nats-py does not do again within its 2 s reconnect wait (docs/bus-upgrade.md)."""
    monitor = endpoints.shown_monitor_url
    return {
        "NATS_URL": endpoints.nats_url,
        **({"NATS_SERVERS": ",".join(endpoints.servers)} if endpoints.nodes else {}),
        **({"NATS_MONITOR_URL": monitor} if monitor else {}),
        **({"NATS_CA_FILE": endpoints.ca_file} if endpoints.ca_file else {}),
        "NACHOS_PROJECT": project,
        **{webhook_variable(channel): url for channel, url in (webhooks or {}).items()},
    }


def webhook_variable(channel: str) -> str:
    """NACHOS_WEBHOOK_URL_WHATSAPP for whatsapp: a channel's name is lower-case letters, digits, '-'."""
    return "NACHOS_WEBHOOK_URL_" + channel.upper().replace("-", "_")


def secret_of(variables: Mapping[str, str]) -> str | None:
    """The password inside NATS_URL, for a CI log to mask."""
    return urlsplit(variables.get("NATS_URL", "")).password


def text(variables: Mapping[str, str], fmt: Format) -> str:
    if fmt is Format.JSON:
        return json.dumps(dict(variables), indent=2) + "\n"
    if fmt is Format.SHELL:
        return "".join(f"export {name}={shlex.quote(value)}\n" for name, value in variables.items())
    return "".join(f"{name}={_dotenv_value(value)}\n" for name, value in variables.items())


def _dotenv_value(value: str) -> str:
    if _PLAIN.match(value):
        return value
    return "'" + value.replace("'", "") + "'"  # our values never hold a quote; never half-quote one


def write_env_file(path: Path, variables: Mapping[str, str]) -> None:
    """Write a dotenv file atomically (a temporary file beside it, renamed over it), mode 0600."""
    path = path.expanduser()
    folder = path.parent if str(path.parent) else Path()
    try:
        # mkstemp creates the file with mode 0600, before anything is written to it
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=folder)
    except OSError as exc:
        raise OutputError(
            f"Cannot write --env-file {path} ({exc.strerror or exc}): its folder must exist and be "
            "writable. Choose another path."
        ) from None
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text(variables, Format.DOTENV))
        Path(temporary).replace(path)
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        raise OutputError(
            f"Cannot write --env-file {path} ({exc.strerror or exc}). Choose another path."
        ) from None


def github_targets(environ: Mapping[str, str]) -> dict[str, str]:
    """$GITHUB_OUTPUT and $GITHUB_ENV, those that are set; a ConfigError when neither is (checked
    before `up` starts anything)."""
    targets = {name: environ[name] for name in (GITHUB_OUTPUT, GITHUB_ENV) if environ.get(name)}
    if not targets:
        raise ConfigError(
            "--github writes to the files named by $GITHUB_OUTPUT and $GITHUB_ENV, and neither is set: "
            "GitHub Actions sets them in a workflow step. Outside Actions, use --env-file PATH or "
            "`nachos-deploy env`."
        )
    return targets


def append_github(variables: Mapping[str, str], environ: Mapping[str, str]) -> list[str]:
    """Append the variables as step outputs (lower-case names) to $GITHUB_OUTPUT and as variables to
    $GITHUB_ENV; returns the files written."""
    written = []
    for name, target in github_targets(environ).items():
        # Every step output action.yml declares is written (empty when the stack has none, e.g. no
        # ca_file without TLS), so a workflow can test `steps.up.outputs.ca_file != ''`.
        step = {output: "" for output in STEP_OUTPUTS.values()} | {
            STEP_OUTPUTS.get(key, key.lower()): value for key, value in variables.items()
        }
        lines = (
            [f"{output}={value}" for output, value in step.items()]
            if name == GITHUB_OUTPUT
            else [f"{key}={value}" for key, value in variables.items()]
        )
        try:
            with Path(target).open("a", encoding="utf-8") as stream:
                stream.write("".join(line + "\n" for line in lines))
        except OSError as exc:
            raise OutputError(f"Cannot append to ${name} ({target}: {exc.strerror or exc}).") from None
        written.append(target)
    return written
