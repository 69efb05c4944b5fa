"""One-shot containers on a stack's volumes, for `backup` and `restore`: the data moves through their
stdin and stdout, so nothing is written on the host but the archive itself.

- the gateway's SQLite database is copied with SQLite's online backup API (``Connection.backup``),
  which reads a consistent copy while the gateway keeps writing (WAL: the reader never blocks it),
  then the copy is checked (``PRAGMA integrity_check``, page count, rows per table);
- a state folder (``<component>-state``) goes out and comes back as a tar, numeric owners kept;
- the state store's snapshot (an RDB file) is read by ``redis-cli --rdb`` inside the running store,
  and restored by a one-shot ``redis-server`` of the store's own image that loads it and writes it
  again as the append-only file the store runs with (``CONFIG SET appendonly yes`` rewrites it).

Every container runs with no network; the python3 ones run ``core.names.BACKUP_TOOL_IMAGE``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nachos_deploy.core.errors import DeployError, ExitCode
from nachos_deploy.core.names import BACKUP_TOOL_IMAGE
from nachos_deploy.docker import runner
from nachos_deploy.docker.errors import classify
from nachos_deploy.docker.runner import DockerFailure

ONE_SHOT_TIMEOUT = 300.0  # seconds for one copy in or out (a large database on a loaded machine)
MOUNT = "/v"

# Inside the one-shot: an online backup of the database, checked, then out on stdout as a tar of the
# copy and what the check found (meta.json).
_SQLITE_BACKUP = """
import io, json, sqlite3, sys, tarfile
src = sqlite3.connect(sys.argv[1], timeout=30)
dst = sqlite3.connect('/tmp/copy.db')
src.backup(dst)
src.close()
dst.execute('PRAGMA journal_mode=DELETE')
meta = {
    'page_count': dst.execute('PRAGMA page_count').fetchone()[0],
    'integrity_check': dst.execute('PRAGMA integrity_check').fetchone()[0],
    'rows': {t: dst.execute('SELECT count(*) FROM "%s"' % t).fetchone()[0] for (t,) in dst.execute(
        "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' ORDER BY name")},
}
dst.close()
with tarfile.open(fileobj=sys.stdout.buffer, mode='w|') as tar:
    tar.add('/tmp/copy.db', arcname='database')
    data = json.dumps(meta).encode()
    info = tarfile.TarInfo('meta.json'); info.size = len(data)
    tar.addfile(info, io.BytesIO(data))
"""

# Inside the one-shot: what a database file holds (checked the same way), printed as JSON.
_SQLITE_CHECK = """
import json, sqlite3, sys
db = sqlite3.connect(sys.argv[1], timeout=30)
print(json.dumps({
    'page_count': db.execute('PRAGMA page_count').fetchone()[0],
    'integrity_check': db.execute('PRAGMA integrity_check').fetchone()[0],
    'rows': {t: db.execute('SELECT count(*) FROM "%s"' % t).fetchone()[0] for (t,) in db.execute(
        "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' ORDER BY name")},
}))
"""

# Inside the one-shot: the database from stdin in place of the volume's (its journal files gone).
_SQLITE_PUT = """
import os, shutil, sys
path, owner = sys.argv[1], sys.argv[2]
for suffix in ('-wal', '-shm', '-journal'):
    if os.path.exists(path + suffix):
        os.remove(path + suffix)
with open(path + '.restoring', 'wb') as out:
    shutil.copyfileobj(sys.stdin.buffer, out)
    out.flush(); os.fsync(out.fileno())
uid, _, gid = owner.partition(':')
os.chown(path + '.restoring', int(uid), int(gid or uid))
os.replace(path + '.restoring', path)
"""

_TAR_OUT = """
import sys, tarfile
with tarfile.open(fileobj=sys.stdout.buffer, mode='w|') as tar:
    tar.add(sys.argv[1], arcname='.')
"""

_TAR_IN = """
import sys, tarfile
with tarfile.open(fileobj=sys.stdin.buffer, mode='r|') as tar:
    tar.extractall(sys.argv[1], numeric_owner=True)  # our own tar of folder_out; 3.11.2 has no filter
"""

# Inside a one-shot of the state store's image, as root on the store's volume: load the RDB from
# stdin with appendonly off, turn the append-only file on (Redis rewrites it from the loaded data),
# wait for that rewrite, count the keys, stop, and hand the files to the store's user.
_REDIS_RESTORE = r"""
set -e
cat > /data/nachos-restore.rdb
rm -rf /data/appendonlydir /data/dump.rdb
redis-server --port 0 --unixsocket /tmp/r.sock --dir /data --dbfilename nachos-restore.rdb \
  --appendonly no --save '' --daemonize yes --logfile /tmp/r.log
