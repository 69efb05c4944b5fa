"""Compose run as its own program, without the docker CLI in front (docker/compose_program.py).

Only where the docker CLI would run that very program with the same arguments; anything else keeps
``docker compose``. Compiled stand-ins play the parts (``true`` for the docker CLI, ``echo`` for
Compose, so a call shows the arguments Compose got); scripts play the wrappers the rule must not
bypass. The real engine's tests run every Compose call through the direct way.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from nachos_deploy.docker import compose_program, runner
from nachos_deploy.docker.runner import DockerFailure


def compiled(name: str) -> Path:
    found = shutil.which(name)
    assert found is not None, name
    path = Path(found).resolve()
    assert path.read_bytes()[:4] == b"\x7fELF", f"{path} is not a compiled program on this machine"
    return path


def install(source: Path | str, target: Path) -> Path:
    """A program at ``target``: a copy of a compiled one, or a script's text."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(source, Path):
        shutil.copy(source, target)
    else:
        target.write_text(source)
    target.chmod(0o755)
    return target


@dataclass
class Machine:
    bin: Path
    config: Path  # DOCKER_CONFIG
    system: Path  # the first of the system's plugin folders

    @property
    def user_plugin(self) -> Path:
        return self.config / "cli-plugins" / "docker-compose"

    def program(self, *args: str) -> list[str]:
        return compose_program.program(["docker", *args], os.environ)


@pytest.fixture
def machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Machine]:
    """The docker CLI (compiled) on PATH and Compose in the configuration folder's cli-plugins."""
    found = Machine(tmp_path / "bin", tmp_path / "docker-config", tmp_path / "system-plugins")
    install(compiled("true"), found.bin / "docker")
    install(compiled("echo"), found.user_plugin)
    monkeypatch.setenv("PATH", f"{found.bin}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("DOCKER_CONFIG", str(found.config))
    monkeypatch.delenv(compose_program.PLUGIN_MODE_VARIABLE, raising=False)
    monkeypatch.setattr(compose_program, "SYSTEM_PLUGIN_DIRS", (str(found.system), "/nonexistent"))
    yield found


def test_a_compose_call_runs_composes_program_with_the_arguments_the_cli_would_hand_it(
    machine: Machine,
) -> None:
    said = runner.output(["docker", "compose", "--file", "-", "-p", "x", "config"])
    assert said == "--file - -p x config\n"
    streamed = list(runner.stream(["docker", "compose", "--project-name", "x", "logs", "-f"]))
    assert streamed == ["--project-name x logs -f\n"]
    assert machine.program("ps") == ["docker", "ps"]  # only Compose has a program of its own


def test_a_failure_names_the_command_as_written(machine: Machine) -> None:
    install(compiled("false"), machine.user_plugin)
    with pytest.raises(DockerFailure) as caught:
        runner.run(["docker", "compose", "--file", "f", "up"])
    assert caught.value.argv == ("docker", "compose", "--file", "f", "up")


def test_the_plugin_is_the_first_where_the_docker_cli_looks(machine: Machine) -> None:
    system = install(compiled("true"), machine.system / "docker-compose")
    assert machine.program("compose", "up") == [str(machine.user_plugin), "up"]
    machine.user_plugin.unlink()
    assert machine.program("compose", "up") == [str(system), "up"]
    system.unlink()
    assert machine.program("compose", "up") == ["docker", "compose", "up"]


@pytest.mark.parametrize(
    "args",
    [
        ["compose", "--context", "remote", "up"],
        ["compose", "-H", "tcp://elsewhere:2375", "ps"],
        ["compose", "--file", "-", "-v"],  # Compose's standalone mode reads -v here as `version`
        ["compose", "--verbose", "up"],
    ],
)
def test_a_flag_compose_alone_would_rewrite_keeps_the_cli(machine: Machine, args: list[str]) -> None:
    assert machine.program(*args) == ["docker", *args]


def test_a_flag_after_the_subcommand_is_composes_own(machine: Machine) -> None:
    args = ["--file", "f", "down", "-v", "--context", "x"]
    assert machine.program("compose", *args) == [str(machine.user_plugin), *args]


def test_a_wrapper_named_docker_is_never_bypassed(machine: Machine) -> None:
    install('#!/bin/sh\necho "wrapped $*"\n', machine.bin / "docker")  # podman's, or a logging shim
    assert machine.program("compose", "up") == ["docker", "compose", "up"]
    assert runner.output(["docker", "compose", "up"]) == "wrapped compose up\n"


def test_a_link_named_docker_counts_only_when_it_leads_to_a_docker(machine: Machine) -> None:
    (machine.bin / "docker").unlink()
    (machine.bin / "docker").symlink_to(compiled("true"))  # as snap's /snap/bin/docker -> snap
    assert machine.program("compose", "up") == ["docker", "compose", "up"]
    (machine.bin / "docker").unlink()
    (machine.bin / "docker").symlink_to(install(compiled("true"), machine.bin / "cli" / "docker"))
    assert machine.program("compose", "up") == [str(machine.user_plugin), "up"]


def test_plugins_the_cli_would_find_elsewhere_or_vet_keep_the_cli(
    machine: Machine, monkeypatch: pytest.MonkeyPatch
) -> None:
    (machine.config / "config.json").write_text('{"cliPluginsExtraDirs": ["/opt/plugins"]}')
    assert machine.program("compose", "up") == ["docker", "compose", "up"]
    (machine.config / "config.json").write_text('{"currentContext": "default"}')
    assert machine.program("compose", "up") == [str(machine.user_plugin), "up"]
    install("#!/bin/sh\necho plugin\n", machine.user_plugin)  # a script: the CLI vets it first
    assert machine.program("compose", "up") == ["docker", "compose", "up"]
    install(compiled("echo"), machine.user_plugin).chmod(0o644)  # not executable
    assert machine.program("compose", "up") == ["docker", "compose", "up"]
    install(compiled("echo"), machine.user_plugin)
    monkeypatch.setenv(compose_program.PLUGIN_MODE_VARIABLE, "docker")  # run by the CLI as a plugin
    assert machine.program("compose", "up") == ["docker", "compose", "up"]


def test_a_plugin_gone_since_it_was_found_falls_back_to_the_cli(
    machine: Machine, monkeypatch: pytest.MonkeyPatch
) -> None:
    install('#!/bin/sh\necho "cli $*"\n', machine.bin / "docker")
    gone = str(machine.config / "gone" / "docker-compose")
    monkeypatch.setattr(compose_program, "program", lambda argv, environ: [gone, *argv[2:]])
    assert runner.output(["docker", "compose", "up"]) == "cli compose up\n"
    assert list(runner.stream(["docker", "compose", "logs"])) == ["cli compose logs\n"]
