"""Issue 19, item 1 and the uid half of item 2, repeated on the real engine from the host.

The attack: a host account made with `useradd` got uid 1001, the uid the components ran under, and
read llm-proxy's API key from /proc/<pid>/environ (the kernel lets a process of the same uid and gid
read another's environment, reach its files through /proc/<pid>/root and ptrace it). The components
now run under run_as.components (61000), the sidecars and the forwarder under their own uids, and no
host account has any of them; this file shows the processes under those uids as the host sees them,
the attack working against a container under 1001 and failing against the stack's, the platform's
image layout (files of 1001, readable by anyone) still starting, writing its volume and answering,
and `doctor` and `up` naming an account that takes one of the uids.
"""

from __future__ import annotations

import contextlib
import json
import pwd
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from nachos_deploy.bus.natsclient import request
from tests.commands import cli, docker

PROBE = "nachos-deploy/probe:latest"
SECRET = f"h19a-secret-{uuid.uuid4().hex}"
RUN_AS = {
    "gateway": 61000,
    "llm-proxy": 61000,
    "bus-gateway": 61001,
    "bus-llm-proxy": 61001,
    "bus-ports": 61002,
}


@dataclass
class Stack:
    project: str
    file: Path
    nats_url: str

    def container(self, service: str) -> str:
        return docker(
            "ps", "-q", "--filter", f"label=com.docker.compose.project={self.project}",
            "--filter", f"label=com.docker.compose.service={service}",
        )  # fmt: skip

    def pids(self, service: str) -> list[int]:
        """Host pids of every process in the service's container (docker-init and the program)."""
        out = docker("top", self.container(service), "-eo", "pid")
        return [int(line) for line in out.splitlines()[1:]]

    def main_pid(self, service: str) -> int:
        """The program itself: the child of the container's pid 1, docker-init (`init: true`). Not
        the last pid `docker top` lists, which was now and then a healthcheck's process, started by
        `docker exec` beside the program and gone a moment later (CI: "No such file or directory"
        instead of "Permission denied" for its /proc/<pid>/root)."""
        init = int(docker("inspect", "-f", "{{.State.Pid}}", self.container(service)))
        children = Path(f"/proc/{init}/task/{init}/children").read_text().split()
        assert len(children) == 1, f"{service}: docker-init ({init}) has children {children}"
        return int(children[0])


