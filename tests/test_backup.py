"""`backup` and `restore` (issue 21, part 1) on the real engine, one Compose stack for the module.

The backup is taken while the stack works: a client publishes acked audit messages and asks the
gateway for answers the whole time, and none of them may fail. The archive is then restored into a
fresh project and verified there: every acked message up to the snapshot's last sequence is back
with its payload, the gateway's database has its rows, and a sender's session in the state store
goes on counting where it was. A tampered archive is refused before anything is touched (exit 9
naming the member), and a restore over a running stack or over existing volumes is refused.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from nachos_deploy.core.errors import ArchiveError, ExitCode
from nachos_deploy.io import checked_tar
from nachos_deploy.lifecycle.backup import ARCHIVE
from tests import archives
from tests.archives import tampered
from tests.commands import compose_down, docker, nachos
from tests.gateway_stack import CHANNEL, PAYLOAD, Load, connect, document

BEFORE = 3000  # acked audit messages before the backup: over 1.5 MB, more than one window (1 MiB)


class Project:
    """One project in its own folder: its deploy file, the CLI run there, its volumes."""

    def __init__(self, root: Path, name: str) -> None:
        self.folder = root / name
        self.folder.mkdir()
        self.project = f"h21b-{name}-{uuid.uuid4().hex[:6]}"
        (self.folder / "nachos-deploy.yaml").write_text(yaml.safe_dump(document(self.project)))

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return nachos(self.folder, *args, timeout=300)

    def volumes(self) -> list[str]:
        label = f"label=com.docker.compose.project={self.project}"
        return sorted(docker("volume", "ls", "-q", "--filter", label).split())

    def nats_url(self) -> str:
        done = self.run("env", "--format", "json")
        assert done.returncode == 0, done.stderr
        return str(json.loads(done.stdout)["NATS_URL"])


def publish(nats_url: str, count: int) -> dict[int, bytes]:
    async def run() -> dict[int, bytes]:
        client = await connect(nats_url)
        js = client.jetstream(timeout=10)
        acked = {}
        try:
            for _ in range(count):
                data = os.urandom(PAYLOAD)
                acked[(await js.publish("nachos.audit.log", data)).seq] = data
        finally:
            await client.close()
        return acked

    return asyncio.run(run())


def inbound(nats_url: str, sender: str) -> dict[str, Any]:
    """One message from ``sender`` on the channel's inbound subject; the session the gateway answers."""

    async def run() -> dict[str, Any]:
        client = await connect(nats_url)
        try:
            outbox = await client.subscribe(f"nachos.channel.{CHANNEL}.outbound")
            message = {"sender": {"id": sender}, "conversation": {"id": sender}, "content": {"text": "hi"}}
            deadline = time.monotonic() + 30
            while True:
                await client.publish(f"nachos.channel.{CHANNEL}.inbound", json.dumps(message).encode())
                try:
                    doc: dict[str, Any] = json.loads((await outbox.next_msg(timeout=2)).data)
                except TimeoutError:
                    assert time.monotonic() < deadline, "the gateway never answered"
                    continue
                if doc.get("session"):
                    return dict(doc["session"])
        finally:
            await client.close()

    return asyncio.run(run())


def stored(nats_url: str, sequences: list[int]) -> dict[int, bytes]:
    async def run() -> dict[int, bytes]:
        client = await connect(nats_url)
        js = client.jetstream(timeout=10)
        try:
            return {seq: bytes((await js.get_msg("AUDIT", seq)).data or b"") for seq in sequences}
        finally:
            await client.close()

    return asyncio.run(run())


