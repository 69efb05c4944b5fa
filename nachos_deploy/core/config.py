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
from nachos_deploy.core.shown import shortened
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
BUS_SERVICES = ("bus", "bus-ports", "volume-init", "state", "ingress")
TAKEN_NAMES_HINT = (
    "the stack's own services are named bus, bus-2 to bus-5 (the bus's nodes), bus-ports (its port "
    "forwarder), bus-<component> (each component's sidecar, so a component named ports would make a "
    "second bus-ports), volume-init, state (the gateway's Redis) and ingress (HTTPS in front of the "
    "webhook channels)"
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
RESERVED_NETWORKS = ("nachos-internal", "egress", "host-access", "ingress-public")
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


# An interval left out (None) is nachos-deploy's to choose: these, stretched for a large stack so that
# its checks stay within a budget of execs a second (core/check_density.py); one written in the deploy
# file, --set or the environment is kept as written. None, not the value, so that a configuration
# dumped and read back (io/deployed.py's record) still knows which intervals were chosen.
CHECK_INTERVAL = "5s"  # a component's own healthcheck
BUS_CHECK_INTERVAL = "1s"  # the bus's nodes, its forwarder and the sidecars
HEALTHCHECK_BUDGET = 12.0  # the whole stack's check runs a second (docker execs); the demo runs 9.5


class Healthchecks(Model):
    """How often the stack's Docker healthchecks may run, all together: ``budget`` runs a second,
    beyond which the intervals nachos-deploy chose are stretched (core/check_density.py). Lower it
    when several stacks share one engine: the budget is each stack's, and the engine pays for all."""

    budget: Annotated[float, BeforeValidator(_not_a_bool), Field(gt=0, le=1000, allow_inf_nan=False)] = (
        HEALTHCHECK_BUDGET
    )


class Healthcheck(Model):
    test: list[str] | str
    interval: Duration | None = None  # None: CHECK_INTERVAL, stretched for a large stack
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


def _tls_mode(value: Any) -> Any:
    """YAML reads a bare ``on``/``off`` as true/false: they mean the modes of those names here."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return value


_DNS_NAME = re.compile(r"^(?=.{1,253}$)(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?$")


def _tls_names(value: list[str]) -> list[str]:
    for name in value:
        try:
            ipaddress.ip_address(name)
        except ValueError:
            if not _DNS_NAME.match(name):
                raise ValueError(
                    f"{name!r} is neither a host name (letters, digits and '-' in dot-separated labels) "
                    "nor an IP address"
                ) from None
    return value


class BusTls(Model):
    """TLS on the hub's client port (docs/security.md#tls-on-the-bus). ``auto``: on whenever the port
    leaves the machine (bus.bind_address other than loopback, or any Swarm, which publishes on every
    interface); ``on``: also on loopback; ``off``: never (the operator password then crosses the
    network in clear: up warns). Without files, nachos-deploy's own CA (in credentials/) signs the
    server's certificate; with ``cert_file`` and ``key_file`` (and ``ca_file``, what clients trust),
    the user's are served instead."""

    mode: Annotated[Literal["auto", "on", "off"], BeforeValidator(_tls_mode)] = "auto"
    cert_file: str | None = None
    key_file: str | None = None
    ca_file: str | None = None
    # Names and addresses clients reach the bus by, besides bind_address, localhost, 127.0.0.1 and
    # this host's name (the generated certificate covers them all).
    names: Annotated[list[str], AfterValidator(_tls_names)] = []

    @model_validator(mode="after")
    def _files_together(self) -> BusTls:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError(
                "cert_file and key_file go together: give both (the certificate and its key) or "
                "neither (nachos-deploy's own CA then signs one)"
            )
        if self.ca_file is not None and self.cert_file is None:
            raise ValueError(
                "ca_file is what clients trust for your cert_file: give cert_file and key_file too"
            )
        return self


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
    healthcheck_interval: Duration | None = None  # None: BUS_CHECK_INTERVAL, stretched for a large stack
    nodes: Annotated[int, BeforeValidator(_not_a_bool)] = 1  # 3 or 5: a clustered JetStream bus
    resources: Resources = Resources()
    audit: Audit = Audit()
    tls: BusTls = BusTls()

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
            if name in RESERVED_NETWORKS or name.endswith(("-link", "-ingress")):
                raise ValueError(
                    f"network {name!r} is nachos-deploy's own (egress, host-access, nachos-internal, "
                    "ingress-public, *-link and *-ingress carry the security layout); use egress: true "
                    "for internet access"
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
DEFAULT_RUN_AS = {
    "components": "61000:61000",
    "sidecars": "61001:61001",
    "forwarder": "61002:61002",
    "state": "61005:61005",
    "ingress": "61003:61003",
}


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
    state: RunAsIds = DEFAULT_RUN_AS["state"]  # the state store (Redis) and its volume
    ingress: RunAsIds = DEFAULT_RUN_AS["ingress"]  # the HTTPS ingress (Caddy) and its certificates

    @model_validator(mode="after")
    def _distinct(self) -> RunAs:
        seen: dict[str, str] = {}
        for key in ("components", "sidecars", "forwarder", "state", "ingress"):
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
            f"{shortened(value)!r} is not a log driver nachos-deploy bounds; use local (the default: "
            "compressed, rotated files) or json-file (plain JSON lines, rotated). Both keep at most "
            "max_file files of max_size each on this machine, work on Compose and Swarm, and keep "
            "`nachos-deploy logs` working; to ship logs elsewhere, collect them from the engine"
        )
    return value


class Logging(Model):
    """Every container's log on the engine's disk, rotated: a component that logs without end (a
    sidecar writes a line per refused publish) fills at most ``max_size`` x ``max_file`` per
    container, never the host's disk."""

    driver: Annotated[str, BeforeValidator(_log_driver)] = "local"
    max_size: Annotated[Size, Field(ge=MIN_LOG_SIZE, le=MAX_LOG_SIZE)] = 10 * 1024 * 1024
    max_file: Annotated[int, BeforeValidator(_not_a_bool), Field(ge=1, le=100)] = 3


STATE_MIN_MAXMEMORY = 1024 * 1024  # less than 1MB holds no useful number of sessions


class State(Model):
    """The state store: Redis, for the gateway's rate limits and sessions (docs/state-store.md).
    ``enabled`` unset means "when the gateway runs"; false keeps the gateway's limits per process and
    its sessions in memory (lost at each restart), which ``doctor`` says."""

    enabled: Bool | None = None
    image: Image = "redis:7-alpine"
    # Redis refuses writes past this (maxmemory-policy noeviction) rather than drop a session.
    maxmemory: Annotated[Size, Field(ge=STATE_MIN_MAXMEMORY, le=1024**4)] = 64 * 1024 * 1024
    resources: Resources = Resources()
    # Swarm only: where its task runs (its volume lives on that node), as components.<name>.placement.
    placement: list[Annotated[str, Field(pattern=PLACEMENT_PATTERN, max_length=200)]] = []

    @model_validator(mode="after")
    def _room_for_maxmemory(self) -> State:
        memory = self.resources.memory
        if memory is not None and memory < self.maxmemory + 16 * 1024 * 1024:
            raise ValueError(
                f"resources.memory ({memory} bytes) leaves no room above maxmemory ({self.maxmemory} "
                "bytes): Redis needs about 16MB more than its data, or the kernel kills it; raise "
                "state.resources.memory or lower state.maxmemory"
            )
        return self


NETWORK_POOL = "172.16.0.0/16"
ENGINE_POOLS = "docker"  # networks.pool: leave the addresses to the engine's own pools (as before issue 20)
SHARED_ADDRESS_SPACE = ipaddress.IPv4Network("100.64.0.0/10")


def _network_pool(value: Any) -> Any:
    """An IPv4 range in CIDR form that no public address is in, or ``docker``: checked here so that a
    typo is a configuration error naming the key, not a refusal from the engine half way through up."""
    if value == ENGINE_POOLS:
        return value
    if not isinstance(value, str):
        raise ValueError(f"must be an IPv4 range such as {NETWORK_POOL}, or {ENGINE_POOLS!r}")
    try:
        pool = ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        raise ValueError(
            f"{shortened(value)!r} is not an IPv4 range in CIDR form (e.g. {NETWORK_POOL}); "
            f"{ENGINE_POOLS!r} leaves the addresses to the engine's own pools"
        ) from None
    if not isinstance(pool, ipaddress.IPv4Network):
        raise ValueError(
            f"{value} is an IPv6 range: the stack's networks take IPv4 ranges (e.g. {NETWORK_POOL})"
        )
    if str(pool) != value.strip():
        raise ValueError(f"{value} has bits set past its prefix length; the range it is in is {pool}")
    if pool.prefixlen > MAX_POOL_PREFIX:
        raise ValueError(f"{value} is smaller than a /{MAX_POOL_PREFIX}, too small for any stack's networks")
    special = pool.is_loopback or pool.is_link_local or pool.is_multicast or pool.is_reserved
    if special or pool.is_unspecified or not (pool.is_private or pool.subnet_of(SHARED_ADDRESS_SPACE)):
        raise ValueError(
            f"{value} is not a private range: containers would shadow the hosts that really have those "
            "addresses; take one within 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16 or 100.64.0.0/10"
        )
    return value.strip()


MAX_POOL_PREFIX = 28  # one /28: whether a stack fits is said when it is planned (core/subnets.py)


class Networks(Model):
    """Where the stack's networks take their addresses (docs/networks.md). Each gets a small subnet
    of ``pool``, in a block chosen from the project's name, instead of one of the engine's default
    ranges (a /16 or a /20 each, about 31 in all)."""

    pool: Annotated[str, BeforeValidator(_network_pool)] = NETWORK_POOL


_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")
_EMAIL = re.compile(r"^[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")
_HTTPS_URL = re.compile(r"^https://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/%-]*)?$")


def _enabled_setting(value: Any) -> Any:
    """``auto`` or a boolean (spelled true/false anywhere, as every switch of the deploy file)."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        return _bool(value)
    except ValueError:
        raise ValueError(
            "must be auto (on when an enabled channel receives webhooks: whatsapp, slack with mode "
            '"http", webchat), true or false'
        ) from None


def _published_port(value: Any) -> Any:
    value = _not_a_bool(value)
    if isinstance(value, int) and not 1 <= value <= 65535:
        raise ValueError("must be a port number from 1 to 65535: webhook providers are given this port")
    return value


class Ingress(Model):
    """The HTTPS ingress (Caddy) in front of the channels that receive webhooks (docs/ingress.md)."""

    enabled: Annotated[Literal["auto"] | bool, BeforeValidator(_enabled_setting)] = "auto"
    domain: str | None = None  # the public name providers call; unset: localhost (internal mode)
    # acme (the default with a domain), internal (Caddy's own CA, the default without), files.
    tls: Literal["acme", "internal", "files"] | None = None
    acme_ca: str | None = None  # ACME directory URL; unset: Let's Encrypt
    acme_ca_root: PathText | None = None  # PEM the ACME server's HTTPS chains to (a private ACME CA)
    email: str | None = None  # the ACME account's contact
    cert_file: PathText | None = None  # files mode: certificate chain (PEM)
    key_file: PathText | None = None  # files mode: its private key (PEM)
    host_ip: str | None = None  # unset: 0.0.0.0 with a domain, 127.0.0.1 without
    http_port: Annotated[int, BeforeValidator(_published_port)] = 80
    https_port: Annotated[int, BeforeValidator(_published_port)] = 443
    image: Image = "caddy:2-alpine"
    resources: Resources = Resources()
    # Swarm only: where its task runs (its certificates' volume lives on that node).
    placement: list[Annotated[str, Field(pattern=PLACEMENT_PATTERN, max_length=200)]] = []

    @field_validator("domain")
    @classmethod
    def _domain(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not _DOMAIN.match(value):
            raise ValueError(
                "must be a fully qualified domain name in lowercase, e.g. hooks.example.com (letters, "
                "digits and '-' in dot-separated labels, no scheme, port, path, wildcard or IP "
                "address): certificates are issued for it and providers call https://DOMAIN/..."
            )
        return value

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        if value is not None and not _EMAIL.match(value):
            raise ValueError(
                "must be an email address (name@example.com): the ACME CA writes to it about expiring "
                "certificates; or leave it out"
            )
        return value

    @field_validator("acme_ca")
    @classmethod
    def _acme_ca(cls, value: str | None) -> str | None:
        if value is not None and not _HTTPS_URL.match(value):
            raise ValueError(
                "must be an ACME directory URL starting with https://, e.g. "
                "https://acme-staging-v02.api.letsencrypt.org/directory; or leave it out for Let's Encrypt"
            )
        return value

    @field_validator("host_ip")
    @classmethod
    def _host_ip(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ipaddress.ip_address(value)
            except ValueError:
                raise ValueError(
                    "must be an IP address of this host: 0.0.0.0 publishes the ingress on every "
                    "interface, 127.0.0.1 on loopback alone"
                ) from None
        return value

    @model_validator(mode="after")
    def _mode_and_files(self) -> Ingress:
        mode = self.tls or ("acme" if self.domain else "internal")
        if self.http_port == self.https_port:
            raise ValueError("http_port and https_port must differ")
        if mode == "acme" and not self.domain:
            raise ValueError(
                "tls is acme but domain is not set: an ACME CA issues certificates for a domain name "
                "that resolves to this host; set ingress.domain, or use tls: internal (Caddy's own CA)"
            )
        if mode == "files" and not (self.cert_file and self.key_file):
            raise ValueError(
                "tls is files but cert_file and key_file are not both set: give the certificate chain "
                "and its private key (PEM files, paths relative to the deploy file), or use tls: acme "
                "or internal"
            )
        if mode != "files" and (self.cert_file or self.key_file):
            raise ValueError(
                f"cert_file and key_file are used by tls: files only, and tls is {mode}; set tls: files "
                "to serve them, or remove them"
            )
        if mode != "acme" and (self.acme_ca or self.acme_ca_root or self.email):
            raise ValueError(
                f"acme_ca, acme_ca_root and email are used by tls: acme only, and tls is {mode}; remove "
                "them, or set tls: acme with a domain"
            )
        return self


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
    state: State = State()  # the gateway's Redis (docs/state-store.md)
    networks: Networks = Networks()  # the networks' addresses (docs/networks.md)
    ingress: Ingress = Ingress()  # HTTPS in front of the webhook channels (docs/ingress.md)
    healthchecks: Healthchecks = Healthchecks()  # how often they run, all together (docs/components.md)

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