cli() { redis-cli -s /tmp/r.sock "$@"; }
give_up() { cat /tmp/r.log >&2; exit 1; }
n=0; until [ "$(cli ping 2>/dev/null)" = PONG ]; do n=$((n+1)); [ $n -lt 600 ] || give_up; sleep 0.1; done
cli config set appendonly yes >/dev/null
n=0
until cli info persistence | tr -d '\r' | grep -q '^aof_rewrite_in_progress:0' \
  && cli info persistence | tr -d '\r' | grep -q '^aof_rewrite_scheduled:0' \
  && [ -d /data/appendonlydir ]; do n=$((n+1)); [ $n -lt 600 ] || give_up; sleep 0.1; done
cli info persistence | tr -d '\r' | grep -q '^aof_last_bgrewrite_status:ok' || give_up
cli info keyspace | tr -d '\r' | grep '^db' || true
cli shutdown >/dev/null 2>&1 || true
n=0; while [ -S /tmp/r.sock ] && [ $n -lt 100 ]; do n=$((n+1)); sleep 0.1; done
rm -f /data/nachos-restore.rdb
chown -R "$1" /data
"""


@dataclass(frozen=True)
class DatabaseCheck:
    """What SQLite says of a database: its page count, its integrity check ("ok"), rows per table."""

    page_count: int
    integrity_check: str
    rows: dict[str, int]

    @classmethod
    def of(cls, doc: Mapping[str, Any]) -> DatabaseCheck:
        rows = doc.get("rows") or {}
        return cls(
            int(doc.get("page_count", 0)),
            str(doc.get("integrity_check", "")),
            {str(k): int(v) for k, v in rows.items()},
        )

    def as_dict(self) -> dict[str, Any]:
        return {"page_count": self.page_count, "integrity_check": self.integrity_check, "rows": self.rows}


@dataclass(frozen=True)
class KeyCount:
    """The state store's keys: all of them, and those with an expiry (which a later load may drop)."""

    keys: int
    expiring: int

    def as_dict(self) -> dict[str, int]:
        return {"keys": self.keys, "expiring": self.expiring}


def _fail(failure: DockerFailure, what: str) -> DeployError:
    return classify(failure, what, exit_code=ExitCode.FAILED)


def _python(
    volume: str,
    script: str,
    args: Sequence[str],
    *,
    user: str,
    data: bytes | None = None,
    read_only: bool = False,
) -> bytes:
    mount = f"{volume}:{MOUNT}" + (":ro" if read_only else "")
    argv = ["docker", "run", "--rm", "-i", "--network", "none", "--user", user, "-v", mount]
    argv += ["--entrypoint", "python3", BACKUP_TOOL_IMAGE, "-c", script, *args]
    return runner.run_bytes(argv, data=data, timeout=ONE_SHOT_TIMEOUT)


def database_backup(volume: str, file_name: str, user: str) -> tuple[bytes, DatabaseCheck]:
    """An online copy of the database ``file_name`` on ``volume`` (SQLite's backup API, as the
    gateway's ``user`` so its journal files keep their owner), and the check of that copy."""
    import io
    import tarfile

    try:
        out = _python(volume, _SQLITE_BACKUP, [f"{MOUNT}/{file_name}"], user=user)
    except DockerFailure as failure:
        raise _fail(failure, f"Cannot copy the database {file_name} from volume {volume}") from None
    with tarfile.open(fileobj=io.BytesIO(out), mode="r") as tar:
        database = _member(tar, "database")
        meta = json.loads(_member(tar, "meta.json"))
    return database, DatabaseCheck.of(meta)


def _member(tar: Any, name: str) -> bytes:
    handle = tar.extractfile(name)
    if handle is None:
        raise DeployError(f"the one-shot copy gave no {name}", exit_code=ExitCode.FAILED)
    return bytes(handle.read())


def database_check(volume: str, file_name: str, user: str) -> DatabaseCheck:
    """What the database on ``volume`` holds now (read online, as the gateway's ``user``)."""
    try:
        out = _python(volume, _SQLITE_CHECK, [f"{MOUNT}/{file_name}"], user=user)
    except DockerFailure as failure:
        raise _fail(failure, f"Cannot check the database {file_name} on volume {volume}") from None
    return DatabaseCheck.of(json.loads(out))


def database_restore(volume: str, file_name: str, user: str, data: bytes) -> DatabaseCheck:
    """Put ``data`` in place as the database on ``volume``, owned by the gateway's ``user``; its check."""
    try:
        _python(volume, _SQLITE_PUT, [f"{MOUNT}/{file_name}", user], user="0:0", data=data)
    except DockerFailure as failure:
        raise _fail(failure, f"Cannot restore the database {file_name} to volume {volume}") from None
    return database_check(volume, file_name, user)


