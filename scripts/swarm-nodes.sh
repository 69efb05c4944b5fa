#!/usr/bin/env bash
# swarm-nodes.sh - a multi-node Docker Swarm on this one machine, offline: engine-in-container nodes.
#
# Usage: scripts/swarm-nodes.sh [options] build          (as root, with a running engine:
#        scripts/swarm-nodes.sh [options] up N            see scripts/install-engine.sh)
#        scripts/swarm-nodes.sh [options] env
#        scripts/swarm-nodes.sh [options] down
#   build   build the node image nachos-deploy/swarm-node:latest (reused when current)
#   up N    build, then start N node containers (all capabilities but CAP_SYS_RESOURCE, unconfined) <prefix>-1 .. <prefix>-N on the bridge
#           network <prefix>-net, each running its own dockerd (overlay2 on its own volume
#           <prefix>-K-data; DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1), copy the images into every
#           node's engine (docker save | docker load, skipped when the node has the same image id),
#           make node 1 a swarm manager (`docker swarm init --advertise-addr <its bridge IP>`) and
#           join the others as workers (or managers: --managers). Whatever is already there is kept:
#           a second `up` with nothing to do takes about a second.
#   env     print DOCKER_HOST (node 1's engine, for the host's docker CLI and nachos-deploy),
#           NODE1_IP, CLIENT_PORT and MONITOR_PORT as KEY=value lines (for `eval` or a dotenv file)
#   down    remove the node containers, their volumes, the network and the socket folder
#
# Node 1's engine listens on unix://<socket-root>/<prefix>-1/docker.sock as well (a host folder
# bind-mounted into it), so `DOCKER_HOST=unix://... nachos-deploy up` deploys to the multi-node
# swarm. Node 1 publishes 127.0.0.1:CLIENT_PORT and 127.0.0.1:MONITOR_PORT to the same ports inside
# it, where a stack's bus-ports (pinned to managers, mode: host) publishes the bus when the deploy
# file sets bus.client_port/monitor_port to them. Every node is also reachable from the host at its
# bridge IP (the engine-picked ports of a clustered bus's other nodes are reachable only that way:
# set bus.bind_address to NODE1_IP).
#
# Options:
#   --prefix NAME       names of containers, volumes, network, socket folder (default: mn-node)
#   --managers M        the first M nodes are managers (default: 1; use an odd number). nachos-deploy
#                       reads the bus's ports on node 1: with more managers, bus-ports may land elsewhere
#   --image IMAGE       an image to copy into every node (repeatable; default: nats:alpine and
#                       nachos-deploy/probe:latest)
#   --client-port P     host port (127.0.0.1) published to P in node 1 (default: 24222)
#   --monitor-port P    the same for monitoring (default: 28222)
#   --storage-driver D  the nodes' storage driver (default: overlay2; vfs works everywhere, slowly)
#   --force             rebuild the node image
#
# The node image is built like scripts/build-images.sh builds its stand-ins: Debian packages
# (docker.io, containerd, runc, iptables, tini and the libraries they load) by apt-get download +
# dpkg -x into a root filesystem with a static busybox, then docker import. Only Debian's archive is
# contacted, and only when the image must be built. No registry is ever used.
#
# Environment: SOCKET_ROOT (default: /run), NODE_WAIT (seconds for a node's engine, default: 90)
set -euo pipefail

NODE_IMAGE=nachos-deploy/swarm-node:latest
NS=org.nachos-deploy
NODE_RECIPE=swarm-node-3  # bump when the way the image is built changes
IMG_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
SOCKET_ROOT=${SOCKET_ROOT:-/run}
NODE_WAIT=${NODE_WAIT:-90}

# The engine, its runtime and firewall tool, and every library their binaries load (checked by the
# smoke test). Not their maintainer-script dependencies (adduser, init-system-helpers, lsb-base):
# nothing is configured by dpkg here.
NODE_DEBS=(docker.io containerd runc iptables tini netbase
    libc6 libsystemd0 libdevmapper1.02.1 libcap2 libgcrypt20 liblzma5 libzstd1 liblz4-1 libselinux1
    libudev1 libgpg-error0 libpcre2-8-0 libseccomp2
    libip4tc2 libip6tc2 libxtables12 libmnl0 libnetfilter-conntrack3 libnfnetlink0 libnftnl11)

