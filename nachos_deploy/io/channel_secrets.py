"""The value a secret has inside a channel's container, read on the host the way the container gets it.

The webhook proofs (``nachos_deploy/web/webhooks.py``) call a channel as its provider does, with the
channel's own secret: Meta's handshake carries the verify token, Slack signs with the signing secret.
Guessing the wrong one (the host's ``WHATSAPP_VERIFY_TOKEN`` when ``nachos.toml`` holds another) would
fail a route that works, so this follows the channel's own reading: the platform's overlay variable
(``CHANNEL_WHATSAPP_VERIFY_TOKEN``, which fills ``channels.whatsapp.verify_token``) first, then the
channel's own variable (``WHATSAPP_VERIFY_TOKEN``), each as the rendered service passes it: a
reference to a host variable (its environment, then the output folder's ``.env``, as Compose reads
them), a literal, or a line of the component's private env file in ``credentials/``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from nachos_deploy.core.plan_types import ServicePlan
from nachos_deploy.core.platform_config import OWN_VARIABLES
from nachos_deploy.io.files import read_env_file


def channel_secret(
    service: ServicePlan,
    own_variable: str,
    output_dir: Path,
    environ: Mapping[str, str] | None = None,
) -> str | None:
    """What ``service`` reads for the secret whose own variable is ``own_variable`` (None: unset)."""
    environ = os.environ if environ is None else environ
    dotenv: dict[str, str] | None = None

    def host(name: str) -> str:
        nonlocal dotenv
        if environ.get(name):
            return environ[name]
        if dotenv is None:
            dotenv = read_env_file(output_dir / ".env")
        return dotenv.get(name, "")

    files: dict[str, str] = {}
    for env_file in service.env_files:
        files.update(read_env_file(output_dir / env_file))
    for variable in (OWN_VARIABLES.get(own_variable), own_variable):
        if variable is None:
            continue
        value = ""
        for var in service.environment:
            if var.name == variable:
                value = host(var.value) if var.reference else var.value
        value = value or files.get(variable, "")  # Compose: `environment` wins over `env_file`
        if value:
            return value
    return None
