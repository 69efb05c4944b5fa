"""Compose's own program, run without the docker CLI in front of it, where that changes nothing.

``docker compose ...`` starts three programs: the docker CLI, which runs the Compose plugin once for
its metadata and then again for the command. Compose run on its own (its documented standalone
mode, ``docker-compose``) does the same work in one: about 60 ms less per call on the 2-core
machine (``config`` 0.04-0.07 s against 0.10-0.14 s), and an ``up`` makes several calls, most on
the path the user waits on (docs/benchmarks.md, "Compose without the docker CLI").

It is done only where the docker CLI would run that very program with the same arguments:

- ``docker`` on PATH is a compiled program named ``docker`` once its links are followed (the real
  CLI), not a wrapper script such as podman's ``docker`` or a test's shim that logs its calls,
  which would then be bypassed, nor a link to another program (snap's ``/snap/bin/docker`` is
  ``snap``, which runs a CLI with plugin folders of its own);
- the plugin is the first ``docker-compose`` where the CLI looks (its configuration folder's
  ``cli-plugins``, ``DOCKER_CONFIG`` or ``~/.docker``, then the system folders), and is a compiled
  program too; a configuration that adds folders (``cliPluginsExtraDirs``) is left to the CLI;
- no flag before Compose's subcommand is one that its standalone mode rewrites (``--context``,
  ``-H``, ``-v``, ...); Compose keeps every other argument as the CLI would hand it on;
- this process is not itself run by the docker CLI as a plugin (``DOCKER_CLI_PLUGIN_ORIGINAL_CLI_COMMAND``).

Anything else runs ``docker compose`` as before. The rule is read on each call (a few ``stat``s), so
a Compose installed or removed meanwhile is found as the CLI would find it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

# The docker CLI's own search order on Linux, after its configuration folder (cli-plugins/manager).
SYSTEM_PLUGIN_DIRS = (
    "/usr/local/lib/docker/cli-plugins",
    "/usr/local/libexec/docker/cli-plugins",
    "/usr/lib/docker/cli-plugins",
    "/usr/libexec/docker/cli-plugins",
)
PLUGIN = "docker-compose"
# The flags Compose's standalone mode rewrites or moves when they come before the subcommand
# (cmd/compatibility/convert.go): with one of them there, the CLI's way is kept.
REWRITTEN_FLAGS = frozenset(
    {
        "--debug", "-D", "--verbose", "--tls", "--tlsverify", "--tlscacert", "--tlscert", "--tlskey",
        "--host", "-H", "--context", "--log-level", "-h", "--help", "--version", "-v",
        "__complete", "__completeNoDesc",
    }
)  # fmt: skip
PLUGIN_MODE_VARIABLE = "DOCKER_CLI_PLUGIN_ORIGINAL_CLI_COMMAND"


def _compiled(path: Path) -> bool:
    """Whether ``path`` (symlinks followed) is an ELF program: the real thing, not a script."""
    try:
        with path.open("rb") as program:
            return program.read(4) == b"\x7fELF"
    except OSError:
        return False


def _leading_flags(args: Sequence[str]) -> list[str]:
    """The arguments before the first that is not a flag, as Compose's standalone mode reads them."""
    leading = []
    for arg in args:
        if arg and not arg.startswith("-"):
            break
        leading.append(arg)
    return leading


def plugin_path(environ: Mapping[str, str]) -> str | None:
    """The Compose program the docker CLI of ``environ`` would run, when it may be run directly."""
    if environ.get(PLUGIN_MODE_VARIABLE):
        return None
    docker = shutil.which("docker", path=environ.get("PATH", os.defpath))
    if docker is None:
        return None
    cli = Path(docker).resolve()
    if cli.name != "docker" or not _compiled(cli):
        return None
    home = Path(environ["HOME"]) if environ.get("HOME") else Path.home()
    config_dir = Path(environ["DOCKER_CONFIG"]) if environ.get("DOCKER_CONFIG") else home / ".docker"
    try:
        config = (config_dir / "config.json").read_bytes()
    except FileNotFoundError:
        config = b""
    except OSError:  # unreadable: the CLI's own reading decides
        return None
    if b"cliPluginsExtraDirs" in config:
        return None
    for folder in (config_dir / "cli-plugins", *map(Path, SYSTEM_PLUGIN_DIRS)):
        candidate = folder / PLUGIN
        if candidate.exists():
            usable = os.access(candidate, os.X_OK) and _compiled(candidate)
            return str(candidate) if usable else None
    return None


def program(argv: Sequence[str], environ: Mapping[str, str]) -> list[str]:
    """What to start for ``argv``: ``docker compose ARGS`` as ``<plugin> ARGS`` where the rules
    above allow it, anything else as it is."""
    args = list(argv)
    if args[:2] != ["docker", "compose"]:
        return args
    rest = args[2:]
    if REWRITTEN_FLAGS.intersection(_leading_flags(rest)):
        return args
    plugin = plugin_path(environ)
    return [plugin, *rest] if plugin else args
