"""One deployment as the commands see it: its configuration, plan, rendered files and output folder.

This is the seam between the pure core and the edges: it loads (disk, environment), plans and renders
(pure), and knows where the files go. The CLI and the Python API both start here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from nachos_deploy import loader
from nachos_deploy.config import DeployConfig
from nachos_deploy.plan import COMPOSE_FILE, Plan, make_plan
from nachos_deploy.render import render


@dataclass(frozen=True)
class Stack:
    loaded: loader.Loaded
    plan: Plan
    files: Mapping[str, str]
    output_dir: Path

    @property
    def config(self) -> DeployConfig:
        return self.loaded.config

    @property
    def project(self) -> str:
        return self.plan.project

    @property
    def compose_file(self) -> Path:
        return self.output_dir / COMPOSE_FILE


def prepare(
    config_path: Path | None = None,
    *,
    sets: Sequence[str] = (),
    project: str | None = None,
    output: Path | None = None,
    cwd: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Stack:
    """Load, validate, plan and render in memory. ``--output`` is relative to the working folder;
    the ``output`` key to the deploy file's folder."""
    cwd = cwd or Path.cwd()
    environ = dict(os.environ) if environ is None else environ
    all_sets = [*sets, *([f"project={project}"] if project else [])]
    loaded = loader.load(config_path, cwd=cwd, environ=environ, sets=all_sets)
    output_dir = output if output is not None else loaded.base_dir / loaded.config.output
    if not output_dir.is_absolute():
        output_dir = cwd / output_dir
    plan = make_plan(loaded.config, loaded.platform, base_dir=loaded.base_dir, output_dir=output_dir)
    return Stack(loaded=loaded, plan=plan, files=render(plan), output_dir=output_dir)
