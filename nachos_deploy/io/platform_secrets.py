"""The secrets written in the platform's ``nachos.toml``, handed to their one reader through a private file.

Each component now reads its own copy of ``nachos.toml`` with no secret in it (see
``plan._own_platform_configs``). A secret the user wrote there as a value (``[channels.whatsapp]
token = "…"``) still has to reach the channel: nachos-deploy writes it as the platform's overlay
variable (``CHANNEL_WHATSAPP_TOKEN=…``) into ``credentials/platform-<component>.env`` (0600, in the
0700 folder the rendered ``.gitignore`` keeps out of version control), which Compose and ``docker stack
deploy`` read into that one component's environment (``env_file``). Nothing is rendered, so the
rendered files stay deterministic and free of secrets.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from nachos_deploy.core.errors import ConfigError, OutputError
from nachos_deploy.core.platform_config import SECRETS_ENV_DIR, InlineSecret, secrets_env_file
from nachos_deploy.io.files import replace_private

# What both readers of an env file take as it is: Compose would expand `$`, cut at ` #` and strip
# quotes, while the docker CLI (Swarm) keeps every character; a value of only these reads the same.
_PLAIN_VALUE = re.compile(r"[A-Za-z0-9_\-.:/+=@~,%!*?^&|;<>()\[\]{}]+")


def check(path: Path | None, secrets: Iterable[InlineSecret]) -> None:
    """Refuse a value the env file could not carry unchanged, naming the key and the way out."""
    for secret in secrets:
        if not _PLAIN_VALUE.fullmatch(secret.value):
            raise ConfigError(
                f"{path}: {secret.key} holds characters (spaces, quotes, '$', '#' or '\\') that cannot be "
                f"passed to {secret.component} unchanged. Delete the key from {path} and set "
                f"{secret.variable} in nachos-deploy's environment or the output folder's .env instead."
            )


def write(
    output_dir: Path,
    secrets: Iterable[InlineSecret],
    generated: Mapping[str, Mapping[str, str]] | None = None,
) -> None:
    """One env file per reader, written atomically 0600; the files of readers that no longer have an
    inline secret are removed, so a secret taken out of nachos.toml does not stay behind.
    ``generated``: component -> variables nachos-deploy made for it (the gateway's state store URLs,
    io/state_credentials.py), written into the same file and winning over an inline value."""
    by_component: dict[str, dict[str, str]] = {}
    for secret in secrets:
        by_component.setdefault(secret.component, {})[secret.variable] = secret.value
    for component, values in (generated or {}).items():
        by_component.setdefault(component, {}).update(values)
    folder = output_dir / SECRETS_ENV_DIR
    try:
        if by_component:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            folder.chmod(0o700)
        for component, own in by_component.items():
            text = "".join(f"{variable}={value}\n" for variable, value in sorted(own.items()))
            target = output_dir / secrets_env_file(component)
            if not (target.is_file() and target.read_text(encoding="utf-8") == text):
                replace_private(target, text, 0o600)
        wanted = {(output_dir / secrets_env_file(c)).name for c in by_component}
        if folder.is_dir():
            for old in folder.glob(Path(secrets_env_file("*")).name):
                if old.name not in wanted:
                    old.unlink()
    except OSError as exc:
        raise OutputError(
            f"Cannot write the platform's secrets to {folder} ({exc.strerror or exc}). Fix the output "
            "folder's permissions or choose another with --output."
        ) from None
