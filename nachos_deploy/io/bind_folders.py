"""The rule of :mod:`nachos_deploy.core.bind_sources` on this machine's disk: `up` applies it before
anything is deployed, on Compose and on Swarm alike; `validate` and `doctor` say what it will do."""

from __future__ import annotations

from collections.abc import Sequence

from nachos_deploy.core.bind_sources import BindSource, bind_sources
from nachos_deploy.core.errors import ConfigError, OutputError
from nachos_deploy.io.stack import Stack


def missing(stack: Stack) -> list[BindSource]:
    """The bind sources the deploy file names that do not exist on this machine."""
    return [source for source in bind_sources(stack.plan, stack.output_dir) if not source.path.exists()]


def to_create(stack: Stack) -> list[BindSource]:
    """Missing folders the deploy owns: `up` creates them."""
    return [source for source in missing(stack) if source.owned]


def refused(stack: Stack) -> list[BindSource]:
    """Missing absolute paths: `up` refuses them."""
    return [source for source in missing(stack) if not source.owned]


def refusal(sources: Sequence[BindSource]) -> str:
    """One paragraph naming each refused path and its key, and how to fix it."""
    listing = "; ".join(f"{s.key} ({s.service}) names {s.path}" for s in sources)
    return (
        f"Bind mount sources that do not exist on this machine: {listing}. Create the folder (`mkdir -p "
        f"{sources[0].path}`) or fix the path. nachos-deploy creates only missing folders named "
        "relative to the deploy file (such as ./workspace); an absolute path is another owner's, and "
        "an empty folder in its place would hide a typo. Nothing was deployed."
    )


def require(stack: Stack) -> None:
    """Refuse a missing absolute bind source (ConfigError, exit 3), creating nothing."""
    foreign = refused(stack)
    if foreign:
        raise ConfigError(refusal(foreign))


def prepare(stack: Stack) -> list[str]:
    """Refuse a missing absolute bind source (ConfigError, exit 3), then create the missing folders
    the deploy owns; returns the folders created."""
    require(stack)
    created: list[str] = []
    for source in to_create(stack):
        try:
            source.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(
                f"Cannot create {source.path}, the bind source {source.key} names for {source.service} "
                f"({exc.strerror or exc}). Create it yourself or point {source.key} at a folder you can "
                "write."
            ) from None
        created.append(str(source.path))
    return created


def verdict(stack: Stack) -> tuple[str, str, str]:
    """(level, what `up` will do, fix) for `doctor`, and the same words for `validate`."""
    foreign = refused(stack)
    if foreign:
        return "fail", refusal(foreign), f"mkdir -p {foreign[0].path}, or fix {foreign[0].key}"
    made = to_create(stack)
    if made:
        listing = ", ".join(f"{s.path} ({s.key}, for {s.service})" for s in made)
        return "pass", f"`up` creates the missing bind source folder(s) {listing} before deploying", ""
    if bind_sources(stack.plan, stack.output_dir):
        return "pass", "every bind source the deploy file names exists", ""
    return "pass", "the deploy file names no bind source", ""
