"""What `up` would change on a Swarm stack, read without changing anything (``plan``).

``docker stack deploy`` updates a service whose task spec differs from the file's, which replaces its
tasks; with ``--prune`` (the last of `up`'s three deploys) it removes the services the file no longer
has. The rendered ``docker-stack.yml`` is resolved by Compose as ``stack deploy`` resolves it (the
same variables: the output folder's ``.env`` and the credential secrets' versions), from the files
as staged (the output folder when up to date, else a private temporary copy), and compared with
``docker service inspect``: the image reference (images are never resolved to a digest here:
``--resolve-image never``, so a re-tagged image under the same reference is not a change to Swarm),
the environment, the mounts, and the configs and secrets by name (each name carries its content's
hash, so a changed file is a new config). Configs and secrets the stack names that do not exist yet
are to be created, with its volumes and networks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence

from nachos_deploy.core.changes import Mount, Objects, Observed, ServiceChange, Wanted, decide
from nachos_deploy.core.names import STACK_FILE, VOLUME_INIT
from nachos_deploy.docker import running_specs, swarm
from nachos_deploy.io import bus_tls, credentials, files, state_credentials
from nachos_deploy.io.files import read_env_file
from nachos_deploy.io.stack import DOTENV, Stack


@contextlib.contextmanager
def resolved_stack(stack: Stack) -> Iterator[dict[str, object]]:
    """The whole stack file as ``stack deploy`` would read it now."""
    output = stack.output_dir
    variables = read_env_file(output / DOTENV) if (output / DOTENV).is_file() else {}
    variables.update(credentials.secret_versions(output))
    variables.update(bus_tls.secret_versions(output))
    variables.update(state_credentials.secret_versions(output))
    variables[swarm.OUTPUT_VARIABLE] = str(output)
    with files.staged(output, stack.files) as folder:
        yield running_specs.resolve_stack_file(stack.project, folder / STACK_FILE, output, variables)


def _mapping(value: object) -> Mapping[str, object]:
    return value if isinstance(value, dict) else {}


def _named(resolved: Mapping[str, object], kind: str, key: str, project: str) -> str:
    declared = _mapping(_mapping(resolved.get(kind)).get(key))
    return str(declared.get("name") or f"{project}_{key}")


def wanted_of(resolved: Mapping[str, object], project: str, name: str) -> Wanted:
    service = _mapping(_mapping(resolved.get("services")).get(name))
    environment = {str(k): str(v) for k, v in _mapping(service.get("environment")).items() if v is not None}
    mounts: set[Mount] = set()
    volumes = service.get("volumes")
    for volume in volumes if isinstance(volumes, list) else []:
        volume = _mapping(volume)
        kind = str(volume.get("type") or "")
        source = str(volume.get("source") or "")
        if kind == "volume" and source:
            source = _named(resolved, "volumes", source, project)
        elif kind == "tmpfs":
            source = ""
        mounts.add((kind, source, str(volume.get("target") or ""), bool(volume.get("read_only"))))
    references = []
    for kind in ("configs", "secrets"):
        attached = service.get(kind)
        for ref in attached if isinstance(attached, list) else []:
            ref = _mapping(ref)
            source = str(ref.get("source") or "")
            target = str(
                ref.get("target") or (f"/run/secrets/{source}" if kind == "secrets" else f"/{source}")
            )
            references.append((target, _named(resolved, kind, source, project)))
    return Wanted(
        name,
        str(service.get("image") or "").split("@", 1)[0],
        environment,
        frozenset(mounts),
        running_specs.references_digest(references),
        one_shot=name == VOLUME_INIT,
    )


def changes(stack: Stack, only: Sequence[str]) -> list[ServiceChange]:
    """Per service of the stack file, then per service the file no longer has (removed by
    ``--prune`` when `up` deploys the whole file); ``only`` is the bus alone or everything (Swarm
    deploys a file whole)."""
    with resolved_stack(stack) as resolved:
        names = list(_mapping(resolved.get("services")))
    specs = running_specs.swarm_specs(stack.project)
    if only:
        bus_file = {s.name for s in stack.plan.selected(only)}
        names = [n for n in names if n in bus_file or n == VOLUME_INIT]
        specs = {n: s for n, s in specs.items() if n in names}
    wanted = [wanted_of(resolved, stack.project, name) for name in names]
    observed = {
        name: Observed(True, s.image, s.environment, s.mounts, s.configuration) for name, s in specs.items()
    }
    # Only the whole file's deploy prunes, and `up` deploys it only when it starts a component.
    prunes = not only and bool(stack.plan.components)
    return decide(wanted, observed, orphans="remove" if prunes else "keep")


def to_create(stack: Stack, only: Sequence[str]) -> Objects:
    """The stack's volumes, networks, configs and secrets the engine does not have yet."""
    with resolved_stack(stack) as resolved:
        pass
    wanted: dict[str, set[str]] = {}
    for kind in ("volumes", "networks", "configs", "secrets"):
        declared = _mapping(resolved.get(kind))
        wanted[kind] = {
            _named(resolved, kind, key, stack.project)
            for key, value in declared.items()
            if not _mapping(value).get("external")
        }
    missing = {
        kind: sorted(names - running_specs.existing_names(kind[:-1])) for kind, names in wanted.items()
    }
    return Objects(
        tuple(missing["volumes"]),
        tuple(missing["networks"]),
        tuple(missing["configs"]),
        tuple(missing["secrets"]),
    )
