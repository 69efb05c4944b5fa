"""Hostile and odd input: each case ends in one clear message with a documented exit code, no
traceback, and nothing written. (The start of issue 9's corpus.)"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nachos_deploy.interfaces.cli import app
from tests.conftest import unavailable

runner = CliRunner()
DEEP = 5000

DEPLOY_FILES = {
    "bad-date": ("project: !!timestamp 2024-13-45\n", "a value cannot be read"),
    "bad-int-tag": ("project: !!int abc\n", "a value cannot be read"),
    "huge-int": ("bus:\n  client_port: " + "9" * 5000 + "\n", "a value cannot be read"),
    "deep-list": ("bus: " + "[" * DEEP + "]" * DEEP + "\n", "nested too deeply"),
    "deep-map": ("a: " + "{b: " * DEEP + "1" + "}" * DEEP + "\n", "nested too deeply"),
    "duplicate-key": ("components: {}\nbus: {}\ncomponents: {}\n", "appears twice"),
    "duplicate-nested": ("bus:\n  client_port: 1\n  client_port: 2\n", "appears twice"),
    "bool-port": ("bus: {client_port: true}\n", "must be a number, not true/false"),
    "bool-pids": ("components: {x: {image: x, resources: {pids: true}}}\n", "must be a number"),
    "list-document": ("- a\n- b\n", "must be a mapping"),
    "binary": ("project: !!binary AAAA\n", "project"),
    "python-tag": ("project: !!python/object:os.system ls\n", "not valid YAML"),
    "tab-indent": ("bus:\n\tclient_port: 1\n", "not valid YAML"),
    "markup-in-key": ("components: {'[/]': {image: x}}\n", "[/]"),
    "markup-in-value": ("project: '[bold]x[/]'\n", "[bold]x[/]"),
}


@pytest.mark.parametrize("name", sorted(DEPLOY_FILES))
def test_a_hostile_deploy_file_is_one_clear_error(workdir: Path, name: str) -> None:
    text, expected = DEPLOY_FILES[name]
    (workdir / "nachos-deploy.yaml").write_text(text)
    for command in ("render", "validate", "down"):
        result = runner.invoke(app, [command])
        assert result.exit_code == 3, (command, result.output)
        assert result.exception is None or isinstance(result.exception, SystemExit)
        message = " ".join(result.stderr.split())
        assert expected in message, message
        assert "Traceback" not in result.stderr and len(result.stderr) < 3000
    assert not (workdir / ".nachos").exists()


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (["--set", "bus.client_port=" + "[" * DEEP], {}, "client_port"),
        (["--set", "bus=" + "{a: " * DEEP], {}, "bus"),
        (["--set", "project=[/]"], {}, "[/]"),
        ([], {"NACHOS_DEPLOY_BUS__CLIENT_PORT": "[" * DEEP + "]" * DEEP}, "client_port"),
        ([], {"NACHOS_DEPLOY_PROJECT": "[/x]"}, "[/x]"),
        (["--set", "bus.client_port=true"], {}, "must be a number"),
    ],
)
def test_hostile_overrides_are_one_clear_error(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], env: dict[str, str], expected: str
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for command in ("render", "down"):
        result = runner.invoke(app, [command, *args])
        assert result.exit_code == 3, (command, result.output[-500:])
        message = " ".join(result.stderr.split())
        assert expected in message and "Traceback" not in message and len(message) < 3000
    assert not (workdir / ".nachos").exists()


def test_an_oversized_deploy_file_is_not_read(workdir: Path) -> None:
    (workdir / "nachos-deploy.yaml").write_text("# padding\n" * 200_000)  # 2 MB
    result = runner.invoke(app, ["validate"])
    assert result.exit_code == 3 and "at most 1048576 are read" in " ".join(result.stderr.split())


def test_a_deeply_nested_nachos_toml_is_one_clear_error(workdir: Path) -> None:
    (workdir / "nachos.toml").write_text("a = " + "[" * 3000 + "]" * 3000 + "\n")
    (workdir / "nachos-deploy.yaml").write_text("project: deep\n")
    result = runner.invoke(app, ["render"])
    assert result.exit_code == 3, result.output[-500:]
    assert "nested too deeply" in result.stderr and "Traceback" not in result.stderr
    assert not (workdir / ".nachos").exists()


def test_a_folder_named_like_markup_is_shown_as_it_is(workdir: Path) -> None:
    folder = workdir / "[prod]"
    folder.mkdir()
    (folder / "nachos-deploy.yaml").write_text("project: [\n")
    result = runner.invoke(app, ["render", "-c", str(folder / "nachos-deploy.yaml")])
    assert result.exit_code == 3
    assert "[prod]" in result.stderr.replace("\n", "")


# --- the output folder: what stands where the rendered files go --------------------------------


def _render(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["render", *args])
    assert "Traceback" not in result.stderr
    return result.exit_code, " ".join(result.stderr.split())


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_folder_where_a_rendered_file_goes_changes_nothing(workdir: Path) -> None:
    (workdir / "nachos-deploy.yaml").write_text("project: first\n")
    assert _render()[0] == 0
    before = _tree(workdir / ".nachos")
    (workdir / ".nachos" / "nats.conf").unlink()
    (workdir / ".nachos" / "nats.conf").mkdir()
    (workdir / "nachos-deploy.yaml").write_text("project: second\n")
    code, message = _render()
    assert code == 7, message
    assert "nats.conf is a folder" in message and "Nothing was written" in message
    before.pop("nats.conf")
    assert _tree(workdir / ".nachos") == before, "a file was replaced although the write was refused"
    assert [p.name for p in (workdir / ".nachos").iterdir() if "staging" in p.name] == []


def test_a_symlinked_output_file_is_replaced_not_written_through(workdir: Path) -> None:
    (workdir / "nachos-deploy.yaml").write_text("project: linked\n")
    assert _render()[0] == 0
    outside = workdir / "precious.yml"
    outside.write_text("someone else's file\n")
    compose = workdir / ".nachos" / "docker-compose.yml"
    rendered = compose.read_text()
    compose.unlink()
    compose.symlink_to(outside)
    assert _render()[0] == 0
    assert not compose.is_symlink() and compose.read_text() == rendered
    assert outside.read_text() == "someone else's file\n"
    outside.write_text(rendered)  # a link to identical content is still replaced
    compose.unlink()
    compose.symlink_to(outside)
    assert _render()[0] == 0 and not compose.is_symlink()


def test_an_output_folder_that_is_a_file_is_one_clear_error(workdir: Path) -> None:
    (workdir / ".nachos").write_text("a file")
    code, message = _render()
    assert code == 7 and "is a file, not a folder" in message
    assert (workdir / ".nachos").read_text() == "a file"


@pytest.fixture
def mounted(workdir: Path) -> Iterator[Callable[[str], Path]]:
    """Mount small tmpfs file systems (root only) and unmount them after the test."""
    if os.geteuid() != 0:
        unavailable("mounting a file system needs root; run the tests as root (CI does)")
    points: list[Path] = []

    def mount(options: str) -> Path:
        point = workdir / f"mnt{len(points)}"
        point.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size=1m,{options}", "tmpfs", str(point)], check=True)
        points.append(point)
        return point

    yield mount
    for point in reversed(points):
        subprocess.run(["umount", str(point)], check=False)


def test_an_output_folder_that_is_a_mount_point_is_written(
    workdir: Path, mounted: Callable[[str], Path]
) -> None:
    """Staged beside its parent, the files would cross file systems: rename fails with EXDEV."""
    (workdir / "nachos-deploy.yaml").write_text("project: mounted\n")
    point = mounted("rw")
    assert _render("--output", str(point)) == (0, "")
    assert (point / "docker-compose.yml").is_file()
    (workdir / "nachos-deploy.yaml").write_text("project: mounted-again\n")
    assert _render("--output", str(point))[0] == 0
    assert "mounted-again" in (point / "docker-compose.yml").read_text()
    assert sorted(p.name for p in point.iterdir() if "staging" in p.name) == []


def test_an_output_folder_that_is_not_writable_is_exit_7(
    workdir: Path, mounted: Callable[[str], Path]
) -> None:
    (workdir / "nachos-deploy.yaml").write_text("project: readonly\n")
    point = mounted("ro")
    code, message = _render("--output", str(point))
    assert code == 7 and "Read-only file system" in message and "Nothing was changed" in message
    code, message = _render("--output", str(point / "sub"))
    assert code == 7 and "Read-only file system" in message
