"""Hostile and odd input: each case ends in one clear message with a documented exit code, no
traceback, and nothing written. (The start of issue 9's corpus.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from nachos_deploy.cli import app

runner = CliRunner()
DEEP = 5000

DEPLOY_FILES = {
    "bad-date": ("project: 2024-13-45\n", "a value cannot be read"),
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
