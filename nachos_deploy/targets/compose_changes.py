"""What `up` would change on a Compose project, read without changing anything (``plan``).

Compose replaces a container when the configuration hash it labels the container with
(``com.docker.compose.config-hash``) differs from the one ``docker compose config --hash`` gives the
service now, or when the image its reference names is not the one the container was created from;
it starts a stopped one, and removes an orphan (a container of a service the file no longer has),
since `up` passes ``--remove-orphans``. The hash is computed on the new files as
staged by :func:`nachos_deploy.targets.compose.compose_client`: the output folder itself when it is
up to date, else a private temporary copy, with ``--project-directory`` the output folder, so that
relative paths resolve as they will once `up` has written the files, and nothing is written there.
The environment and the mounts are compared as well, to name why.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from nachos_deploy.core.changes import CONFIGURATION, Mount, Objects, Observed, ServiceChange, Wanted, decide
from nachos_deploy.core.names import VOLUME_INIT
from nachos_deploy.docker import engine, running_specs
from nachos_deploy.docker.engine import Compose
from nachos_deploy.io.stack import Stack


def selection(stack: Stack, only: Sequence[str], resolved: Mapping[str, object]) -> list[str]:
    """The services `up --only` starts, as named in the resolved project."""
    services = resolved.get("services")
    present = set(services) if isinstance(services, dict) else set()
    names = [s.name for s in stack.plan.selected(only)]
    selected = {s.name for s in stack.plan.selected(only)}
    if VOLUME_INIT in present and any(
        c.waits_for_volumes for c in stack.plan.components if c.name in selected
    ):
        names.append(VOLUME_INIT)
    return [name for name in names if name in present]


def _service(resolved: Mapping[str, object], name: str) -> Mapping[str, object]:
    services = resolved.get("services")
    found = services.get(name) if isinstance(services, dict) else None
    return found if isinstance(found, dict) else {}


def _volume_name(resolved: Mapping[str, object], project: str, source: str) -> str:
    volumes = resolved.get("volumes")
    declared = volumes.get(source) if isinstance(volumes, dict) else None
    name = declared.get("name") if isinstance(declared, dict) else None
    return str(name) if name else f"{project}_{source}"


def wanted_mounts(
    resolved: Mapping[str, object], project: str, service: Mapping[str, object]
) -> frozenset[Mount]:
    """A resolved service's ``volumes`` as its container's ``Mounts`` will read."""
    found = set()
    volumes = service.get("volumes")
    for volume in volumes if isinstance(volumes, list) else []:
        if not isinstance(volume, dict):
            continue
        kind = str(volume.get("type") or "")
        source = str(volume.get("source") or "")
        if kind == "volume":
            if not source:
                continue  # anonymous: not compared
            source = _volume_name(resolved, project, source)
        elif kind == "tmpfs":
            source = ""
        found.add((kind, source, str(volume.get("target") or ""), bool(volume.get("read_only"))))
    return frozenset(found)


def wanted_environment(service: Mapping[str, object], image_env: Mapping[str, str]) -> dict[str, str]:
    """The container's environment as Docker will build it: the image's, overlaid by the service's."""
    environment = dict(image_env)
    declared = service.get("environment")
    if isinstance(declared, dict):
        environment.update({str(k): str(v) for k, v in declared.items() if v is not None})
    return environment


def changes(stack: Stack, client: Compose, only: Sequence[str]) -> list[ServiceChange]:
    """Per service of the selection, then per orphan: what `up` would do (see the module)."""
    resolved = engine.check_compose_file(client, stack.compose_file)
    names = selection(stack, only, resolved)
    hashes = running_specs.config_hashes(client)
    running = running_specs.containers(stack.project)
    references = {name: str(_service(resolved, name).get("image") or "") for name in names}
    built = {s.name for s in stack.plan.services if s.build_context is not None}
    images = running_specs.images([r for n, r in references.items() if r and n not in built])
    wanted = []
    for name in names:
        service = _service(resolved, name)
        reference = references[name]
        image_id, image_env = images.get(reference, ("(missing)", {}))
        wanted.append(
            Wanted(
                name,
                None if name in built else f"{reference} {image_id}",
                None if name in built else wanted_environment(service, image_env),
                wanted_mounts(resolved, stack.project, service),
                hashes.get(name),
                one_shot=name == VOLUME_INIT,
            )
        )
    services = resolved.get("services")
    declared = set(services) if isinstance(services, dict) else set()
    observed = {
        name: Observed(
            running=c.status == "running",
            image=c.image,
            environment=c.environment,
            mounts=c.mounts,
            configuration=c.config_hash or None,
            finished=c.status in ("exited", "dead") and c.exit_code == 0,
        )
        for name, c in running.items()
        if name in names or name not in declared
    }
    found = decide(wanted, observed, orphans="remove")
    replaced = set(replaced_networks(stack, resolved, names))
    return [
        ServiceChange(c.name, "recreate", (CONFIGURATION,))
        if c.action == "keep" and c.name in names and replaced & set(_attached(resolved, c.name))
        else c
        for c in found
    ]


