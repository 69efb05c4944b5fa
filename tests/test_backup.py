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
import io
import json
import os
import shutil
import subprocess
import tarfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
import yaml

from nachos_deploy.bus import trust
from nachos_deploy.core.errors import ArchiveError, ExitCode
from nachos_deploy.io import archive
from tests.commands import compose_down, docker, nachos

PROBE = "nachos-deploy/probe:latest"
CHANNEL = "chat"
PAYLOAD = 512  # bytes of each audit message: random, so the snapshot is larger than its flow window
BEFORE = 3000  # acked audit messages before the backup: over 1.5 MB, more than one window (1 MiB)


class Project:
    """One project in its own folder: its deploy file, the CLI run there, its volumes."""

    def __init__(self, root: Path, name: str) -> None:
        self.folder = root / name
        self.folder.mkdir()
        self.project = f"h21b-{name}-{uuid.uuid4().hex[:6]}"
        document = {
            "project": self.project,
            "bus": {"client_port": 0, "monitor_port": 0},
            "components": {
                "gateway": {"image": PROBE, "egress": False},
                "llm-proxy": {"enabled": False},
                CHANNEL: {"role": "channel", "image": PROBE, "egress": False},
            },
        }
        (self.folder / "nachos-deploy.yaml").write_text(yaml.safe_dump(document))

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return nachos(self.folder, *args, timeout=300)

    def volumes(self) -> list[str]:
        label = f"label=com.docker.compose.project={self.project}"
        return sorted(docker("volume", "ls", "-q", "--filter", label).split())

    def nats_url(self) -> str:
        done = self.run("env", "--format", "json")
        assert done.returncode == 0, done.stderr
        return str(json.loads(done.stdout)["NATS_URL"])


async def connect(nats_url: str) -> nats.NATS:
    """A client that fails rather than reconnects, over TLS with the stack's CA for a tls:// bus (Swarm:
    the caller registers the CA with ``trust.trust``)."""
    options: dict[str, Any] = {"connect_timeout": 5, "allow_reconnect": False}
    tls = trust.context(nats_url)
    if tls is not None:
        options.update(tls=tls, tls_handshake_first=True, tls_hostname=trust.server_name(nats_url))
    return await nats.connect(nats_url, **options)


class Load:
    """Acked audit publishes and gateway requests, without pause, in a thread, until stopped: what
    the stack's clients see while a backup runs."""

    def __init__(self, nats_url: str) -> None:
        self.nats_url = nats_url
        self.acked: dict[int, bytes] = {}
        self.answered = 0
        self.failures: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        client = await connect(self.nats_url)
        js = client.jetstream(timeout=5)
        try:
            while not self.stop.is_set():
                data = os.urandom(PAYLOAD)
                try:
                    ack = await js.publish("nachos.audit.log", data)
                    self.acked[ack.seq] = data
                    reply = await client.request("nachos.gateway.subagents.list", b"{}", timeout=5)
                    assert json.loads(reply.data) == {"ok": True, "runs": []}
                    self.answered += 1
                except Exception as exc:  # every failure is counted, none may happen
                    self.failures.append(repr(exc))
        finally:
            await client.close()

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


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
    manifest = archive.read(path).manifest
    assert manifest["project"] == made.project and manifest["credentials"] is False
    assert not any(name.startswith("credentials/") for name in manifest["members"])

    copy = Project(tmp_path, "copy")
    try:
        done = copy.run("restore", str(path), "--json")
        assert done.returncode == 0, done.stderr[-3000:]
        restored = json.loads(done.stdout)
        assert restored["verified"] is True
        assert restored["streams"]["AUDIT"] == {k: stream[k] for k in ("first_seq", "last_seq", "messages")}
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


def tampered(path: Path, member: str, into: Path) -> Path:
    """A copy of the archive with one byte of ``member``'s data changed (its size kept)."""
    shutil.copy(path, into)
    with tarfile.open(path) as tar:
        offset = tar.getmember(member).offset_data
    with into.open("r+b") as handle:
        handle.seek(offset + 100)
        byte = handle.read(1)
        handle.seek(offset + 100)
        handle.write(bytes([byte[0] ^ 0xFF]))
    return into


@pytest.mark.engine
def test_a_tampered_archive_is_refused_before_anything_is_touched(source: Source, tmp_path: Path) -> None:
    _, _, path, _ = source
    bad = tampered(path, "gateway/database.sqlite", tmp_path / "bad.tar")
    with pytest.raises(ArchiveError, match=r"member gateway/database\.sqlite fails its checksum"):
        archive.read(bad)
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
    finally:
        compose_down(target.project)


def test_the_archive_is_written_whole_or_not_at_all(tmp_path: Path) -> None:
    members = {"a": b"x" * 10, "b": io.BytesIO(b"y").getvalue()}
    path = tmp_path / "out.tar"
    archive.write(path, {"project": "p"}, members)
    assert archive.read(path).members == members
    assert path.stat().st_mode & 0o777 == 0o600

    class Boom(dict[str, bytes]):
        """Fails while the tar is being written (its second look at the members)."""

        calls = 0

        def items(self) -> Any:
            Boom.calls += 1
            yield "a", b"x"
            if Boom.calls > 1:
                raise RuntimeError("disk gone")

    with pytest.raises(RuntimeError):
        archive.write(tmp_path / "half.tar", {}, Boom(a=b"x"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.tar"]  # no half file, no temporary


def test_a_changed_byte_is_refused_naming_the_member(tmp_path: Path) -> None:
    path = tmp_path / "a.tar"
    archive.write(path, {"project": "p"}, {"streams/AUDIT.snapshot": bytes(range(256)) * 4, "b": b"y" * 300})
    bad = tampered(path, "streams/AUDIT.snapshot", tmp_path / "bad.tar")
    with pytest.raises(ArchiveError, match=r"bad\.tar: member streams/AUDIT\.snapshot fails its checksum"):
        archive.read(bad)
    assert archive.read(path).manifest["project"] == "p"


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
    members: dict[str, bytes] = {}
    modes = backup._credentials(SimpleNamespace(output_dir=source), members)  # type: ignore[arg-type]
    assert sorted(members) == ["credentials/state.env", "credentials/state/users.acl"]
    path = tmp_path / "with.tar"
    archive.write(path, {"credential_modes": modes}, members)

    copy = tmp_path / "copy"
    found = archive.read(path)
    assert restore._credentials(SimpleNamespace(output_dir=copy), found) is True  # type: ignore[arg-type]
    assert (copy / "credentials" / "state.env").read_text() == "NACHOS_STATE_GATEWAY_PASSWORD=a1\n"
    assert (copy / "credentials" / "state.env").stat().st_mode & 0o777 == 0o600
    assert (copy / "credentials" / "state").stat().st_mode & 0o777 == 0o711
    assert (copy / "credentials" / "state" / "users.acl").stat().st_mode & 0o777 == 0o644
    # A folder's own credentials are never replaced.
    (copy / "credentials" / "state.env").write_text("mine\n")
    assert restore._credentials(SimpleNamespace(output_dir=copy), found) is False  # type: ignore[arg-type]
    assert (copy / "credentials" / "state.env").read_text() == "mine\n"
