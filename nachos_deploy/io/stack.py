"""One deployment as the commands see it: its configuration, plan, rendered files and output folder.

This is the seam between the pure core and the edges: it loads (disk, environment), plans and renders
(pure), and knows where the files go. The CLI and the Python API both start here.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nachos_deploy.core import image_lock
from nachos_deploy.core.errors import ConfigError
from nachos_deploy.core.names import BUS_STACK_FILE, COMPOSE_FILE, SIDECARS_STACK_FILE, STACK_FILE
from nachos_deploy.core.plan import make_plan, platform_copy
from nachos_deploy.core.plan_types import Plan
from nachos_deploy.core.platform_config import OWN_VARIABLES
from nachos_deploy.core.render import HEADER, OUTPUT_NAMES, SIDECAR_PATTERN, render
from nachos_deploy.core.subnets import Subnets
from nachos_deploy.io import files as files_mod
from nachos_deploy.io import host_accounts, loader, lockfile, template_cache

if TYPE_CHECKING:
    from nachos_deploy.core.config import DeployConfig

DOTENV = ".env"  # Compose reads host variables from this file in the output folder too


@dataclass(frozen=True)
class Stack:
    loaded: loader.Loaded
    plan: Plan
    files: Mapping[str, str]
    output_dir: Path
    variables: frozenset[str] = frozenset()  # host variables set (non-empty) for Compose
    stale: tuple[str, ...] = ()  # files an earlier render wrote that this one does not
    override_file: Path | None = None  # the Compose override beside the deploy file, when present
    override_warnings: tuple[str, ...] = ()
    host_warnings: tuple[str, ...] = ()  # host accounts with a uid the containers run under
    lock: image_lock.ImageLock | None = None  # nachos-deploy.lock beside the deploy file (docs/images.md)
    # Why that lock cannot be used (unreadable, not what `lock` writes); the stack is then unpinned,
    # and only the commands that read or remove a running stack go on (interfaces.api.load).
    lock_error: str | None = None

    @property
    def warnings(self) -> tuple[str, ...]:
        return (*self.plan.warnings, *self.override_warnings, *self.host_warnings)

    def missing_secrets(self, names: Collection[str] | None = None) -> list[tuple[str, str]]:
        """(component, variable) of required secrets that neither the environment nor the output
        folder's .env sets; a channel's own variable is also given by the platform's overlay variable
        for the same key (WHATSAPP_TOKEN by CHANNEL_WHATSAPP_TOKEN)."""
        return [
            (c, v)
            for c, v in self.plan.required_secrets(names)
            if v not in self.variables and OWN_VARIABLES.get(v) not in self.variables
        ]

    def require_secrets(self, names: Collection[str] | None = None) -> None:
        """Refuse to go on without a required secret: Compose would put an empty string there and
        the component would exit at start, far from the cause."""
        missing = self.missing_secrets(names)
        if not missing:
            return
        needs: dict[str, list[str]] = {}
        for component, variable in missing:
            overlay = OWN_VARIABLES.get(variable)
            needs.setdefault(component, []).append(f"{variable} (or {overlay})" if overlay else variable)
        listing = "; ".join(f"{c} needs {', '.join(v)}" for c, v in needs.items())
        raise ConfigError(
            f"Required secrets are not set: {listing}. Export each in the environment of "
            f"nachos-deploy, or put it in {self.output_dir / DOTENV} as VARIABLE=value (or disable "
            "the component). Secrets are never written into the rendered files."
        )

    @property
    def lock_file(self) -> Path:
        """Where the image lock of this deploy file is (or would be written)."""
        return lockfile.path_for(self.loaded.base_dir)

    @property
    def config(self) -> DeployConfig:
        return self.loaded.config

    @property
    def project(self) -> str:
        return self.plan.project

    @property
    def compose_file(self) -> Path:
        return self.output_dir / COMPOSE_FILE

    @property
    def swarm(self) -> bool:
        return self.plan.target == "swarm"

    @property
    def stack_file(self) -> Path:
        return self.output_dir / STACK_FILE

    @property
    def bus_stack_file(self) -> Path:
        return self.output_dir / BUS_STACK_FILE

    @property
    def sidecars_stack_file(self) -> Path:
        return self.output_dir / SIDECARS_STACK_FILE


def prepare(
    config_path: Path | None = None,
    *,
    sets: Sequence[str] = (),
    project: str | None = None,
    output: Path | None = None,
    cwd: Path | None = None,
    environ: Mapping[str, str] | None = None,
    document: Mapping[str, Any] | None = None,
) -> Stack:
    """Load, validate, plan and render in memory. ``--output`` is relative to the working folder;
    the ``output`` key to the deploy file's folder."""
    cwd = cwd or Path.cwd()
    environ = dict(os.environ) if environ is None else environ
    all_sets = [*sets, *([f"project={project}"] if project is not None else [])]
    loaded = loader.load(config_path, cwd=cwd, environ=environ, sets=all_sets, document=document)
    output_dir = output if output is not None else loaded.base_dir / loaded.config.output
    if not output_dir.is_absolute():
        output_dir = cwd / output_dir
    return assemble(loaded, output_dir, environ)


