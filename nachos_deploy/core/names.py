"""The names a stack is built from: services, networks, volumes, files, ports, users, and the
variables that carry their passwords. Pure constants, shared by the plan, the renderer and the
lifecycle, so that each is spelled once."""

from __future__ import annotations

from nachos_deploy.core import catalog

BUS = "bus"
VOLUME_INIT = "volume-init"  # one-shot service that makes component volumes writable by their user
VOLUME_INIT_ROOT = "/volumes"
INTERNAL_NETWORK = "nachos-internal"
EGRESS_NETWORK = "egress"
HOST_NETWORK = "host-access"
# The bus's ports are published by a forwarder, so the bus itself joins only internal networks: a
# container on a plain bridge gets a way off the machine (route and DNS forwarding) that the one
# container carrying every message must not have.
PORTS = "bus-ports"
BUS_LINK_NETWORK = "bus-link"  # internal: only the bus and its port forwarder
# A clustered bus (bus.nodes 3 or 5): node 1 keeps the service name `bus`, the others are bus-2...;
# every node answers to `bus` on nachos-internal (components and sidecars keep nats://bus:4222 and
# reach any node) and to its own name on bus-link, where the routes and the forwarder use it.
CLUSTER_NAME = "nachos"
ROUTE_PORT = 6222
ROUTE_USER = "nachos-route"
ROUTE_PASSWORD = "NACHOS_ROUTE_PASSWORD"
SERVER_NAME = "NACHOS_SERVER_NAME"  # a node's name, in its environment for the shared nats.conf
CLIENT_PORT = 4222
MONITOR_PORT = 8222
NATS_CONFIG_FILE = "nats.conf"
NATS_CONFIG_TARGET = "/etc/nats/nats.conf"
COMPOSE_FILE = "docker-compose.yml"
STACK_FILE = "docker-stack.yml"  # target: swarm, for `docker stack deploy`
BUS_STACK_FILE = "docker-stack.bus.yml"  # the bus alone: deployed and proven before the rest
# The bus, the components' sidecars and the state store: deployed once the bus is proven, before the
# components (a component whose sidecar does not listen yet exits 1 at start: Swarm would count a
# failed task; a gateway started beside its store waits out a connect timeout).
SIDECARS_STACK_FILE = "docker-stack.sidecars.yml"
INIT_NETWORK = "volume-init-link"  # Swarm has no network_mode none: the one-shot gets a network of its own
PLATFORM_CONFIG_FILE = "nachos.toml"
BUS_VOLUME = "bus-data"
GATEWAY_VOLUME = "gateway-data"
# The state store (Redis, issue 20): the gateway's rate limits and sessions. Only the gateway reaches
# it, over a network of the two alone; the default user is off, and the gateway logs in as its own
# ACL user, whose password lives in credentials/ (io/state_credentials.py) and reaches Redis only as
# its SHA-256 in an ACL file. The healthcheck logs in as a user that may only PING and list the
# clients (for `status`), whose password is the one secret inside the state's container.
STATE = "state"
STATE_NETWORK = "state-link"  # internal; a component's network ends in -link, but none is named state
STATE_VOLUME = "state-data"
STATE_PORT = 6379
STATE_DATA_DIR = "/data"
STATE_CREDENTIALS_MOUNT = "/etc/redis/credentials"
STATE_ACL_FILE = "users.acl"
STATE_HEALTH_FILE = "health"
STATE_GATEWAY_USER = "gateway"
STATE_HEALTH_USER = "nachos-health"
STATE_BACKUP_USER = "nachos-backup"  # may only SYNC (redis-cli --rdb) and count keys: `backup`
STATE_URL_VARIABLES = ("REDIS_URL", "RUNTIME_REDIS_URL")  # the gateway's rate limiter, its sessions
_STATE_CLI = (
    f'REDISCLI_AUTH="$(cat {STATE_CREDENTIALS_MOUNT}/{STATE_HEALTH_FILE})" '
    f"redis-cli --no-auth-warning --user {STATE_HEALTH_USER}"
)
STATE_HEALTH_TEST = f"{_STATE_CLI} ping | grep -qx PONG"  # an authenticated PING
STATE_CLIENTS_COMMAND = ("sh", "-c", f"{_STATE_CLI} client list")  # for `status`: who is connected
BUS_URL = f"nats://{BUS}:{CLIENT_PORT}"
LEAF_PORT = 7422
CREDENTIALS_DIR = "credentials"
SELECTION_FILE = ".selection"  # what the last `up --only` started, for `status` (not committed)
LAST_UP_FILE = ".last-up"  # what the last full `up` left running, for the next one (not committed)
DEPLOYED_FILE = ".deployed"  # what the last `up` deployed, for the reading commands (not committed)
BACKUP_MANIFEST = "manifest.json"  # the first member of a `backup` archive: what it holds, checksums
# The one-shot containers of `backup` and `restore` that read and write the gateway's SQLite database
# and the state folders run this image, for its python3 with sqlite3 (the platform's own images are
# Node). The state store's snapshot is restored with the state store's own image.
BACKUP_TOOL_IMAGE = "nachos-deploy/probe:latest"
RELEASES_FILE = ".releases"  # the last two successful deployments, for rollback (not committed)
OPERATOR_USER = "nachos-deploy"
OPERATOR_PASSWORD = "NACHOS_OPERATOR_PASSWORD"
# The host reads the hub's monitoring as this user of the system account, over the client port
# ($SYS.REQ.SERVER.<id>.CONNZ ...), so the HTTP monitoring port need not be published (issue 19,
# item 6): its password is in credentials/ like the others and `credentials rotate` renews it.
SYSTEM_ACCOUNT = "SYS"
SYSTEM_USER = "nachos-system"
SYSTEM_PASSWORD = "NACHOS_SYSTEM_PASSWORD"
# What that user may ask, of any server: reads only. A system-account user may otherwise also kick
# connections, reload the servers and put them into lame-duck mode ($SYS.REQ.SERVER.<id>.KICK ...).
SYSTEM_READS = ("CONNZ", "LEAFZ", "JSZ", "VARZ", "HEALTHZ", "ROUTEZ")
LEAF_URL = "NACHOS_LEAF_URL"
# On Compose the hub and each sidecar read their passwords from a file their config `include`s (its
# own folder credentials/<service>/, mounted read-only here), so `credentials rotate` can change them
# with a reload (SIGHUP), which re-reads files but never the environment. On Swarm the same file is a
# Swarm secret mounted at the same place: fixed for a task's life, so rotation replaces the tasks there.
# Never environment variables: whoever reads a process's environ or `docker inspect`s it reads those.
CREDENTIALS_MOUNT = "/etc/nats/credentials"
CREDENTIALS_INCLUDE = "credentials/secrets.conf"  # relative to the config file, as nats-server reads it
# TLS on the hub's client port (bus.tls): the server's certificate and key in credentials/bus-tls/
# (mounted read-only like the passwords' folder on Compose, a Swarm secret each on Swarm), signed by
# nachos-deploy's own CA, whose certificate (credentials/bus-ca.pem) the host's clients trust and
# whose key (credentials/bus-ca-key.pem, 0600) never leaves the host. The forwarder relays the TLS
# bytes as they are: it holds no key.
TLS_OWNER = "bus-tls"
TLS_MOUNT = "/etc/nats/tls"
TLS_CERT = "server.pem"
TLS_KEY = "server-key.pem"
TLS_CA = "bus-ca.pem"
TLS_CA_KEY = "bus-ca-key.pem"
# In credentials/ (not mounted): the hash of the server's files the running bus last read (io/bus_tls.py)
TLS_LOADED = "bus-tls.loaded"
TLS_HANDSHAKE_TIMEOUT = 5  # seconds; nats-server's default (2s) fails handshakes on a loaded host
SIDECAR_HEALTH_TEST = (
    "wget -qO- http://127.0.0.1:8222/leafz | grep -q '\"leafnodes\": 1'"  # joined to the hub
)
# /healthz answers ok with JetStream off, so the probe also asks /jsz for a store_dir.
BUS_HEALTH_TEST = (
    "wget -q --spider http://127.0.0.1:8222/healthz && "
    "wget -qO- http://127.0.0.1:8222/jsz | grep -q '\"store_dir\"'"
)
GATEWAY_HEALTH_URL = f"http://127.0.0.1:{catalog.GATEWAY_HEALTH_PORT}/health"
GATEWAY_HEALTH_TEST = (  # on Swarm; on Compose the gateway's check also asks the bus (BUS_CHECK)
    "CMD",
    "node",
    "-e",
    f"fetch('{GATEWAY_HEALTH_URL}').then(r => process.exit(r.ok ? 0 : 1), () => process.exit(1))",
)
