"""``plan``: what ``up`` would change, found without changing anything.

The same first steps as ``up`` (the selection, the required secrets, the engine, the images, the
rendered files checked by the engine's tool), so that a ``plan`` fails where ``up`` would and with
the same message; then, instead of writing and starting, three reads: the rendered files against
the output folder, each service against what runs (:meth:`Target.changes`), and the engine objects
that do not exist yet (:meth:`Target.to_create`). No file is written (the engine's tool reads the
new files from a private temporary folder when the output folder is not up to date) and nothing is
asked of the engine that changes it, so no engine event follows; no lock is taken either.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from nachos_deploy.core.changes import FileDiff, PlanResult, diff_files
from nachos_deploy.core.errors import OutputError
from nachos_deploy.io.stack import Stack
from nachos_deploy.targets import Target, for_stack


def plan(stack: Stack, *, only: Sequence[str] = ()) -> PlanResult:
    """What ``up --only`` would change on ``stack``'s engine (see the module)."""
    stack.plan.selected(only)  # refuses names the configuration does not run, as up does
    with for_stack(stack) as target:
        return plan_on(target, only=only)


def plan_on(target: Target, *, only: Sequence[str] = ()) -> PlanResult:
    """:func:`plan` on a given target (a test's fake, or a caller that holds one)."""
    stack = target.stack
    components = target.components(only)
    stack.require_secrets([c.name for c in components])
    target.check(components)
    stack = target.stack  # where up would put its networks on this engine (targets/subnet_check.py)
    return PlanResult(
        project=stack.project,
        target=stack.plan.target,
        output_dir=str(stack.output_dir),
        files=tuple(file_changes(stack)),
        services=tuple(target.changes(only)),
        create=target.to_create(only),
    )


def file_changes(stack: Stack) -> list[FileDiff]:
    """The rendered files against the output folder: new, changed, and stale (``up`` removes them)."""
    old = {name: _read(stack.output_dir / name) for name in stack.files}
    stale = {name: _read(stack.output_dir / name) for name in stack.stale}
    return diff_files(old, stack.files, stale)


def _read(path: Path) -> str | None:
    if not path.exists():
        return None
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return ""  # not text: shown as replaced whole
    except OSError as exc:
        raise OutputError(
            f"Cannot read {path} ({exc.strerror or exc}) to compare it with the rendered file; check the "
            "output folder's permissions."
        ) from None
