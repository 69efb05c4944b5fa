"""nachos_deploy.io.checked_tar, the one tar-with-a-manifest that backups and bundles are: every way
an archive can be wrong is refused, naming the file and the member, before anything is used, and a
write is whole or absent."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from nachos_deploy.core.errors import ArchiveError, ExitCode, OutputError
from nachos_deploy.io import checked_tar
from tests import archives
from tests.archives import KIND, tampered

MEMBERS = {"big/stream.snapshot": bytes(range(256)) * 64, "small": b"y" * 300, "empty": b""}


@pytest.fixture
def good(tmp_path: Path) -> Path:
    return archives.write(tmp_path / "a.tar", MEMBERS, {"project": "p"})


def rewritten(
    source: Path, into: Path, change: Callable[[list[tuple[tarfile.TarInfo, bytes]]], None]
) -> Path:
    """A copy of ``source`` whose (member, data) list ``change`` edits in place; the manifest is
    the first item and stays as it was unless ``change`` replaces it."""
    with tarfile.open(source) as tar:
        items = []
        for info in tar.getmembers():
            handle = tar.extractfile(info)
            items.append((info, handle.read() if handle is not None else b""))
    change(items)
    with tarfile.open(into, "w", format=tarfile.PAX_FORMAT) as out:
        for info, data in items:
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))
    return into


def relisted(items: list[tuple[tarfile.TarInfo, bytes]], edit: Callable[[dict[str, Any]], None]) -> None:
    """Edit the manifest (the first item) of ``items``."""
    info, data = items[0]
    manifest = json.loads(data)
    edit(manifest)
    items[0] = (info, json.dumps(manifest).encode())


def refusal(path: Path, into: Path | None = None) -> str:
    with pytest.raises(ArchiveError) as caught:
        if into is None:
            checked_tar.verify(path, KIND)
        else:
            checked_tar.extract(path, into, KIND)
    assert caught.value.exit_code == ExitCode.ARCHIVE == 9
    assert str(path) in caught.value.message and "Nothing was used." in caught.value.message
    return caught.value.message


def test_members_read_back_byte_for_byte_after_the_manifest_and_the_same_content_gives_the_same_bytes(
    good: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    found = checked_tar.extract(good, out, KIND)
    assert found.manifest["project"] == "p" and found.manifest["format"] == checked_tar.FORMAT
    assert found.names == sorted(MEMBERS)
    assert {name: found.read(name) for name in MEMBERS} == MEMBERS
    assert (out / "small").stat().st_mode & 0o777 == 0o600
    assert checked_tar.verify(good, KIND) == found.manifest
    (tmp_path / "outside").write_bytes(b"host file")
    with pytest.raises(ArchiveError, match=r"member \.\./outside is missing"):
        found.read("../outside")  # a name from elsewhere in the manifest reads only verified members
    with tarfile.open(good) as tar:
        infos = tar.getmembers()
    assert infos[0].name == checked_tar.MANIFEST and {i.mtime for i in infos} == {0}
    again = archives.write(tmp_path / "again" / "a.tar", MEMBERS, {"project": "p"})
    assert again.read_bytes() == good.read_bytes()


def test_one_byte_changed_is_refused_naming_the_member_and_nothing_is_handed_on(
    good: Path, tmp_path: Path
) -> None:
    bad = tampered(good, "big/stream.snapshot", tmp_path / "bad.tar")
    message = refusal(bad)
    assert "member big/stream.snapshot fails its checksum" in message
    assert "member big/stream.snapshot fails its checksum" in refusal(bad, tmp_path / "out")


def test_a_member_dropped_is_refused_naming_it(good: Path, tmp_path: Path) -> None:
    bad = rewritten(good, tmp_path / "bad.tar", lambda items: items.pop())
    assert "member small is missing (the manifest lists it)" in refusal(bad)


def test_a_member_added_is_refused_naming_it(good: Path, tmp_path: Path) -> None:
    bad = rewritten(
        good, tmp_path / "bad.tar", lambda items: items.append((tarfile.TarInfo("evil.sh"), b"x"))
    )
    assert "member evil.sh is not in the manifest" in refusal(bad)


def test_a_member_of_another_size_is_refused_even_with_its_sha256_listed(good: Path, tmp_path: Path) -> None:
    def longer(items: list[tuple[tarfile.TarInfo, bytes]]) -> None:
        items[-1] = (items[-1][0], items[-1][1] + b"!")

    assert "member small fails its checksum" in refusal(rewritten(good, tmp_path / "bad.tar", longer))


@pytest.mark.parametrize("name", ["../escape", "ABSOLUTE", "a/../../escape"])
def test_a_name_that_leaves_the_folder_is_refused_before_anything_is_written(
    good: Path, tmp_path: Path, name: str
) -> None:
    data = b"owned\n"
    if name == "ABSOLUTE":  # under tmp_path, so that a broken check writes nowhere else
        name = str(tmp_path / "escape")

    def escape(items: list[tuple[tarfile.TarInfo, bytes]]) -> None:
        sha = checked_tar.hashlib.sha256(data).hexdigest()
        relisted(items, lambda m: m["members"].__setitem__(name, {"sha256": sha, "size": len(data)}))
        items.insert(1, (tarfile.TarInfo(name), data))

    bad = rewritten(good, tmp_path / "bad.tar", escape)
    into = tmp_path / "deep" / "out"
    assert f"member {name} has a name that leaves the folder" in refusal(bad, into)
    assert not (tmp_path / "deep" / "escape").exists() and not (tmp_path / "escape").exists()
    with pytest.raises(ValueError):
        checked_tar.write(tmp_path / "w.tar", {name: tmp_path / "a.tar"}, {}, mode=0o600, kind=KIND)


def test_a_newer_format_is_refused_rather_than_misread(good: Path, tmp_path: Path) -> None:
    newer = checked_tar.FORMAT + 1
    bad = rewritten(
        good, tmp_path / "bad.tar", lambda items: relisted(items, lambda m: m.update(format=newer))
    )
    assert f"member manifest.json is of format {newer}, newer than" in refusal(bad)


def test_no_manifest_a_cut_file_and_no_file_are_refused(good: Path, tmp_path: Path) -> None:
    headless = rewritten(good, tmp_path / "headless.tar", lambda items: items.pop(0))
    assert "member manifest.json is missing" in refusal(headless)
    cut = tmp_path / "cut.tar"
    cut.write_bytes(good.read_bytes()[:9000])  # inside big/stream.snapshot
    assert "is cut short or damaged" in refusal(cut)
    assert "no such file" in refusal(tmp_path / "none.tar")


@pytest.mark.parametrize("failure", [RuntimeError("interrupted"), OSError(28, "No space left on device")])
def test_an_interrupted_write_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: BaseException
) -> None:
    sources = archives.sources(tmp_path / "src", MEMBERS)
    target = tmp_path / "out" / "a.tar"
    checked_tar.write(target, sources, {"n": 1}, mode=0o644, kind=KIND)
    before = target.read_bytes()
    added = tarfile.TarFile.addfile

    def addfile(self: tarfile.TarFile, info: tarfile.TarInfo, fileobj: Any = None) -> None:
        if info.name != checked_tar.MANIFEST:
            raise failure
        added(self, info, fileobj)

    monkeypatch.setattr(tarfile.TarFile, "addfile", addfile)
    with pytest.raises(OutputError if isinstance(failure, OSError) else RuntimeError) as caught:
        checked_tar.write(target, sources, {"n": 2}, mode=0o644, kind=KIND)
    if isinstance(failure, OSError):
        assert str(target) in str(caught.value.message) and "nothing was left there" in caught.value.message
    assert [p.name for p in target.parent.iterdir()] == ["a.tar"]  # no temporary left
    assert target.read_bytes() == before  # the previous archive untouched
    with pytest.raises((OutputError, RuntimeError)):
        checked_tar.write(tmp_path / "new" / "b.tar", sources, {}, mode=0o600, kind=KIND)
    assert list((tmp_path / "new").iterdir()) == []
