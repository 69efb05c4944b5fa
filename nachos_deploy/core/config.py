"""The deploy file's schema and how its layers are merged.

Layers, lowest first: built-in defaults, the platform's ``nachos.toml`` (only which channels and tools
are enabled), the deploy file, ``NACHOS_DEPLOY_*`` environment variables, then ``--set`` on the command
line. Every key is typed and unknown keys are errors, so a typo fails here with the file and dotted key
instead of surfacing as a wrong container later.
"""

from __future__ import annotations

import ipaddress
import posixpath
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from nachos_deploy.core import subjects
from nachos_deploy.core.units import parse_duration, parse_size

MAX_PAYLOAD_LIMIT = 64 * 1024 * 1024  # nats-server refuses more
MAX_PAYLOAD_ADVISED = 8 * 1024 * 1024  # NATS discourages more

Size = Annotated[int, BeforeValidator(parse_size)]
Duration = Annotated[str, BeforeValidator(parse_duration)]


def _not_a_bool(value: Any) -> Any:
    """YAML's true/false are not numbers here: `client_port: true` would otherwise be port 1."""
    if isinstance(value, bool):
        raise ValueError("must be a number, not true/false")
    return value


def _bool(value: Any) -> Any:
    """Only true/false (and their spellings from --set and the environment) are booleans: a 0 or 1
    where true/false belongs is more likely a value put under the wrong key."""
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


Port = Annotated[int, BeforeValidator(_not_a_bool), Field(ge=0, le=65535)]
Bool = Annotated[bool, BeforeValidator(_bool)]
Cpus = Annotated[float, BeforeValidator(_not_a_bool), Field(gt=0, le=1024, allow_inf_nan=False)]
MIN_MEMORY = 6 * 1024 * 1024  # the engine refuses a smaller limit ("Minimum memory limit allowed is 6MB")
IMAGE_PATTERN = (
    r"^(?:[A-Za-z0-9][A-Za-z0-9.-]*(?::[0-9]{1,5})?/)?"  # registry host[:port]/
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"  # path
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@[a-z0-9]+:[a-f0-9]{32,128})?$"  # :tag @digest
)
IMAGE_HINT = "must be an image reference such as nats:alpine or registry.example:5000/nachos/gateway:1.2"
USER_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,31})?$"
Image = Annotated[str, Field(max_length=255, pattern=IMAGE_PATTERN)]


# A path or name written into a file: one line, no control characters (a newline would end the
# value in the rendered YAML's meaning, a NUL cannot be passed to any system call).
def _path_parts(value: str) -> str:
    if any(len(part.encode("utf-8", "surrogatepass")) > 255 for part in value.split("/")):
        raise ValueError("has a folder or file name longer than 255 bytes, more than file systems take")
    return value


PathText = Annotated[
    str, Field(min_length=1, max_length=4096, pattern=r"^[^\x00-\x1f\x7f]*$"), AfterValidator(_path_parts)
]
LineText = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f\x7f]*$")]