Source = tuple[Project, dict[str, Any], Path, dict[int, bytes]]  # the stack, its backup, its acked messages


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Source]:
    """A running stack with data in every part, and its backup taken under load."""
    root = tmp_path_factory.mktemp("backup")
    made = Project(root, "src")
    try:
        done = made.run("up", "--json")
        assert done.returncode == 0, done.stderr[-3000:]
        url = json.loads(done.stdout)["nats_url"]
        acked = publish(url, BEFORE)
        sessions = {inbound(url, "alice")["messages"] for _ in range(3)}
        assert sessions == {1, 2, 3}
        with Load(url) as load:
            time.sleep(0.5)
            started = time.monotonic()
            done = made.run("backup", "--to", str(root / "stack.tar"), "--json")
            seconds = time.monotonic() - started
            during = load.answered
        assert done.returncode == 0, done.stderr[-3000:]
        result = json.loads(done.stdout)
        print(f"backup: {seconds:.1f} s, {result['size']} bytes, {during} requests answered meanwhile")
        assert load.failures == [], load.failures[:5]
        assert during > 0 and load.answered > 0
        acked.update(load.acked)
        yield made, result, root / "stack.tar", acked
    finally:
        compose_down(made.project)


@pytest.mark.engine
def test_backup_while_working_then_restore_into_a_fresh_project(source: Source, tmp_path: Path) -> None:
    made, result, path, acked = source
    stream = result["streams"]["AUDIT"]
    assert stream["first_seq"] == 1 and stream["last_seq"] >= BEFORE
    assert stream["messages"] == stream["last_seq"]  # nothing deleted: every sequence is there
    database = result["database"]
    assert database["integrity_check"] == "ok" and database["rows"]["requests"] > 0
    assert result["state_store"]["keys"] >= 2  # alice's session and her rate counter
    assert set(result["volumes"]) == {f"{CHANNEL}-state", "gateway-state"}
    manifest = checked_tar.verify(path, ARCHIVE)
    assert manifest["project"] == made.project and manifest["credentials"] is False
    assert not any(name.startswith("credentials/") for name in manifest["members"])

    copy = Project(tmp_path, "copy")
    try:
        done = copy.run("restore", str(path), "--json")
        assert done.returncode == 0, done.stderr[-3000:]
        restored = json.loads(done.stdout)
        assert restored["verified"] is True
        same = {k: stream[k] for k in ("first_seq", "last_seq", "messages")}
        assert restored["streams"]["AUDIT"] == {**same, "replicas": 1}  # a single-node bus
        assert restored["database"]["rows"] == database["rows"]
        print(f"restore: {restored['seconds']} s {restored['timings']}")
        # Every acked message up to the snapshot's last sequence is back, byte for byte.
        url = copy.nats_url()
        wanted = sorted(seq for seq in acked if seq <= stream["last_seq"])
        back = stored(url, wanted)
        missing = [seq for seq in wanted if back.get(seq) != acked[seq]]
        assert missing == [], f"{len(missing)} acked messages missing after restore: {missing[:10]}"
        # The state store came back: alice's session goes on counting where it was.
        assert inbound(url, "alice")["messages"] == 4
        # A running stack is refused, and so are existing volumes once it is down (without --yes).
        done = copy.run("restore", str(path))
        assert done.returncode == ExitCode.FAILED and "is running" in done.stderr
        assert copy.run("down").returncode == 0
        kept = copy.volumes()
        done = copy.run("restore", str(path))
        assert done.returncode == ExitCode.FAILED and "--yes" in done.stderr, done.stderr
        assert f"{copy.project}_gateway-data" in done.stderr
        assert copy.volumes() == kept and copy.run("status").returncode != 0  # still down
    finally:
        compose_down(copy.project)