# What --privileged would give, less CAP_SYS_RESOURCE: where the engine itself lacks a capability
# (here CAP_SYS_RESOURCE is not in its bounding set), --privileged fails with "runc create failed:
# unable to start container process: unable to apply caps: operation not permitted". The node's
# init makes /sys and its cgroup folders writable (mounted read-only without --privileged).
NODE_SECURITY=(--cap-add ALL --cap-drop SYS_RESOURCE --security-opt seccomp=unconfined
    --security-opt apparmor=unconfined --security-opt systempaths=unconfined
    --device-cgroup-rule 'a *:* rwm')

PREFIX=mn-node
MANAGERS=1
IMAGES=()
CLIENT_PORT=24222
MONITOR_PORT=28222
STORAGE=overlay2
FORCE=0
COMMAND=""
COUNT=""

log() { printf '==> %s\n' "$*" >&2; }
die() { printf '==> ERROR: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1fs", b - a }'; }

while [ $# -gt 0 ]; do
    case "$1" in
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        --prefix) PREFIX=${2:?--prefix needs a value}; shift ;;
        --managers) MANAGERS=${2:?--managers needs a value}; shift ;;
        --image) IMAGES+=("${2:?--image needs a value}"); shift ;;
        --client-port) CLIENT_PORT=${2:?--client-port needs a value}; shift ;;
        --monitor-port) MONITOR_PORT=${2:?--monitor-port needs a value}; shift ;;
        --storage-driver) STORAGE=${2:?--storage-driver needs a value}; shift ;;
        -f|--force) FORCE=1 ;;
        build|env|down) [ -z "$COMMAND" ] || die "one command at a time"; COMMAND=$1 ;;
        up) [ -z "$COMMAND" ] || die "one command at a time"; COMMAND=up; COUNT=${2:-}; shift || true ;;
        *) die "unknown argument: $1 (try --help)" ;;
    esac
    shift
done
[ -n "$COMMAND" ] || die "no command (try --help)"
[[ "$PREFIX" =~ ^[a-z0-9][a-z0-9_.-]*$ ]] || die "--prefix: letters, digits, '_', '.', '-'"
if [ "$COMMAND" = up ]; then
    [[ "$COUNT" =~ ^[1-9][0-9]?$ ]] || die "up takes the number of nodes (1 to 99): up N"
    [[ "$MANAGERS" =~ ^[1-9][0-9]?$ ]] && [ "$MANAGERS" -le "$COUNT" ] \
        || die "--managers must be between 1 and N"