@pytest.fixture(scope="module")
def stack(engine: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("h19a")
    project = f"h19a-{uuid.uuid4().hex[:8]}"
    component = {"image": PROBE, "egress": False, "environment": {"H19A_SECRET": SECRET}}
    document = {
        "project": project,
        "bus": {"client_port": 0, "monitor_port": 0, "healthcheck_interval": "500ms"},
        "components": {"gateway": component, "llm-proxy": component},
    }
    file = folder / "nachos-deploy.yaml"
    file.write_text(yaml.safe_dump(document))
    try:
        code, out, err = cli("up", "-c", str(file), "--json")
        assert code == 0, out + err
        yield Stack(project, file, json.loads(out)["nats_url"])
    finally:
        cli("down", "-c", str(file), "--volumes", "--yes")
        subprocess.run(  # whatever a failed `up` or `down` left
            ["docker", "compose", "-p", project, "down", "--volumes", "--remove-orphans", "-t", "2"],
            capture_output=True,
            timeout=120,
        )


@contextlib.contextmanager
def host_account(uid: int) -> Iterator[pwd.struct_passwd]:
    """The host account with ``uid``: one made as an administrator would (useradd, with its own
    group) and removed after, or the machine's own when it has one (a CI runner's user is often
    1001), which is the attack as the issue saw it."""
    if not uid_free(uid):
        yield pwd.getpwuid(uid)
        return
    name = f"h19a{uuid.uuid4().hex[:8]}"
    subprocess.run(["useradd", "--no-create-home", "--user-group", "--uid", str(uid), name], check=True)
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", name], check=True)


def uid_free(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return True
    return False


def as_account(account: pwd.struct_passwd, *command: str) -> subprocess.CompletedProcess[str]:
    """``command`` run on the host by ``account`` (its uid, gid and groups, no privilege)."""
    return subprocess.run(
        ["runuser", "-u", account.pw_name, "--", *command], capture_output=True, text=True, timeout=30
    )


def ids(pid: int) -> tuple[set[int], set[int]]:
    """The real, effective, saved and filesystem uids and gids of a host process."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return {int(v) for v in fields["Uid"].split()}, {int(v) for v in fields["Gid"].split()}


def test_the_host_sees_every_process_under_a_uid_no_host_account_has(stack: Stack) -> None:
    for service, uid in RUN_AS.items():
        pids = stack.pids(service)
        assert pids, service
        for pid in pids:
            try:
                seen = ids(pid)
            except FileNotFoundError:  # a process that ended since it was listed (a healthcheck's)
                continue
            assert seen == ({uid}, {uid}), (service, pid, seen)
    # Not in the passwd database (NSS) and not in /etc/passwd: no host login can act as them.
    passwd_uids = {int(line.split(":")[2]) for line in Path("/etc/passwd").read_text().splitlines() if line}
    for uid in set(RUN_AS.values()):
        assert uid_free(uid) and uid not in passwd_uids, uid


def running(pid: int, command: str, timeout: float = 10.0) -> None:
    """Until ``pid`` runs ``command``: `docker run --detach` can return while the container's first
    process is still runc's init, which runs as root and is not dumpable, so any other user's read
    of its /proc/<pid>/environ is refused (seen under two engine test workers)."""
    path = Path(f"/proc/{pid}/comm")
    deadline = time.monotonic() + timeout
    while path.read_text().strip() != command:
        assert time.monotonic() < deadline, f"process {pid} still runs {path.read_text().strip()!r}"
        time.sleep(0.05)


def test_a_useradd_account_read_the_secret_under_1001_and_cannot_under_the_new_uid(stack: Stack) -> None:
    with host_account(1001) as account:  # the first account useradd makes on many hosts
        # A component as the old default ran it: uid 1001 (and the account's group, 1001 when
        # useradd made it), otherwise as hardened as the stack's.
        old = docker(
            "run", "--detach", "--rm", "--user", f"1001:{account.pw_gid}", "--cap-drop", "ALL",
            "--read-only", "--security-opt", "no-new-privileges:true", "--network", "none",
            "--env", f"H19A_SECRET={SECRET}", "--entrypoint", "sleep", PROBE, "60",
        )  # fmt: skip
        try:
            old_pid = int(docker("inspect", "-f", "{{.State.Pid}}", old))
            running(old_pid, "sleep")
            stolen = as_account(account, "cat", f"/proc/{old_pid}/environ")
            assert stolen.returncode == 0 and f"H19A_SECRET={SECRET}" in stolen.stdout, stolen
            refused = as_account(account, "cat", f"/proc/{stack.main_pid('llm-proxy')}/environ")
            assert refused.returncode != 0 and "Permission denied" in refused.stderr, refused
            data = as_account(account, "ls", f"/proc/{stack.main_pid('gateway')}/root/app/data")
            assert data.returncode != 0 and "Permission denied" in data.stderr, data
        finally:
            subprocess.run(["docker", "rm", "--force", old], capture_output=True)


def test_the_platform_image_layout_starts_writes_its_volume_and_answers(stack: Stack) -> None:
    gateway = stack.container("gateway")
    # As upstream's images: the code under /app belongs to 1001 and is readable, not writable, by
    # anyone else; no /app/data in the image (the volume there is the component's, from volume-init).
    listing = docker(
        "exec", gateway, "stat", "-c", "%u:%g %a %n", "/app", "/app/nachos_probe.py", "/app/data"
    )
    assert listing.splitlines() == [
        "1001:1001 755 /app",
        "1001:1001 644 /app/nachos_probe.py",
        "61000:61000 755 /app/data",
    ]
    database = docker(
        "exec",
        gateway,
        "sh",
        "-c",
        'stat -c %u:%g /app/data/gateway.db && python3 -c "import sqlite3; '
        "db = sqlite3.connect('/app/data/gateway.db'); "
        "print(db.execute('SELECT count(*) FROM starts').fetchone()[0])\"",
    )
    assert database.split() == ["61000:61000", "1"]
    reply = json.loads(request(stack.nats_url, "nachos.gateway.subagents.list", b"{}"))
    assert reply == {"ok": True, "runs": []}
    echo = json.loads(request(stack.nats_url, "nachos.llm.request", b"prompt"))
    assert echo["component"] == "llm-proxy" and echo["echo"] == "prompt"
    code, out, err = cli("status", "-c", str(stack.file), "--json")
    assert code == 0, out + err
    gateway_row = next(s for s in json.loads(out)["services"] if s["name"] == "gateway")
    assert gateway_row["health"] == "healthy"  # its GET /health, through `node -e fetch`


def test_doctor_and_up_name_an_account_that_takes_the_uid(stack: Stack) -> None:
    assert uid_free(61000)
    with host_account(61000) as account:
        code, out, _ = cli("doctor", "-c", str(stack.file), "--json")
        checks = [c for c in json.loads(out)["checks"] if c["name"] == "host uids"]
        assert [c["level"] for c in checks] == ["warn"], out
        assert checks[0]["detail"].startswith(
            f"host account {account.pw_name} has uid 61000, which run_as.components runs gateway, llm-proxy"
        )
        assert f"usermod -u NEW_UID {account.pw_name}" in checks[0]["detail"]
        code, out, err = cli("up", "-c", str(stack.file))
        assert code == 0, out + err
        assert " ".join(err.split()).count(f"host account {account.pw_name} has uid 61000") == 1, err
    code, out, _ = cli("doctor", "-c", str(stack.file), "--json")
    checks = [c for c in json.loads(out)["checks"] if c["name"] == "host uids"]
    assert [c["level"] for c in checks] == ["pass"], out
