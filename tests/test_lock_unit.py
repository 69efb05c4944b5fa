"""The image lock and the bundle file without the engine: parsing, pinning, comparing, checksums."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
import yaml

from nachos_deploy.core import image_lock
from nachos_deploy.core.errors import ArchiveError, ConfigError
from nachos_deploy.core.image_lock import ImageLock, LockedImage
from nachos_deploy.docker.images import _digest_of
from nachos_deploy.interfaces import api
from nachos_deploy.io import checked_tar
from nachos_deploy.lifecycle.bundle import BUNDLE
from tests import archives
from tests.archives import tampered

ID_A = "sha256:" + "a" * 64
ID_B = "sha256:" + "b" * 64
DIGEST = "sha256:" + "d" * 64
PROBE = "nachos-deploy/probe:latest"


def deploy(folder: Path, **extra: object) -> Path:
    document = {
        "project": "h21l-unit",
        "state": {"enabled": False},
        "components": {"gateway": {"image": PROBE}, "llm-proxy": {"enabled": False}},
        **extra,
    }
    path = folder / "nachos-deploy.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


def full_lock(digest_for_bus: str | None = DIGEST) -> ImageLock:
    bus = LockedImage("nats:alpine", ID_A, digest_for_bus)
    return ImageLock(
        {
            "bus": bus,
            "bus-ports": bus,
            "bus-gateway": bus,
            "volume-init": bus,
            "gateway": LockedImage(PROBE, ID_B, None),
        }
    )


def test_the_lock_file_is_deterministic_sorted_and_reads_back() -> None:
    lock = full_lock()
    text = image_lock.dumps(lock)
    assert text == image_lock.dumps(ImageLock(dict(reversed(list(lock.services.items())))))
    document = json.loads(text)
    assert document["format"] == image_lock.LOCK_FORMAT
    assert "nachos-deploy lock" in document["generated_by"]
    assert list(document["services"]) == sorted(document["services"])
    assert image_lock.loads(text, "x.lock") == lock


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("{", "not valid JSON"),
        ('{"format": 2, "services": {}}', "format 2"),
        ('{"format": 1}', "no `services`"),
        ('{"format": 1, "services": {"bus": {"image": "nats", "id": "abc"}}}', "services.bus.id"),
        (
            '{"format": 1, "services": {"bus": {"image": "nats", "id": "' + ID_A + '", "digest": "md5:1"}}}',
            "services.bus.digest",
        ),
    ],
)
def test_a_broken_lock_is_a_config_error_naming_file_and_key(text: str, named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        image_lock.loads(text, "/d/nachos-deploy.lock")
    assert "/d/nachos-deploy.lock" in caught.value.message
    assert named in caught.value.message
    assert "nachos-deploy lock" in caught.value.message


@pytest.mark.parametrize(
    ("reference", "repository"),
    [
        ("nats:alpine", "nats"),
        ("nats", "nats"),
        ("registry.local:5000/team/gateway:1.4", "registry.local:5000/team/gateway"),
        ("registry.local:5000/team/gateway", "registry.local:5000/team/gateway"),
        (f"ghcr.io/x/y:1@{DIGEST}", "ghcr.io/x/y"),
    ],
)
def test_repository_drops_tag_and_digest_but_not_a_registry_port(reference: str, repository: str) -> None:
    assert image_lock.repository(reference) == repository


def test_the_digest_is_the_one_of_the_references_own_repository() -> None:
    other = "sha256:" + "e" * 64
    digests = [f"mirror.local/nats@{other}", f"nats@{DIGEST}"]
    assert _digest_of("nats:alpine", digests) == DIGEST
    assert _digest_of("docker.io/library/nats:alpine", digests) == DIGEST
    assert _digest_of("mirror.local/nats:alpine", digests) == other
    assert _digest_of("nachos/gateway:1", digests) is None  # pushed elsewhere says nothing of this one
    assert _digest_of(f"nats@{DIGEST}", []) == DIGEST


def test_render_pins_every_service_of_a_locked_digest_on_compose_and_swarm(tmp_path: Path) -> None:
    path = deploy(tmp_path)
    unlocked = api.load(path)
    assert all("@sha256" not in text for text in unlocked.files.values())
    (tmp_path / image_lock.LOCK_FILE).write_text(image_lock.dumps(full_lock()), encoding="utf-8")
    stack = api.load(path)
    compose = yaml.safe_load(stack.files["docker-compose.yml"])["services"]
    pinned = f"nats@{DIGEST}"
    for name in ("bus", "bus-ports", "bus-gateway", "volume-init"):
        assert compose[name]["image"] == pinned, name
    assert compose["gateway"]["image"] == PROBE  # a local build: no digest, locked by id
    swarm = api.load(path, sets=["target=swarm"])
    stack_files = [
        yaml.safe_load(text) for name, text in swarm.files.items() if name.startswith("docker-stack")
    ]
    images = {s["image"] for document in stack_files for s in document["services"].values()}
    assert images == {pinned, PROBE}


def test_a_service_whose_image_changed_is_not_pinned_and_is_a_difference(tmp_path: Path) -> None:
    path = deploy(tmp_path, bus={"image": "nats:2.10"})
    (tmp_path / image_lock.LOCK_FILE).write_text(image_lock.dumps(full_lock()), encoding="utf-8")
    stack = api.load(path)
    assert stack.plan.bus.service.image == "nats:2.10"
    present = {"nats:2.10": (ID_A, None), PROBE: (ID_B, None)}
    found = image_lock.differences(stack.plan, full_lock(), present)
    assert {(d.service, d.problem) for d in found} == {
        (name, "changed in the configuration") for name in ("bus", "bus-ports", "bus-gateway", "volume-init")
    }
    assert "nats:2.10" in found[0].describe() and "nats:alpine" in found[0].describe()
    # `lock` resolves the configured references again, not the pinned ones
    assert ("bus", "nats:2.10") in image_lock.configured_services(stack.plan, full_lock())


def test_differences_name_a_changed_id_a_missing_image_and_a_service_not_locked(tmp_path: Path) -> None:
    path = deploy(
        tmp_path,
        components={
            "gateway": {"image": PROBE},
            "llm-proxy": {"enabled": False},
            "chat": {"role": "channel", "image": PROBE},
        },
    )
    lock = full_lock(digest_for_bus=None)
    plan = api.load(path).plan
    same = {"nats:alpine": (ID_A, None), PROBE: (ID_B, None)}
    assert {(d.service, d.problem) for d in image_lock.differences(plan, lock, same)} == {
        ("chat", "not in the lock"),
        ("bus-chat", "not in the lock"),
    }
    lock = ImageLock({**lock.services, "chat": lock.services["gateway"], "bus-chat": lock.services["bus"]})
    assert image_lock.differences(plan, lock, same) == []
    rebuilt = {"nats:alpine": (ID_A, None), PROBE: ("sha256:" + "c" * 64, None)}
    found = image_lock.differences(plan, lock, rebuilt)
    assert {d.service for d in found} == {"gateway", "chat"}
    text = found[0].describe()
    assert ID_B in text and "sha256:" + "c" * 64 in text and PROBE in text
    missing = image_lock.differences(plan, lock, {"nats:alpine": (ID_A, None), PROBE: None})
    assert {d.problem for d in missing} == {"missing"}


def test_a_broken_lock_beside_the_deploy_file_stops_loading_with_exit_3(tmp_path: Path) -> None:
    path = deploy(tmp_path)
    (tmp_path / image_lock.LOCK_FILE).write_text("not json", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid JSON"):
        api.load(path)
    unpinned = api.load(path, strict_lock=False)  # what `down`, `status` and `lock` read
    assert unpinned.lock is None and unpinned.lock_error is not None
    assert "not valid JSON" in unpinned.lock_error and image_lock.LOCK_FILE in unpinned.lock_error


def test_a_broken_lock_warns_but_does_not_stop_down_or_status_and_lock_rewrites_it(tmp_path: Path) -> None:
    """Before: every command of the folder, `down` included, stopped at the lock with exit 3. Nothing
    runs here, so `down` and `status` report that; what counts is that they get there."""
    from typer.testing import CliRunner

    from nachos_deploy.interfaces.cli import app

    path = deploy(tmp_path, output=str(tmp_path / "out"))
    (tmp_path / image_lock.LOCK_FILE).write_text("not json", encoding="utf-8")
    runner = CliRunner()
    for command in (["down"], ["status"]):
        result = runner.invoke(app, [*command, "-c", str(path), "-p", "h21l-broken-lock"])
        assert result.exit_code != 3, result.output
        assert "warning: The image lock" in result.output and "goes on without it" in result.output
    refused = runner.invoke(app, ["render", "-c", str(path)])
    assert refused.exit_code == 3 and "not valid JSON" in refused.output


# -- the bundle file -------------------------------------------------------------------------------


def bundle(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    members = {
        "images.tar": bytes(range(256)) * 400,
        "nachos-deploy.lock": b"{}\n",
        "rendered/a.yml": b"a: 1\n",
    }
    target = archives.write(tmp_path / "b.tar", members, {"project": "p"}, mode=0o644, kind=BUNDLE)
    return target, members


def test_a_bundle_reads_back_member_for_member(tmp_path: Path) -> None:
    target, members = bundle(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    manifest = checked_tar.extract(target, out, BUNDLE).manifest
    assert manifest["project"] == "p"
    assert {name: (out / name).read_bytes() for name in members} == members
    assert list(tmp_path.glob(".b.tar*")) == []  # no temporary file left
    assert target.stat().st_mode & 0o777 == 0o644  # a bundle holds no secret


def test_one_byte_changed_is_refused_naming_the_file_and_the_member(tmp_path: Path) -> None:
    target, _ = bundle(tmp_path)
    tampered(target, "images.tar")
    with pytest.raises(ArchiveError) as caught:
        checked_tar.extract(target, tmp_path, BUNDLE)
    assert "member images.tar" in caught.value.message and str(target) in caught.value.message
    assert "sha256" in caught.value.message and "Nothing was loaded" in caught.value.message


def test_a_member_not_in_the_manifest_or_missing_or_a_cut_file_is_refused(tmp_path: Path) -> None:
    target, _ = bundle(tmp_path)
    with tarfile.open(target, "a") as tar:
        data = b"extra"
        info = tarfile.TarInfo("evil.sh")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(ArchiveError, match=r"evil\.sh"):
        checked_tar.extract(target, tmp_path, BUNDLE)
    target, _ = bundle(tmp_path)
    cut = tmp_path / "cut.tar"
    cut.write_bytes(target.read_bytes()[:60000])
    with pytest.raises(ArchiveError, match=r"cut\.tar"):
        checked_tar.extract(cut, tmp_path, BUNDLE)
    with pytest.raises(ArchiveError, match="no such file"):
        checked_tar.extract(tmp_path / "none.tar", tmp_path, BUNDLE)