def _false_not_zero(value: Any) -> Any:
    """``Literal[False]`` also takes 0 (0 == False in Python); only the YAML word false turns off."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError("must be false (to turn it off) or a setting, not a number")
    return value


NAME_PATTERN = r"^[a-z][a-z0-9-]{0,53}$"  # room for the sidecar's "bus-" and network's "-link"
SIDECAR_PREFIX = "bus-"  # a component's sidecar is the service bus-<component>
# Services the plan renders besides the components: the bus's first node, its port forwarder and the
# one-shot that prepares volumes (the other nodes are bus-2..bus-5, sidecars bus-<component>); the
# plan names them, and tests/test_plan.py checks that these are its names.
BUS_SERVICES = ("bus", "bus-ports", "volume-init")
TAKEN_NAMES_HINT = (
    "the stack's own services are named bus, bus-2 to bus-5 (the bus's nodes), bus-ports (its port "
    "forwarder), bus-<component> (each component's sidecar, so a component named ports would make a "
    "second bus-ports) and volume-init"
)


def name_taken(name: str) -> bool:
    """Whether a component of this name, or its sidecar, would share a service name with the bus set:
    Compose keeps the last of two equal service keys without a word, so one of them would not run."""
    return name in BUS_SERVICES or name.startswith(SIDECAR_PREFIX) or SIDECAR_PREFIX + name in BUS_SERVICES


def _component_name(name: str) -> str:
    if not re.fullmatch(NAME_PATTERN, name):
        raise ValueError(
            "cannot name a component: use lowercase letters, digits and '-', starting with a letter, "
            "at most 54 characters"
        )
    if name_taken(name):
        raise ValueError(f"cannot name a component: {TAKEN_NAMES_HINT}. Rename the component, e.g. my-{name}")
    return name


ComponentName = Annotated[str, AfterValidator(_component_name)]
RESERVED_NETWORKS = ("nachos-internal", "egress", "host-access")
VOLUME_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
BUS_VOLUME = re.compile(r"bus-data(-[0-9]+)?")  # the bus nodes' named volumes (plan.node_volume)
# Host paths no component gets: the Docker socket is root on the host, the rest the kernel's.
FORBIDDEN_HOST_PATHS = ("/var/run/docker.sock", "/run/docker.sock", "/proc", "/sys", "/dev", "/boot")
PROJECT_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
# A Swarm placement constraint: `node.role == manager`, `node.labels.zone != edge`, ...
PLACEMENT_PATTERN = (
    r"^(node\.(id|hostname|role|platform\.os|platform\.arch)|(node|engine)\.labels\.[A-Za-z0-9_.-]+)"
    r" ?(==|!=) ?[A-Za-z0-9_.:/-]+$"
)
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
_ENV_NAME = re.compile(ENV_NAME_PATTERN)


class SourceInt(int):
    """A number read from YAML that remembers how it was written, so that an environment value
    `VERSION: 1.10` stays "1.10" (not "1.1") and `A: 1e400` stays "1e400" (not "inf")."""

    source: str

    def __new__(cls, value: int, source: str) -> SourceInt:
        number = super().__new__(cls, value)
        number.source = source
        return number

    def __getnewargs__(self) -> tuple[int, str]:  # type: ignore[override]
        return int(self), self.source


class SourceFloat(float):
    """See :class:`SourceInt`."""

    source: str

    def __new__(cls, value: float, source: str) -> SourceFloat:
        number = super().__new__(cls, value)
        number.source = source
        return number

    def __getnewargs__(self) -> tuple[float, str]:  # type: ignore[override]
        return float(self), self.source


def _env_value(value: object) -> str:
    """Environment values are strings in the end; numbers are spelled as YAML wrote them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, SourceInt | SourceFloat):
        return value.source
    if isinstance(value, int | float | str):
        return str(value)
    raise ValueError("must be a string, a number or true/false, not a list or mapping")


EnvValue = Annotated[str, BeforeValidator(_env_value)]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Resources(Model):
    """Limits Compose applies to one container (outside Swarm)."""

    memory: Annotated[Size, Field(ge=MIN_MEMORY)] | None = None
    cpus: Cpus | None = None
    pids: Annotated[int, BeforeValidator(_not_a_bool), Field(gt=0, le=4_194_304)] | None = None


class Healthcheck(Model):
    test: list[str] | str
    interval: Duration = "5s"
    timeout: Duration = "3s"
    retries: Annotated[int, BeforeValidator(_not_a_bool), Field(ge=1, le=1000)] = 3
    start_period: Duration | None = None


class Build(Model):
    """Build the image from a local Nachos checkout instead of using a registry image."""

    context: PathText
    dockerfile: PathText | None = None