def assemble(loaded: loader.Loaded, output_dir: Path, environ: Mapping[str, str]) -> Stack:
    """Plan and render a loaded configuration for ``output_dir`` (absolute): the part of
    :func:`prepare` that a recorded deployment (:mod:`nachos_deploy.io.deployed`) shares."""
    plan = make_plan(loaded.config, loaded.platform, base_dir=loaded.base_dir, output_dir=output_dir)
    lock, lock_error = None, None
    try:
        lock = lockfile.read(lockfile.path_for(loaded.base_dir))
    except ConfigError as exc:
        lock_error = str(exc)
    if lock is not None:  # images pinned to the lock's digests (docs/images.md)
        plan = image_lock.pin(plan, lock)
    rendered = render(plan, template_cache.bytecode_cache())
    override_file = loaded.base_dir / loaded.config.compose_override
    found = override_file.is_file() and loaded.config_path is not None
    warnings: list[str] = []
    if found:  # few deployments have one
        from nachos_deploy.core import override

        warnings = override.findings(loader.read_override(override_file), plan, str(override_file))
    variables = {name for name, value in environ.items() if value}
    variables |= files_mod.dotenv_names(output_dir / DOTENV)
    return Stack(
        loaded=loaded,
        plan=plan,
        files=rendered,
        output_dir=output_dir,
        variables=frozenset(variables),
        stale=tuple(files_mod.stale(output_dir, rendered, _candidates(output_dir), HEADER)),
        override_file=override_file if found else None,
        override_warnings=tuple(warnings),
        host_warnings=tuple(host_accounts.uid_warnings(loaded.config, plan)),
        lock=lock,
        lock_error=lock_error,
    )


def with_subnets(stack: Stack, subnets: Subnets) -> Stack:
    """``stack`` rendered with its networks elsewhere in the pool: where ``up`` found room on the engine
    (targets/subnet_check.py)."""
    plan = replace(stack.plan, subnets=subnets)
    return replace(stack, plan=plan, files=render(plan, template_cache.bytecode_cache()))


def with_lock(stack: Stack, lock: image_lock.ImageLock) -> Stack:
    """``stack`` (read without a lock) as it renders under ``lock``: what a bundle made before the lock
    was written carries."""
    if stack.lock is not None:
        raise ValueError("with_lock() takes a stack read without a lock")
    plan = image_lock.pin(stack.plan, lock)
    return replace(stack, plan=plan, files=render(plan, template_cache.bytecode_cache()), lock=lock)


def _candidates(output_dir: Path) -> list[str]:
    """The files an earlier render may have written: the fixed names, and each component's own copy
    of nachos.toml and its sidecar's configuration (a component since disabled leaves both behind)."""
    with contextlib.suppress(OSError):
        own = [*output_dir.glob(platform_copy("*")), *output_dir.glob(SIDECAR_PATTERN)]
        return [*OUTPUT_NAMES, *(p.name for p in own)]
    return list(OUTPUT_NAMES)