fi
[ ${#IMAGES[@]} -gt 0 ] || IMAGES=(nats:alpine nachos-deploy/probe:latest)

NETWORK=$PREFIX-net
SOCKET_DIR=$SOCKET_ROOT/$PREFIX-1
LABEL=$NS.swarm-nodes=$PREFIX

WORK=""
cleanup() { if [ -n "$WORK" ]; then rm -rf "$WORK"; fi; }
trap cleanup EXIT

timeout 10 docker info >/dev/null 2>&1 \
    || die "the Docker engine does not answer: run scripts/install-engine.sh first"

image_id() { docker image inspect -f '{{.Id}}' "$1" 2>/dev/null; }
image_label() {
    docker image inspect -f "{{with .Config.Labels}}{{index . \"$2\"}}{{end}}" "$1" 2>/dev/null || true
}
BUSYBOX=/bin/busybox
is_static() { [ -x "$1" ] && ! ldd "$1" >/dev/null 2>&1; }

# --- the node image ----------------------------------------------------------------------
apt_download() {  # dir package...
    local dir=$1
    shift
    mkdir -p "$dir"
    if ! apt-cache show "$1" >/dev/null 2>&1; then
        log "apt lists missing: apt-get update"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    fi
    if id _apt >/dev/null 2>&1; then chmod 0755 "$WORK"; chown _apt "$dir"; fi
    log "apt-get download $# packages"
    if ! (cd "$dir" && apt-get download -qq "$@" >&2); then
        log "apt-get download failed; apt-get update and retry"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        (cd "$dir" && apt-get download -qq "$@" >&2) || die "apt-get download failed"
    fi
}

build_node_image() {
    local t0 root debs new applet version
    if [ "$FORCE" = 0 ] && [ -n "$(image_id "$NODE_IMAGE" || true)" ] \
        && [ "$(image_label "$NODE_IMAGE" "$NS.recipe")" = "$NODE_RECIPE" ]; then
        log "$NODE_IMAGE: present, reused"
        return 0
    fi
    [ "$(id -u)" -eq 0 ] || die "building $NODE_IMAGE needs root (apt-get, dpkg -x, docker import)"
    is_static "$BUSYBOX" || die "$BUSYBOX is missing or not static: apt-get install busybox-static"
    t0=$(now)
    log "$NODE_IMAGE: building from Debian packages"
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/mn-swarm-node.XXXXXX")
    debs=$WORK/debs
    root=$WORK/root
    apt_download "$debs" "${NODE_DEBS[@]}"
    mkdir -p "$root"
    for deb in "$debs"/*.deb; do dpkg -x "$deb" "$root"; done
    version=$(dpkg-deb -f "$debs"/docker.io_*.deb Version)
    rm -rf "$root/usr/share/doc" "$root/usr/share/man" "$root/usr/share/locale" "$root/usr/share/lintian" \
        "$root/etc/init.d" "$root/etc/init" "$root/lib/systemd" "$root/usr/lib/systemd" \
        "$root/usr/share/docker.io/contrib"
    # What dpkg's alternatives would set up: iptables in Debian's default (nf_tables) flavour.
    ln -sfn iptables-nft "$root/usr/sbin/iptables"
    ln -sfn iptables-nft-save "$root/usr/sbin/iptables-save"
    ln -sfn iptables-nft-restore "$root/usr/sbin/iptables-restore"
    ln -sfn ip6tables-nft "$root/usr/sbin/ip6tables"
    ln -sfn ip6tables-nft-save "$root/usr/sbin/ip6tables-save"
    ln -sfn ip6tables-nft-restore "$root/usr/sbin/ip6tables-restore"
    [ -e "$root/usr/bin/docker-init" ] || ln -sfn tini-static "$root/usr/bin/docker-init"
    mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/root" "$root/var/lib/docker" "$root/var/run" \
        "$root/usr/local/bin"
    chmod 1777 "$root/tmp"
    install -m 0755 "$BUSYBOX" "$root/bin/busybox"
    for applet in $("$BUSYBOX" --list); do
        [ -e "$root/bin/$applet" ] || [ -L "$root/bin/$applet" ] || [ -e "$root/usr/bin/$applet" ] \
            || [ -e "$root/usr/sbin/$applet" ] || [ -e "$root/sbin/$applet" ] || ln -s busybox "$root/bin/$applet"
    done
    printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' 'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' \
        >"$root/etc/passwd"
    printf '%s\n' 'root:x:0:' 'docker:x:999:' 'nogroup:x:65534:' >"$root/etc/group"
    printf '%s\n' 'passwd: files' 'group: files' 'hosts: files dns' >"$root/etc/nsswitch.conf"
    cat >"$root/usr/local/bin/swarm-node" <<'EOF'
#!/bin/sh
# The node's init (under tini): dockerd on the node's own socket, and on $EXTRA_SOCKET when set
# (a host folder bind-mounted in, so the host can talk to this engine).
set -e
# Not --privileged (see NODE_SECURITY in swarm-nodes.sh): /sys and the cgroup folders come read-only;
# with CAP_SYS_ADMIN and no AppArmor/seccomp they can be made writable, as dockerd needs them.
for dir in /sys /sys/fs/cgroup /sys/fs/cgroup/*; do
    if grep -q " $dir ro," /proc/self/mountinfo; then mount -o remount,rw,bind "$dir"; fi
done
rm -f /var/run/docker.pid /var/run/docker/containerd/containerd.pid
set -- --host unix:///var/run/docker.sock --storage-driver "${STORAGE_DRIVER:-overlay2}" "$@"
if [ -n "${EXTRA_SOCKET:-}" ]; then
    rm -f "$EXTRA_SOCKET"
    set -- "$@" --host "unix://$EXTRA_SOCKET"
fi
exec dockerd "$@"
EOF
    chmod 0755 "$root/usr/local/bin/swarm-node"
    new=$(tar -C "$root" --numeric-owner --owner=0 --group=0 -c . | docker import \
        --change 'ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/swarm-node"]' \
        --change 'CMD []' \
        --change "ENV PATH=$IMG_PATH" \
        --change 'ENV DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1' \
        --change 'VOLUME /var/lib/docker' \
        --change "LABEL $NS.recipe=$NODE_RECIPE $NS.docker-io-version=$version" \
        --message "built offline by nachos-deploy scripts/swarm-nodes.sh" -)
    # Smoke test: every binary the engine runs finds its libraries.
    if ! docker run --rm --network none --entrypoint sh "$new" -c \
        'dockerd --version && docker --version && containerd --version && runc --version &&
         iptables --version && tini --version && docker-proxy --help >/dev/null 2>&1' >/dev/null; then
        docker image rm "$new" >/dev/null 2>&1 || true
        die "$NODE_IMAGE: smoke test failed"
    fi
    local old
    old=$(image_id "$NODE_IMAGE" || true)
    docker tag "$new" "$NODE_IMAGE"
    if [ -n "$old" ] && [ "$old" != "$new" ]; then docker image rm "$old" >/dev/null 2>&1 || true; fi
    log "$NODE_IMAGE: built in $(since "$t0") (docker.io $version)"
}

# --- nodes -------------------------------------------------------------------------------
node() { printf '%s-%s' "$PREFIX" "$1"; }
in_node() { local n=$1; shift; docker exec "$n" "$@"; }
node_ip() {
    docker container inspect -f "{{with index .NetworkSettings.Networks \"$NETWORK\"}}{{.IPAddress}}{{end}}" "$1"
}
running() { [ "$(docker container inspect -f '{{.State.Running}}' "$1" 2>/dev/null)" = true ]; }

start_node() {  # index
    local i=$1 name args
    name=$(node "$i")
    if running "$name"; then return 0; fi
    docker rm -f "$name" >/dev/null 2>&1 || true
    args=(--detach "${NODE_SECURITY[@]}" --name "$name" --hostname "$name" --network "$NETWORK"
        --label "$LABEL" --volume "$name-data:/var/lib/docker"
        --env "STORAGE_DRIVER=$STORAGE" --env DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1)
    if [ "$i" = 1 ]; then
        mkdir -p "$SOCKET_DIR"
        args+=(--volume "$SOCKET_DIR:/run/host-socket" --env EXTRA_SOCKET=/run/host-socket/docker.sock
            --publish "127.0.0.1:$CLIENT_PORT:$CLIENT_PORT" --publish "127.0.0.1:$MONITOR_PORT:$MONITOR_PORT")
    fi
    log "starting $name"
    docker run "${args[@]}" "$NODE_IMAGE" >/dev/null
}

wait_engine() {  # name
    local end=$(($(date +%s) + NODE_WAIT))
    until in_node "$1" docker info >/dev/null 2>&1; do
        if ! running "$1" || [ "$(date +%s)" -ge "$end" ]; then
            docker logs --tail 30 "$1" >&2 || true
            die "the engine in $1 did not start (its last log lines are above)"
        fi
        sleep 0.3
    done
}

load_images() {  # name: the images this node lacks (or has another version of), in one stream
    local name=$1 image want have missing=()
    for image in "${IMAGES[@]}"; do
        want=$(image_id "$image") || die "$image is not on this engine (bash scripts/build-images.sh)"
        have=$(in_node "$name" docker image inspect -f '{{.Id}}' "$image" 2>/dev/null || true)
        [ "$want" = "$have" ] || missing+=("$image")
    done
    [ ${#missing[@]} -gt 0 ] || return 0
    log "$name: loading ${missing[*]}"
    docker save "${missing[@]}" | docker exec -i "$name" docker load -q >/dev/null
}

swarm_state() { in_node "$1" docker info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null || true; }

up() {
    local t0 i name ip1 token_w token_m state
    t0=$(now)
    build_node_image
    docker network inspect "$NETWORK" >/dev/null 2>&1 \
        || docker network create --label "$LABEL" "$NETWORK" >/dev/null
    for i in $(seq 1 "$COUNT"); do start_node "$i"; done
    for i in $(seq 1 "$COUNT"); do wait_engine "$(node "$i")"; done
    log "engines answer ($(since "$t0"))"
    for i in $(seq 1 "$COUNT"); do load_images "$(node "$i")" & done
    wait_all
    log "images loaded ($(since "$t0"))"
    name=$(node 1)
    ip1=$(node_ip "$name")
    if [ "$(swarm_state "$name")" != active ]; then
        log "$name: docker swarm init --advertise-addr $ip1"
        in_node "$name" docker swarm init --advertise-addr "$ip1" >/dev/null
    fi
    token_w=$(in_node "$name" docker swarm join-token -q worker)
    token_m=$(in_node "$name" docker swarm join-token -q manager)
    for i in $(seq 2 "$COUNT"); do
        name=$(node "$i")
        state=$(swarm_state "$name")
        [ "$state" != active ] || continue
        if [ "$state" != inactive ]; then in_node "$name" docker swarm leave --force >/dev/null 2>&1 || true; fi
        log "$name: joining as $([ "$i" -le "$MANAGERS" ] && echo manager || echo worker)"
        in_node "$name" docker swarm join --advertise-addr "$(node_ip "$name")" \
            --token "$([ "$i" -le "$MANAGERS" ] && echo "$token_m" || echo "$token_w")" "$ip1:2377" >/dev/null
    done
    wait_ready
    in_node "$(node 1)" docker node ls >&2
    log "$COUNT nodes ready in $(since "$t0"); use: export DOCKER_HOST=unix://$SOCKET_DIR/docker.sock"
}

wait_all() {  # wait for every background job; fail when one failed
    local pid failed=0
    for pid in $(jobs -p); do wait "$pid" || failed=1; done
    [ "$failed" = 0 ] || die "loading images into a node failed"
}

wait_ready() {  # until node 1 sees COUNT nodes Ready
    local end=$(($(date +%s) + NODE_WAIT)) ready
    while :; do
        ready=$(in_node "$(node 1)" docker node ls --format '{{.Status}}' | grep -c '^Ready$' || true)
        [ "$ready" -lt "$COUNT" ] || return 0
        [ "$(date +%s)" -lt "$end" ] || die "only $ready of $COUNT nodes are Ready in the swarm"
        sleep 0.3
    done
}

env_lines() {
    local name
    name=$(node 1)
    running "$name" || die "$name is not running (scripts/swarm-nodes.sh up N)"
    printf 'DOCKER_HOST=unix://%s/docker.sock\n' "$SOCKET_DIR"
    printf 'NODE1_IP=%s\n' "$(node_ip "$name")"
    printf 'CLIENT_PORT=%s\nMONITOR_PORT=%s\n' "$CLIENT_PORT" "$MONITOR_PORT"
}

down() {
    local t0 ids name
    t0=$(now)
    ids=$(docker ps --all --quiet --filter "label=$LABEL")
    if [ -n "$ids" ]; then
        # shellcheck disable=SC2086  # one id a word
        docker rm --force --volumes $ids >/dev/null
    fi
    for name in $(docker volume ls --quiet --filter "name=^$PREFIX-[0-9]+-data\$"); do
        docker volume rm "$name" >/dev/null
    done
    if docker network inspect "$NETWORK" >/dev/null 2>&1; then docker network rm "$NETWORK" >/dev/null; fi
    rm -rf "$SOCKET_DIR"
    log "nodes of $PREFIX removed ($(since "$t0"))"
}

case "$COMMAND" in
    build) build_node_image ;;
    up) up ;;
    env) env_lines ;;
    down) down ;;
esac