class Images(Model):
    """Component images are named ``<prefix><image name>:<tag>``, e.g. ``nachos/gateway:latest``."""

    prefix: Annotated[str, Field(max_length=200)] = "nachos/"
    tag: str = "latest"

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not re.fullmatch(IMAGE_PATTERN, f"{value}gateway"):
            raise ValueError(
                "must make an image name when a component's name follows it: empty, or e.g. nachos/ "
                "or registry.example:5000/nachos/ (lowercase letters, digits, '.', '_', '-', '/')"
            )
        return value

    @field_validator("tag")
    @classmethod
    def _tag(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", value):
            raise ValueError("is not a valid image tag (letters, digits, '_', '.', '-'; at most 128)")
        return value


class Audit(Model):
    """The JetStream stream that keeps the platform's audit messages (``nachos.audit.>``)."""

    enabled: Bool = True
    stream: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")] = "AUDIT"
    storage: Literal["file", "memory"] = "file"
    max_age: Duration = "720h"  # 30 days
    max_bytes: Size = 1024**3
    duplicate_window: Duration = "2m"

    @field_validator("max_bytes")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value <= 0:
            raise ValueError("must be above 0, e.g. 1GB")
        return value


class Bus(Model):
    auth: Bool = True  # false: the open bus of old, for debugging (doctor and up warn)
    image: Image = "nats:alpine"
    max_payload: Size = 10 * 1024 * 1024
    max_pending: Size = 64 * 1024 * 1024
    store_dir: str = "/data"
    client_port: Port = 4222
    monitor_port: Port = 8222
    # The HTTP monitoring port lists every connection, user and subscription to whoever reaches it,
    # so the host reads monitoring over NATS as the system user and publishes it only when asked
    # (docs/security.md#monitoring); with auth off it is published, as everything else is open.
    publish_monitor: Bool = False
    bind_address: str = "127.0.0.1"
    healthcheck_interval: Duration = "1s"
    nodes: Annotated[int, BeforeValidator(_not_a_bool)] = 1  # 3 or 5: a clustered JetStream bus
    resources: Resources = Resources()
    audit: Audit = Audit()

    @field_validator("nodes")
    @classmethod
    def _nodes(cls, value: int) -> int:
        if value not in (1, 3, 5):
            raise ValueError(
                "must be 1 (one server), 3 or 5 (a JetStream cluster: an odd number keeps a quorum "
                "when a node is down)"
            )
        return value

    @field_validator("max_payload")
    @classmethod
    def _max_payload(cls, value: int) -> int:
        if value <= 0:
            raise ValueError("must be above 0; the ADR default is 10MB")
        if value > MAX_PAYLOAD_LIMIT:
            raise ValueError(
                f"{value} bytes is above nats-server's limit of 64MB; use 64MB or less (10MB is the "
                "platform default)"
            )
        return value

    @field_validator("store_dir")
    @classmethod
    def _store_dir(cls, value: str) -> str:
        if not value.startswith("/") or value == "/":
            raise ValueError("must be an absolute path inside the container other than /, e.g. /data")
        return value

    @field_validator("bind_address")
    @classmethod
    def _bind_address(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(
                "must be an IP address; 127.0.0.1 keeps the bus private to this host, "
                "0.0.0.0 exposes it on every interface"
            ) from None
        return value

    @model_validator(mode="after")
    def _payload_within_pending(self) -> Bus:
        if self.max_payload > self.max_pending:
            raise ValueError(
                f"max_payload ({self.max_payload} bytes) is above max_pending ({self.max_pending} "
                "bytes); lower bus.max_payload or raise bus.max_pending"
            )
        if self.client_port and self.client_port == self.monitor_port:
            raise ValueError("client_port and monitor_port must differ (or be 0 for any free port)")
        return self


SUBJECT_PATTERN = re.compile(r"^[A-Za-z0-9_$*>-]+(\.[A-Za-z0-9_$*>-]+)*$")


def _subjects(value: list[str]) -> list[str]:
    for subject in value:
        tokens = subject.split(".")
        if not SUBJECT_PATTERN.match(subject) or any(
            (">" in t and (t != ">" or i != len(tokens) - 1)) or ("*" in t and t != "*")
            for i, t in enumerate(tokens)
        ):
            raise ValueError(
                f"{subject!r} is not a NATS subject: dot-separated tokens of letters, digits, '_', '-' "
                "or '$', where a token may be '*' and the last may be '>'"
            )
    return value


Subjects = Annotated[list[str], AfterValidator(_subjects)]


class Permissions(Model):
    """Subjects a component may use on top of its role's (an extra has none but its ping).

    A grant that reaches NATS's own subjects (``$SYS``, the JetStream API ``$JS``, ``$KV``, ``$O``...,
    or a wildcard such as ``>`` that takes them in) is refused unless ``allow_system`` is true: it
    would let a component delete the audit stream or read the system account, undoing the boundary
    the sidecars keep. ``allow_system`` comes first so the lists' validator can read it."""

    allow_system: Bool = False  # grants may reach NATS's own subjects, on purpose (docs/security.md)
    publish: Subjects = []
    subscribe: Subjects = []
    respond: Subjects = []  # request subjects it answers
    request: Subjects = []  # subjects it sends requests on (it then also gets the replies)

    @field_validator("publish", "subscribe", "respond", "request")
    @classmethod
    def _not_reserved(cls, value: list[str], info: ValidationInfo) -> list[str]:
        if info.data.get("allow_system") is True:
            return value
        for subject in value:
            reached = subjects.reserved(subject)
            if reached:
                raise ValueError(
                    f"{subject!r} reaches NATS's own subjects: {'; '.join(reached)}. A component "
                    "granted them could change or read the bus itself, past the boundary its sidecar "
                    "keeps. Name only the subjects it needs (a wildcard's first token too, e.g. "
                    "nachos.myapp.> rather than > or *.>); to grant NATS's own subjects on purpose, set "
                    "allow_system: true in these permissions (components.NAME.permissions.allow_system, "
                    "see docs/security.md)"
                )
        return value


MAX_SIDECAR_CONNECTIONS = 1024
MAX_SIDECAR_SUBSCRIPTIONS = 100_000


class SidecarLimits(Model):
    """Limits of a component's bus sidecar, each unset key keeping its role's default (the table in
    docs/security.md#limits-of-a-sidecar). They fit the sidecar's memory, so a component that floods
    its sidecar is refused or cut off there and the rest of the bus does not pay for it."""

    max_payload: Size | None = None  # the largest message the component may publish
    max_pending: Size | None = None  # bytes waiting for the component before it is cut off as slow
    max_connections: (
        Annotated[int, BeforeValidator(_not_a_bool), Field(ge=1, le=MAX_SIDECAR_CONNECTIONS)] | None
    ) = None
    max_subscriptions: (
        Annotated[int, BeforeValidator(_not_a_bool), Field(ge=1, le=MAX_SIDECAR_SUBSCRIPTIONS)] | None
    ) = None
    memory: Annotated[Size, Field(ge=MIN_MEMORY)] | None = None
    cpus: Cpus | None = None

    @field_validator("max_payload", "max_pending")
    @classmethod
    def _positive(cls, value: int | None) -> int | None:
        if value is not None and value <= 0:
            raise ValueError("must be above 0, e.g. 1MB")
        return value


class Component(Model):
    """One container besides the bus; every key is optional and overrides the component's defaults."""

    enabled: Bool | None = None
    role: Literal["gateway", "llm-proxy", "channel", "tool", "extra"] | None = None
    image: Image | None = None
    build: Build | None = None
    command: list[str] | str | None = None
    environment: dict[str, EnvValue] = {}
    secrets: dict[str, str] = {}
    volumes: list[str] = []
    networks: list[str] = []
    egress: Bool | None = None
    user: Annotated[str, Field(pattern=USER_PATTERN)] | None = None
    resources: Resources = Resources()
    healthcheck: Annotated[Healthcheck | Literal[False] | None, BeforeValidator(_false_not_zero)] = None
    connection_name: Annotated[LineText | Literal[False] | None, BeforeValidator(_false_not_zero)] = None
    permissions: Permissions = Permissions()
    sidecar: SidecarLimits = SidecarLimits()  # its bus sidecar's limits (with bus.auth)
    read_only: Bool = True  # read-only root filesystem (with a tmpfs at /tmp); false for images that write
    # Swarm only (target: swarm): how many tasks run it, and where (`docker service create --constraint`).
    replicas: Annotated[int, BeforeValidator(_not_a_bool), Field(ge=1, le=100)] = 1
    placement: list[Annotated[str, Field(pattern=PLACEMENT_PATTERN, max_length=200)]] = []

    @field_validator("environment", "secrets")
    @classmethod
    def _env_names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if not _ENV_NAME.match(name):
                raise ValueError(
                    f"{name!r} is not a valid environment variable name (letters, digits and '_', "
                    "not starting with a digit)"
                )
        return value

    @field_validator("secrets")
    @classmethod
    def _secret_sources(cls, value: dict[str, str]) -> dict[str, str]:
        for name, source in value.items():
            if not _ENV_NAME.match(source):
                # Never echo it: what stands here instead of a name is often the secret itself.
                raise ValueError(
                    f"secret {name} must name the host environment variable it comes from, not a "
                    "value (what was given is not a variable name, and is not shown here since it may "
                    f"be the secret itself); write e.g. {name}: {name}, then export the value as that "
                    "variable or put it in the output folder's .env file"
                )
        return value

    @field_validator("volumes")
    @classmethod
    def _volumes(cls, value: list[str]) -> list[str]:
        for item in value:
            parts = item.split(":")
            if len(parts) not in (2, 3) or not all(parts[:2]) or not parts[1].startswith("/"):
                raise ValueError(
                    f"{item!r} is not SOURCE:/container/path[:ro]; SOURCE is a named volume or a "
                    "path relative to the deploy file's folder such as ./workspace"
                )
            if len(parts) == 3 and parts[2] not in ("ro", "rw"):
                raise ValueError(f"{item!r} ends in {parts[2]!r}; the mode must be ro or rw")
            source = parts[0]
            if source.startswith("/"):
                clean = posixpath.normpath(source)
                if clean == "/" or any(clean == p or clean.startswith(p + "/") for p in FORBIDDEN_HOST_PATHS):
                    raise ValueError(
                        f"{item!r} would hand the container {clean} of the host (the whole host, its "
                        "Docker socket or its kernel interfaces); mount a folder of your own instead"
                    )
            elif BUS_VOLUME.fullmatch(source):
                raise ValueError(
                    f"{item!r}: {source} holds the bus's JetStream store (bus-data, and bus-data-N for "
                    "the nodes of a cluster); a component mounting it could read and rewrite every "
                    "stored message, the audit stream too. Give the component a volume of its own"
                )
            elif not source.startswith(".") and not VOLUME_NAME.fullmatch(source):
                raise ValueError(
                    f"{item!r}: {source!r} is neither a named volume (letters, digits, '_', '.', '-') "
                    "nor a path (./relative to the deploy file, or /absolute)"
                )
        return value

    @field_validator("networks")
    @classmethod
    def _network_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not re.fullmatch(NAME_PATTERN, name):
                raise ValueError(f"{name!r} is not a valid network name (lowercase letters, digits, '-')")
            if name in RESERVED_NETWORKS or name.endswith("-link"):
                raise ValueError(
                    f"network {name!r} is nachos-deploy's own (egress, host-access, nachos-internal and "
                    "*-link carry the security layout); use egress: true for internet access"
                )
        return value

    @model_validator(mode="after")
    def _image_or_build(self) -> Component:
        if self.image is not None and self.build is not None:
            raise ValueError("give either image or build, not both")
        return self


# The user ids nachos-deploy runs its containers under. Without user namespaces a container's uid is
# the host's: a host account with the same uid can read the processes' environment (the API keys)
# through /proc/<pid>/environ, write through /proc/<pid>/root and ptrace them. So the defaults come
# from 60706-61183, a range no Linux distribution or systemd hands out (useradd and adduser stop at
# 60000 and 59999, systemd-homed takes 60001-60513, nspawn's bound host users 60514-60577, greeters
# 60578-60705, DynamicUser= 61184-65519, nobody 65534) and Debian allocates nothing in; see
# docs/security.md#user-ids for the sources. Values stay below 65534: a user-namespace remap (Docker's
# userns-remap, rootless engines) maps 65536 ids by default, and ids from 100000 up are the host's
# subordinate ranges, which rootless containers of other users run under.
RUN_AS_MAX = 65533
DEFAULT_RUN_AS = {"components": "61000:61000", "sidecars": "61001:61001", "forwarder": "61002:61002"}


def _run_as(value: Any) -> Any:
    """``61000`` or ``"61000"`` means ``61000:61000``: one number for uid and gid alike."""
    if isinstance(value, bool):
        raise ValueError("must be numbers uid:gid, e.g. 61000:61000, not true/false")
    if isinstance(value, int):
        value = str(value)
    if not isinstance(value, str):
        raise ValueError("must be numbers uid:gid, e.g. 61000:61000")
    match = re.fullmatch(r"(\d+)(?::(\d+))?", value.strip())
    ids = [int(part) for part in match.groups() if part is not None] if match else []
    if not ids or not all(1 <= number <= RUN_AS_MAX for number in ids):
        raise ValueError(
            f"must be numbers uid:gid from 1 to {RUN_AS_MAX}, e.g. 61000:61000 (not root, not nobody "
            "65534, and below 65536 so a user-namespace remap still maps it); pick ids no host account "
            "or group uses (`getent passwd UID` prints nothing)"
        )
    uid = ids[0]
    return f"{uid}:{ids[1] if len(ids) > 1 else uid}"


RunAsIds = Annotated[str, BeforeValidator(_run_as)]


class RunAs(Model):
    """uid:gid of the containers nachos-deploy runs (a component's own ``user`` still wins)."""

    components: RunAsIds = DEFAULT_RUN_AS["components"]  # platform components and their volumes
    sidecars: RunAsIds = DEFAULT_RUN_AS["sidecars"]  # every bus-<component> leaf-node server
    forwarder: RunAsIds = DEFAULT_RUN_AS["forwarder"]  # bus-ports, the only container on a bridge

    @model_validator(mode="after")
    def _distinct(self) -> RunAs:
        seen: dict[str, str] = {}
        for key in ("components", "sidecars", "forwarder"):
            uid = str(getattr(self, key)).partition(":")[0]
            if uid in seen:
                raise ValueError(
                    f"run_as.{seen[uid]} and run_as.{key} share uid {uid}; give each its own uid, so "
                    "that a process of one cannot read or trace the other's from the host"
                )
            seen[uid] = key
        return self


LOG_DRIVERS = ("local", "json-file")
MIN_LOG_SIZE = 1024 * 1024
MAX_LOG_SIZE = 1024**3


def _log_driver(value: Any) -> Any:
    if value not in LOG_DRIVERS:
        raise ValueError(
            f"{_short_text(value)!r} is not a log driver nachos-deploy bounds; use local (the default: "
            "compressed, rotated files) or json-file (plain JSON lines, rotated). Both keep at most "
            "max_file files of max_size each on this machine, work on Compose and Swarm, and keep "
            "`nachos-deploy logs` working; to ship logs elsewhere, collect them from the engine"
        )
    return value


def _short_text(value: object) -> str:
    text = str(value)
    return text if len(text) <= 40 else f"{text[:40]}..."


class Logging(Model):
    """Every container's log on the engine's disk, rotated: a component that logs without end (a
    sidecar writes a line per refused publish) fills at most ``max_size`` x ``max_file`` per
    container, never the host's disk."""

    driver: Annotated[str, BeforeValidator(_log_driver)] = "local"
    max_size: Annotated[Size, Field(ge=MIN_LOG_SIZE, le=MAX_LOG_SIZE)] = 10 * 1024 * 1024
    max_file: Annotated[int, BeforeValidator(_not_a_bool), Field(ge=1, le=100)] = 3


class DeployConfig(Model):
    project: Annotated[str, Field(pattern=PROJECT_PATTERN)] = "nachos"
    target: Literal["compose", "swarm"] = "compose"  # the engine: a Compose project or a Swarm stack
    output: PathText = ".nachos"
    platform_config: PathText = "nachos.toml"
    compose_override: PathText = "docker-compose.override.yml"  # beside the deploy file, when present
    images: Images = Images()
    bus: Bus = Bus()
    components: dict[ComponentName, Component] = {}
    logging: Logging = Logging()  # every container's log, bounded (docs/configuration.md#logs)
    run_as: RunAs = RunAs()  # uid:gid of the containers (docs/security.md#user-ids)

    @model_validator(mode="after")
    def _swarm_only(self) -> DeployConfig:
        if self.target == "compose":
            for name, component in self.components.items():
                if component.replicas != 1:
                    raise ValueError(
                        f"components.{name}.replicas is {component.replicas}, but a Compose project runs "
                        "one container per service; set target: swarm to run replicas, or remove the key"
                    )
        return self