def folder_out(volume: str) -> bytes:
    """The whole of ``volume`` as a tar (numeric owners and modes kept)."""
    try:
        return _python(volume, _TAR_OUT, [MOUNT], user="0:0", read_only=True)
    except DockerFailure as failure:
        raise _fail(failure, f"Cannot read volume {volume}") from None


def folder_in(volume: str, data: bytes) -> None:
    """Unpack a tar of :func:`folder_out` into ``volume``, owners and modes as they were."""
    try:
        _python(volume, _TAR_IN, [MOUNT], user="0:0", data=data)
    except DockerFailure as failure:
        raise _fail(failure, f"Cannot restore volume {volume}") from None


def redis_snapshot(container: str, user: str, password: str) -> tuple[bytes, KeyCount]:
    """An RDB snapshot of the running state store (``redis-cli --rdb`` as ``user``: Redis forks and
    streams its data set; the store keeps answering), and its key count."""
    import base64

    auth = ["--no-auth-warning", "--user", user]
    script = (
        f"redis-cli {' '.join(auth)} --rdb /tmp/nachos-backup.rdb >/dev/null "
        "&& base64 /tmp/nachos-backup.rdb; status=$?; rm -f /tmp/nachos-backup.rdb; exit $status"
    )
    argv = ["docker", "exec", "-e", "REDISCLI_AUTH", container, "sh", "-c", script]
    try:
        encoded = runner.run_bytes(argv, env={"REDISCLI_AUTH": password}, timeout=ONE_SHOT_TIMEOUT)
        info = runner.run_bytes(
            ["docker", "exec", "-e", "REDISCLI_AUTH", container, "redis-cli", *auth, "info", "keyspace"],
            env={"REDISCLI_AUTH": password},
            timeout=60,
        )
    except DockerFailure as failure:
        raise _fail(failure, "Cannot take a snapshot of the state store") from None
    return base64.b64decode(encoded), key_count(info.decode(errors="replace"))


def redis_keys(container: str, user: str, password: str) -> KeyCount:
    """The running state store's key count (``INFO keyspace``)."""
    argv = ["docker", "exec", "-e", "REDISCLI_AUTH", container, "redis-cli", "--no-auth-warning"]
    argv += ["--user", user, "info", "keyspace"]
    try:
        info = runner.run_bytes(argv, env={"REDISCLI_AUTH": password}, timeout=60)
    except DockerFailure as failure:
        raise _fail(failure, "Cannot count the state store's keys") from None
    return key_count(info.decode(errors="replace"))


def key_count(info: str) -> KeyCount:
    """Keys and expiring keys summed over every database of an ``INFO keyspace`` answer
    (``db0:keys=3,expires=1,avg_ttl=0``)."""
    if "ERR" in info or "NOPERM" in info or "WRONGPASS" in info:
        raise DeployError(
            f"The state store refused to count its keys: {info.strip()}", exit_code=ExitCode.FAILED
        )
    keys = expiring = 0
    for line in info.splitlines():
        if line.startswith("db") and ":" in line:
            fields = dict(
                part.split("=", 1) for part in line.split(":", 1)[1].strip().split(",") if "=" in part
            )
            keys += int(fields.get("keys", 0))
            expiring += int(fields.get("expires", 0))
    return KeyCount(keys, expiring)


def redis_restore(volume: str, image: str, owner: str, data: bytes) -> KeyCount:
    """Load an RDB snapshot into the state store's ``volume`` as the append-only file the store runs
    with, owned by its ``owner`` (uid:gid); the key count Redis loaded."""
    argv = ["docker", "run", "--rm", "-i", "--network", "none", "--user", "0:0", "-v", f"{volume}:/data"]
    argv += ["--entrypoint", "sh", image, "-c", _REDIS_RESTORE, "restore", owner]
    try:
        out = runner.run_bytes(argv, data=data, timeout=ONE_SHOT_TIMEOUT)
    except DockerFailure as failure:
        raise _fail(failure, f"Cannot restore the state store's data to volume {volume}") from None
    return key_count(out.decode(errors="replace"))


def volume_exists(name: str) -> bool:
    done = runner.run(["docker", "volume", "inspect", name], check=False, timeout=60)
    return done.returncode == 0


def create_volume(name: str, labels: Mapping[str, str]) -> None:
    """A named volume with the labels its engine would have given it, so that `down --volumes` and
    `restore`'s own check find it as the stack's."""
    argv = ["docker", "volume", "create"]
    for key, value in sorted(labels.items()):
        argv += ["--label", f"{key}={value}"]
    try:
        runner.run([*argv, name], timeout=60)
    except DockerFailure as failure:
        raise classify(failure, f"Cannot create volume {name}") from None