@pytest.mark.engine
def test_a_tampered_archive_is_refused_before_anything_is_touched(source: Source, tmp_path: Path) -> None:
    _, _, path, _ = source
    bad = tampered(path, "gateway/database.sqlite", tmp_path / "bad.tar")
    with pytest.raises(ArchiveError, match=r"member gateway/database\.sqlite fails its checksum"):
        checked_tar.verify(bad, ARCHIVE)
    target = Project(tmp_path, "tampered")
    try:
        done = target.run("restore", str(bad))
        assert done.returncode == ExitCode.ARCHIVE == 9, done.stderr
        assert "gateway/database.sqlite" in done.stderr and str(bad) in done.stderr
        assert target.volumes() == []  # nothing made
        assert not (target.folder / ".nachos").exists()  # nothing written
        # A cut archive and one without its manifest are refused the same way.
        cut = tmp_path / "cut.tar"
        cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        done = target.run("restore", str(cut))
        assert done.returncode == 9 and str(cut) in done.stderr, done.stderr
        headless = tmp_path / "headless.tar"
        with tarfile.open(path) as tar, tarfile.open(headless, "w") as out:
            for info in tar.getmembers():
                if info.name != "manifest.json":
                    out.addfile(info, tar.extractfile(info))
        done = target.run("restore", str(headless))
        assert done.returncode == 9 and "manifest.json" in done.stderr, done.stderr
        assert target.volumes() == []
        # A good archive into a project whose client port another program holds: refused before any
        # volume is written (else the bus it starts to restore the streams fails on the port, with the
        # volumes already restored and that bus left running).
        with socket.create_server(("127.0.0.1", 0)) as holder:
            port = holder.getsockname()[1]
            done = target.run("restore", str(path), "--set", f"bus.client_port={port}")
        assert done.returncode == ExitCode.ENVIRONMENT == 4, done.stderr
        assert f"127.0.0.1:{port} (bus.client_port, for the bus). Nothing was restored." in done.stderr
        assert target.volumes() == [] and docker("ps", "-aq", "--filter", f"name={target.project}") == ""
    finally:
        compose_down(target.project)


def test_a_changed_byte_is_refused_naming_the_member(tmp_path: Path) -> None:
    path = tmp_path / "a.tar"
    members = {"streams/AUDIT.snapshot": bytes(range(256)) * 4, "b": b"y" * 300}
    archives.write(path, members, {"project": "p"}, kind=ARCHIVE)
    assert path.stat().st_mode & 0o777 == 0o600  # it may hold credentials
    bad = tampered(path, "streams/AUDIT.snapshot", tmp_path / "bad.tar")
    with pytest.raises(
        ArchiveError, match=r"bad\.tar: member streams/AUDIT\.snapshot fails its checksum"
    ) as caught:
        checked_tar.verify(bad, ARCHIVE)
    assert "Nothing was restored" in caught.value.message
    assert checked_tar.verify(path, ARCHIVE)["project"] == "p"
    from nachos_deploy.interfaces import api

    assert api.verify_backup(path)["project"] == "p"
    with pytest.raises(ArchiveError, match="fails its checksum"):
        api.verify_backup(bad)


def test_credentials_go_in_only_when_asked_and_come_back_with_their_modes(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from nachos_deploy.lifecycle import backup, restore

    source = tmp_path / "source"
    (source / "credentials" / "state").mkdir(parents=True)
    (source / "credentials").chmod(0o700)
    (source / "credentials" / "state").chmod(0o711)
    (source / "credentials" / "state.env").write_text("NACHOS_STATE_GATEWAY_PASSWORD=a1\n")
    (source / "credentials" / "state.env").chmod(0o600)
    (source / "credentials" / "state" / "users.acl").write_text("user default off\n")
    (source / "credentials" / "state" / "users.acl").chmod(0o644)
    members = backup.Members(tmp_path / "scratch")
    modes = backup._credentials(SimpleNamespace(output_dir=source), members)  # type: ignore[arg-type]
    assert sorted(members.files) == ["credentials/state.env", "credentials/state/users.acl"]
    path = tmp_path / "with.tar"
    checked_tar.write(path, members.files, {"credential_modes": modes}, mode=0o600, kind=backup.ARCHIVE)

    copy = tmp_path / "copy"
    found = checked_tar.extract(path, tmp_path / "out", backup.ARCHIVE)
    assert restore._credentials(SimpleNamespace(output_dir=copy), found) is True  # type: ignore[arg-type]
    assert (copy / "credentials" / "state.env").read_text() == "NACHOS_STATE_GATEWAY_PASSWORD=a1\n"
    assert (copy / "credentials" / "state.env").stat().st_mode & 0o777 == 0o600
    assert (copy / "credentials" / "state").stat().st_mode & 0o777 == 0o711
    assert (copy / "credentials" / "state" / "users.acl").stat().st_mode & 0o777 == 0o644
    # A folder's own credentials are never replaced.
    (copy / "credentials" / "state.env").write_text("mine\n")
    assert restore._credentials(SimpleNamespace(output_dir=copy), found) is False  # type: ignore[arg-type]
    assert (copy / "credentials" / "state.env").read_text() == "mine\n"
