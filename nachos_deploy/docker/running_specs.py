"""What runs, as `plan` compares it with the rendered files: each container's (or Swarm service's)
image, environment, mounts and configuration, and which volumes, networks, configs and secrets
exist. Reads only: ``inspect`` and ``ls`` calls, and ``docker compose config``, none of which
changes anything on the engine or writes a file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from nachos_deploy.core.changes import Mount
from nachos_deploy.core.errors import ExitCode
from nachos_deploy.docker import runner
from nachos_deploy.docker.compose import Compose
from nachos_deploy.docker.errors import Meaning, classify, meaning_of
from nachos_deploy.docker.parse import integer, items, mapping
from nachos_deploy.docker.runner import DockerFailure

CONFIG_HASH_LABEL = "com.docker.compose.config-hash"
SERVICE_LABEL = "com.docker.compose.service"
_ANONYMOUS = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Container:
    """One container of a Compose project, as `plan` compares it."""

    service: str
    container_id: str
    status: str
    exit_code: int
    image: str  # "<reference> <image id>"
    config_hash: str
    environment: Mapping[str, str]
    mounts: frozenset[Mount]


@dataclass(frozen=True)
class SwarmSpec:
    """One service of a Swarm stack, from its spec (what its tasks are created from)."""

    service: str  # without the stack's prefix
    image: str  # the reference, without the digest Swarm may have pinned
    environment: Mapping[str, str]
    mounts: frozenset[Mount]
    configuration: str  # a digest of its configs' and secrets' names and targets


def _inspect(kind: str, ids: Sequence[str]) -> list[Mapping[str, object]]:
    if not ids:
        return []
    try:
        return items(json.loads(runner.output(["docker", kind, "inspect", *ids])))
    except DockerFailure as failure:
        if meaning_of(failure) is Meaning.GONE:
            return []  # removed meanwhile: read as absent
        raise classify(failure, f"Cannot inspect the {kind}s", exit_code=ExitCode.ENVIRONMENT) from None
    except ValueError:
        return []


def _list(command: Sequence[str], doing: str) -> list[str]:
    try:
        return runner.output(["docker", *command]).split()
    except DockerFailure as failure:
        raise classify(failure, doing, exit_code=ExitCode.ENVIRONMENT) from None


def environment_of(entries: object) -> dict[str, str]:
    """``["KEY=value", ...]`` as a mapping (a bare ``KEY`` is an empty value)."""
    found: dict[str, str] = {}
    for entry in entries if isinstance(entries, list) else []:
        key, _, value = str(entry).partition("=")
        found[key] = value
    return found


def container_mounts(entries: object) -> frozenset[Mount]:
    """A container's ``Mounts``, without the anonymous volumes an image's ``VOLUME`` adds."""
    found = set()
    for mount in items(entries):
        kind = str(mount.get("Type") or "")
        source = str(mount.get("Name") or "") if kind == "volume" else str(mount.get("Source") or "")
        if kind == "volume" and _ANONYMOUS.match(source):
            continue
        if kind == "tmpfs":
            source = ""
        found.add((kind, source, str(mount.get("Destination") or ""), not mount.get("RW", True)))
    return frozenset(found)


def container_of(item: Mapping[str, object]) -> Container:
    config = mapping(item.get("Config"))
    labels = mapping(config.get("Labels"))
    state = mapping(item.get("State"))
    return Container(
        service=str(labels.get(SERVICE_LABEL) or ""),
        container_id=str(item.get("Id") or ""),
        status=str(state.get("Status") or "unknown"),
        exit_code=integer(state.get("ExitCode")),
        image=f"{config.get('Image') or ''} {item.get('Image') or ''}",
        config_hash=str(labels.get(CONFIG_HASH_LABEL) or ""),
        environment=environment_of(config.get("Env")),
        mounts=container_mounts(item.get("Mounts")),
    )


def containers(project: str) -> dict[str, Container]:
    """Service → its container in Compose project ``project`` (all, stopped ones and orphans too)."""
    label = f"label=com.docker.compose.project={project}"
    ids = _list(
        ["container", "ls", "--all", "--quiet", "--no-trunc", "--filter", label],
        "Cannot list the project's containers",
    )
    found: dict[str, Container] = {}
    for item in _inspect("container", ids):
        container = container_of(item)
        if container.service:
            found.setdefault(container.service, container)
    return found


def images(references: Iterable[str]) -> dict[str, tuple[str, dict[str, str]]]:
    """Image reference (or id) → (its id, its ``ENV``), for those this engine has."""
    names = sorted(set(references))
    found: dict[str, tuple[str, dict[str, str]]] = {}
    if not names:
        return found
    done = runner.run(["docker", "image", "inspect", *names], check=False)
    try:
        listed = items(json.loads(done.stdout or "[]"))
    except ValueError:
        listed = []
    by_id = {str(i.get("Id")): i for i in listed}
    known = {image_id: image_id for image_id in by_id}
    for image in listed:
        for name in (*_strings(image.get("RepoTags")), *_strings(image.get("RepoDigests"))):
            known[name] = str(image.get("Id"))
    for name in names:
        image_id = known.get(name) or known.get(f"{name}:latest")
        if image_id is not None:
            env = environment_of(mapping(by_id[image_id].get("Config")).get("Env"))
            found[name] = (image_id, env)
    return found


def _strings(value: object) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def config_hashes(client: Compose) -> dict[str, str]:
    """Service → the ``com.docker.compose.config-hash`` Compose would give its container now; reads,
    writes nothing.

    ``docker compose config --hash`` alone is not that hash for a service with an ``env_file``:
    ``up`` hashes the service with the file's variables merged into its environment, ``config``
    with the ``env_file`` key (Compose 2.40, measured: every `up` of the gateway looked like a
    change). So the project as Compose resolves it is hashed again, from stdin, with each
    ``env_file`` merged as ``up`` merges it (the file's values under the service's own)."""
    try:
        resolved = json.loads(runner.output([*client.command, "config", "--format", "json"]))
        text = runner.output(
            ["docker", "compose", "--project-name", client.project, "--file", "-", "config", "--hash", "*"],
            stdin=json.dumps(_env_files_merged(resolved)),
        )
    except DockerFailure as failure:
        raise classify(failure, "docker compose config --hash failed", config=True) from None
    except ValueError:
        return {}
    found = {}
    for line in text.splitlines():
        name, _, digest = line.strip().partition(" ")
        if name and digest:
            found[name] = digest.strip()
    return found


def _env_files_merged(resolved: Mapping[str, object]) -> dict[str, object]:
    """``resolved`` with each service's ``env_file`` read into its ``environment``, as ``up`` does
    before it hashes (a missing optional file adds nothing)."""
    project = dict(resolved)
    services = {}
    for name, value in mapping(resolved.get("services")).items():
        service = dict(mapping(value))
        found: dict[str, object] = {}
        for entry in items(service.pop("env_file", None) or []):
            path = entry.get("path")
            with contextlib.suppress(OSError):
                for line in Path(str(path)).read_text(encoding="utf-8").splitlines():
                    key, equals, rest = line.strip().partition("=")
                    if equals and key and not key.startswith("#"):
                        found[key.strip()] = rest
        if found:
            service["environment"] = {**found, **mapping(service.get("environment"))}
        services[name] = service
    project["services"] = services
    return project


def existing_names(kind: str) -> set[str]:
    """The names of every ``kind`` object (volume, network, config, secret) the engine has."""
    return set(_list([kind, "ls", "--format", "{{.Name}}"], f"Cannot list the {kind}s"))


def resolve_stack_file(
    project: str, stack_file: Path, directory: Path, variables: Mapping[str, str]
) -> dict[str, object]:
    """A Swarm stack file as Compose resolves it (``docker compose config``: variables filled in,
    paths from ``directory``), which is what ``docker stack deploy`` makes of it; reads only."""
    command = [
        "docker", "compose", "--file", str(stack_file), "--project-name", project,
        "--project-directory", str(directory), "config", "--format", "json",
    ]  # fmt: skip
    try:
        resolved = json.loads(runner.output(command, env=variables))
    except DockerFailure as failure:
        raise classify(
            failure, f"Docker Compose cannot read the rendered {stack_file.name}", config=True
        ) from None
    except ValueError:
        return {}
    return dict(resolved) if isinstance(resolved, dict) else {}


def swarm_specs(project: str) -> dict[str, SwarmSpec]:
    """Service → its spec, for every service of the Swarm stack ``project``."""
    ids = _list(
        ["service", "ls", "--quiet", "--filter", f"label=com.docker.stack.namespace={project}"],
        "Cannot list the stack's services",
    )
    found = {}
    for item in _inspect("service", ids):
        spec = swarm_spec_of(item, project)
        found[spec.service] = spec
    return found


def swarm_spec_of(item: Mapping[str, object], project: str) -> SwarmSpec:
    spec = mapping(item.get("Spec"))
    container = mapping(mapping(spec.get("TaskTemplate")).get("ContainerSpec"))
    mounts = set()
    for mount in items(container.get("Mounts")):
        kind = str(mount.get("Type") or "")
        source = "" if kind == "tmpfs" else str(mount.get("Source") or "")
        mounts.add((kind, source, str(mount.get("Target") or ""), bool(mount.get("ReadOnly"))))
    references = sorted(
        (str(mapping(ref.get("File")).get("Name") or ""), str(ref.get("ConfigName") or ref.get("SecretName")))
        for ref in (*items(container.get("Configs")), *items(container.get("Secrets")))
    )
    return SwarmSpec(
        service=str(spec.get("Name") or "").removeprefix(f"{project}_"),
        image=str(container.get("Image") or "").split("@", 1)[0],
        environment=environment_of(container.get("Env")),
        mounts=frozenset(mounts),
        configuration=references_digest(references),
    )


def references_digest(references: Iterable[tuple[str, str]]) -> str:
    """A digest of (target, name) pairs of a service's configs and secrets, order aside."""
    return hashlib.sha256(json.dumps(sorted(references)).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class NetworkSpec:
    """What Compose compares of an existing network before reusing it."""

    name: str
    internal: bool
    subnets: frozenset[str]


def networks(names: Sequence[str]) -> dict[str, NetworkSpec]:
    """Name → the network's spec, for those of ``names`` the engine has once. A name the engine has
    twice (two Compose runs that raced, see ``compose.up``) is left out: inspecting it by name
    fails ("is ambiguous"), and ``up`` repairs it before it uses it."""
    try:
        listed = runner.output(["docker", "network", "ls", "--no-trunc", "--format", "{{.ID}} {{.Name}}"])
    except DockerFailure as failure:
        raise classify(failure, "Cannot list the networks", exit_code=ExitCode.ENVIRONMENT) from None
    ids: dict[str, list[str]] = {}
    for line in listed.splitlines():
        network_id, _, name = line.strip().partition(" ")
        ids.setdefault(name, []).append(network_id)
    wanted = [found[0] for name, found in ids.items() if name in set(names) and len(found) == 1]
    found = {}
    for item in _inspect("network", sorted(wanted)):
        ipam = mapping(item.get("IPAM"))
        subnets = frozenset(str(c.get("Subnet")) for c in items(ipam.get("Config")) if c.get("Subnet"))
        name = str(item.get("Name") or "")
        found[name] = NetworkSpec(name, bool(item.get("Internal")), subnets)
    return found