def _mapping(value: object) -> Mapping[str, object]:
    return value if isinstance(value, dict) else {}


def _attached(resolved: Mapping[str, object], name: str) -> list[str]:
    networks = _service(resolved, name).get("networks")
    return list(networks) if isinstance(networks, dict) else []


def networks_of(resolved: Mapping[str, object], services: Sequence[str]) -> list[str] | None:
    """The engine's names of every network a service of ``services`` is on, by the project as
    Compose resolved it (``docker compose config``, which names every network); None when that
    project does not say (not resolved, or a network without its name), so the caller waits for
    the engine instead of guessing Compose's ``<project>_<key>``."""
    if not isinstance(resolved.get("services"), dict):
        return None
    declared = _mapping(resolved.get("networks"))
    named: list[str] = []
    for key in sorted({key for name in services for key in _attached(resolved, name)}):
        engine_name = _mapping(declared.get(key)).get("name")
        if not isinstance(engine_name, str) or not engine_name:
            return None
        named.append(engine_name)
    return named


def _network_name(resolved: Mapping[str, object], project: str, key: str) -> str | None:
    """The engine's name of a network of the file; None for an external one (not Compose's)."""
    networks = resolved.get("networks")
    declared = networks.get(key) if isinstance(networks, dict) else None
    declared = declared if isinstance(declared, dict) else {}
    if declared.get("external"):
        return None
    return str(declared.get("name") or f"{project}_{key}")


def replaced_networks(stack: Stack, resolved: Mapping[str, object], names: Sequence[str]) -> list[str]:
    """The networks the selection uses that exist with another subnet or internal flag than the
    files give them: Compose removes such a network and creates it again (a changed
    ``com.docker.compose.config-hash`` on the network), replacing every container attached."""
    networks = resolved.get("networks")
    declared = networks if isinstance(networks, dict) else {}
    keys = sorted({key for name in names for key in _attached(resolved, name)})
    engine_names = {key: _network_name(resolved, stack.project, key) for key in keys}
    existing = running_specs.networks([n for n in engine_names.values() if n])
    found = []
    for key, engine_name in engine_names.items():
        spec = existing.get(engine_name or "")
        if spec is None:
            continue
        config = _mapping(declared.get(key))
        blocks = _mapping(config.get("ipam")).get("config")
        listed = blocks if isinstance(blocks, list) else []
        subnets = {str(b.get("subnet")) for b in listed if isinstance(b, dict) and b.get("subnet")}
        if spec.internal != bool(config.get("internal")) or (subnets and spec.subnets != subnets):
            found.append(key)
    return found


def to_create(stack: Stack, client: Compose, only: Sequence[str]) -> Objects:
    """The volumes and networks the selection's services use that the engine does not have yet."""
    resolved = engine.check_compose_file(client, stack.compose_file)
    names = selection(stack, only, resolved)
    volumes: set[str] = set()
    networks: set[str] = set()
    for name in names:
        service = _service(resolved, name)
        volumes |= {m[1] for m in wanted_mounts(resolved, stack.project, service) if m[0] == "volume"}
        for key in _attached(resolved, name):
            network = _network_name(resolved, stack.project, key)
            if network is not None:
                networks.add(network)
    have_volumes = running_specs.existing_names("volume")
    have_networks = running_specs.existing_names("network")
    replaced = replaced_networks(stack, resolved, names)
    return Objects(
        volumes=tuple(sorted(volumes - have_volumes)),
        networks=tuple(sorted(networks - have_networks)),
        replaced_networks=tuple(sorted(f"{stack.project}_{key}" for key in replaced)),
    )
