"""What the last `up` deployed from an output folder, so that the reading commands judge what runs.

`status`, `request`, `env`, `logs` and `down` may run from another folder (`-p <project>`, the hint
`up` prints), or after the deploy file was changed, or without the `--set` the `up` had: the
configuration in front of them is then not the one running. So `up` leaves, in the output folder's
``.deployed`` (mode 0600, kept out of git by the rendered ``.gitignore``), the configuration it
deployed as validated (every layer merged: file, ``NACHOS_DEPLOY_*`` variables, ``--set``), the
platform's ``nachos.toml`` as read, the folders it came from, and a digest of all that. Configurations
are compared, not rendered files: a nachos-deploy upgrade that renders the same configuration anew
is not a deploy file that "differs".
The engine's labels lead a command to the output folder (``targets.deployment``); this record then
gives back the stack exactly as deployed, planned and rendered again without reading any file it
came from (they may have changed since). Written before anything is deployed, so that a stack an
`up` left half started is judged by what that `up` was starting.

A record that is missing, of another format or unreadable is no record: the command then works
with the configuration in front of it, as before.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nachos_deploy.core import platform_config
from nachos_deploy.core.config import DeployConfig
from nachos_deploy.core.names import DEPLOYED_FILE
from nachos_deploy.core.platform_config import Platform
from nachos_deploy.io import loader
from nachos_deploy.io.files import replace_private
from nachos_deploy.io.stack import Stack, assemble

FORMAT = 2  # bump when the record's meaning changes: an old record then reads as none


@dataclass(frozen=True)
class Record:
    """One deployment as `up` left it: where it came from, and what its files were."""

    project: str
    output_dir: Path
    config_path: Path | None  # the deploy file, None for the built-in defaults or a mapping
    digest: str  # of the configuration deployed (:func:`digest`)
    loaded: loader.Loaded

    @property
    def source(self) -> str:
        """Where the deployed configuration came from, for a message."""
        return str(self.config_path) if self.config_path else f"the built-in defaults in {self.output_dir}"


def _described(stack: Stack) -> dict[str, Any]:
    """What makes a deployment what it is: the configuration, the platform's flags, the folders."""
    loaded = stack.loaded
    platform = loaded.platform
    return {
        "project": stack.project,
        "output_dir": str(stack.output_dir),
        "base_dir": str(loaded.base_dir),
        "config": loaded.config.model_dump(mode="json"),
        "platform": {
            "path": str(platform.path) if platform.path else None,
            "channels": dict(platform.channels),
            "tools": dict(platform.tools),
            "problems": list(platform.problems),
            # What the components' own copies are made from, and where its secrets go: never a
            # secret's value (the reader's env file in credentials/ keeps it).
            "document": None
            if platform.document is None
            else platform_config.toml_text(platform_config.without_secrets(platform.document)),
            "secrets": [[s.key, s.variable, s.component] for s in platform.secrets],
        },
    }


def digest(stack: Stack) -> str:
    """The digest of a stack's configuration: equal digests, the same deployment."""
    return hashlib.sha256(json.dumps(_described(stack), sort_keys=True).encode()).hexdigest()


def save(stack: Stack) -> None:
    """Record what this `up` deploys (atomically, 0600). A record that cannot be written only costs
    the reading commands their view from elsewhere: `up` goes on."""
    loaded = stack.loaded
    document = {
        "format": FORMAT,
        **_described(stack),
        "config_path": str(loaded.config_path) if loaded.config_path else None,
        "digest": digest(stack),
    }
    with contextlib.suppress(OSError):
        replace_private(
            stack.output_dir / DEPLOYED_FILE, json.dumps(document, indent=1, sort_keys=True) + "\n"
        )


def read(output_dir: Path) -> Record | None:
    """The record `up` left in ``output_dir``; None when there is none that can be trusted."""
    try:
        return parse((output_dir / DEPLOYED_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def parse(text: str) -> Record | None:
    """A record from its text (as kept by io/releases.py for a rollback); None when untrusted."""
    try:
        document: Any = json.loads(text)
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            return None
        platform = document["platform"]
        config_path = document["config_path"]
        loaded = loader.Loaded(
            config=DeployConfig.model_validate(document["config"]),
            base_dir=Path(document["base_dir"]),
            config_path=Path(config_path) if config_path else None,
            platform=Platform(
                path=Path(platform["path"]) if platform["path"] else None,
                channels={str(k): bool(v) for k, v in platform["channels"].items()},
                tools={str(k): bool(v) for k, v in platform["tools"].items()},
                problems=tuple(str(p) for p in platform["problems"]),
                document=None if platform["document"] is None else tomllib.loads(platform["document"]),
                secrets=tuple(
                    platform_config.InlineSecret(str(k), str(v), str(c), "")
                    for k, v, c in platform["secrets"]
                ),
            ),
        )
        return Record(
            project=str(document["project"]),
            output_dir=Path(document["output_dir"]),
            config_path=loaded.config_path,
            digest=str(document["digest"]),
            loaded=loaded,
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # pydantic's errors are ValueErrors
        return None


def stack_of(record: Record, environ: Mapping[str, str] | None = None) -> Stack:
    """The recorded stack, planned and rendered again as it was deployed."""
    return assemble(record.loaded, record.output_dir, dict(os.environ) if environ is None else environ)


def forget(output_dir: Path) -> None:
    """Drop the record (after `down`: nothing runs from this folder any more)."""
    with contextlib.suppress(OSError):
        (output_dir / DEPLOYED_FILE).unlink(missing_ok=True)
