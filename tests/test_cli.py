from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from nachos_deploy import __version__
from nachos_deploy.interfaces.cli import app

runner = CliRunner()


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_version() -> None:
    code, out, _ = run("--version")
    assert code == 0
    assert out.strip() == f"nachos-deploy {__version__}"


@pytest.mark.parametrize(
    "command", ["render", "validate", "up", "down", "status", "logs", "doctor", "request"]
)
def test_every_command_has_help_with_an_example(command: str) -> None:
    code, out, _ = run(command, "--help")
    assert code == 0
    assert "Example" in out


def test_render_in_an_empty_folder(workdir: Path) -> None:
    code, _out, err = run("render")
    assert code == 0, err
    compose = yaml.safe_load((workdir / ".nachos" / "docker-compose.yml").read_text())
    assert set(compose["services"]) == {
        "bus",
        "bus-ports",
        "bus-gateway",
        "bus-llm-proxy",
        "gateway",
        "llm-proxy",
        "state",  # the gateway's Redis (docs/state-store.md)
        "volume-init",
    }
    assert compose["networks"]["nachos-internal"]["internal"] is True
    for port in compose["services"]["bus-ports"]["ports"]:
        assert port["host_ip"] == "127.0.0.1"
    assert "max_payload: 10MB" in (workdir / ".nachos" / "nats.conf").read_text()
    assert (workdir / ".nachos" / "nachos-gateway.toml").is_file()  # each component's own copy


def test_render_is_byte_identical_and_check_passes(workdir: Path) -> None:
    assert run("render")[0] == 0
    first = (workdir / ".nachos" / "docker-compose.yml").read_bytes()
    code, out, _ = run("render")
    assert code == 0 and "unchanged" in out
    assert (workdir / ".nachos" / "docker-compose.yml").read_bytes() == first
    code, out, _ = run("render", "--check")
    assert code == 0 and "up to date" in out


def test_check_names_the_files_that_differ_and_writes_nothing(workdir: Path) -> None:
    assert run("render")[0] == 0
    code, _, err = run("render", "--check", "--set", "components.gateway.user=0")
    assert code == 1
    assert "docker-compose.yml" in err and "nats.conf" not in err
    code, _, err = run("render", "--check", "--set", "bus.max_payload=1MB")
    assert code == 1
    assert "nats.conf" in err  # and the compose file, whose bus label carries the config's hash
    assert "max_payload: 10MB" in (workdir / ".nachos" / "nats.conf").read_text()
    assert "61000:61000" in (workdir / ".nachos" / "docker-compose.yml").read_text()


def test_check_on_a_missing_folder_fails(workdir: Path) -> None:
    code, _, err = run("render", "--check", "--output", "nowhere")
    assert code == 1 and "docker-compose.yml" in err
    assert not (workdir / "nowhere").exists()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("bus:\n  max_paylod: 1MB\n", "bus.max_paylod is not a known key"),
        ("bus:\n  max_payload: ten\n", "bus.max_payload: 'ten' is not a size"),
        ("bus:\n  client_port: 70000\n", "bus.client_port: must be a port number"),
        ("bus: [\n", "is not valid YAML at line"),
    ],
)
def test_bad_config_is_one_message_exit_3_no_traceback_no_files(
    workdir: Path, content: str, expected: str
) -> None:
    (workdir / "nachos-deploy.yaml").write_text(content)
    for command in ("render", "validate"):
        code, out, err = run(command)
        assert code == 3
        assert expected in " ".join(err.split())
        assert "nachos-deploy.yaml" in err
        assert "Traceback" not in err + out
    assert not (workdir / ".nachos").exists()
    assert [p.name for p in workdir.iterdir()] == ["nachos-deploy.yaml"]


def test_unwritable_output_is_exit_7(workdir: Path) -> None:
    (workdir / "file").write_text("not a folder")
    code, _, err = run("render", "--output", "file/sub")
    assert code == 7
    assert "Cannot write the rendered files" in err and "Nothing was changed" in err


def test_bad_set_syntax(workdir: Path) -> None:
    code, _, err = run("render", "--set", "nonsense")
    assert code == 3 and "key.path=value" in err


def test_warning_on_stderr_for_large_payload(workdir: Path) -> None:
    code, _, err = run("render", "--set", "bus.max_payload=12MB")
    assert code == 0
    assert "warning:" in err and "advises 8MB" in err


def test_validate_reports_compose_step(workdir: Path) -> None:
    code, out, err = run("validate")
    assert code == 0, err
    assert "Configuration is valid" in out
    assert re.search(r"Docker Compose [\d.]+ accepts|Skipped the Compose check", out)
    assert not (workdir / ".nachos").exists()


@pytest.fixture
def no_engine(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A Docker CLI pointed at a socket nobody listens on: the engine is unreachable, for real."""
    monkeypatch.setenv("DOCKER_HOST", f"unix://{workdir}/no-docker.sock")
    return workdir


def test_up_without_an_engine_is_exit_4_with_a_fix(no_engine: Path) -> None:
    code, out, err = run("up", "--json")
    assert code == 4
    assert "Traceback" not in out + err
    assert "scripts/install-engine.sh" in " ".join(err.split())
    assert "Cannot connect to the Docker daemon" in " ".join(err.split())  # Docker's reason, not the command
    document = json.loads(out)
    assert document["ok"] is False and document["exit_code"] == 4


def test_doctor_without_an_engine_fails_each_check_with_a_fix(no_engine: Path) -> None:
    code, out, _ = run("doctor", "--json")
    assert code == 1
    checks = {c["name"]: c for c in json.loads(out)["checks"]}
    assert checks["config"]["level"] == "pass"
    assert checks["engine"]["level"] == "fail" and checks["engine"]["fix"]


def test_status_and_down_without_an_engine(no_engine: Path) -> None:
    """status and down skip `docker version` (0.1 s) but give the same reason and fix."""
    for command in ("status", "down", "logs"):
        code, out, err = run(command)
        assert code == 4, (command, out, err)
        assert "Traceback" not in out + err
        if command != "logs":
            message = " ".join(err.split())
            assert "Cannot connect to the Docker daemon" in message and "install-engine.sh" in message


def test_a_file_render_no_longer_produces_is_removed_and_check_sees_it(workdir: Path) -> None:
    assert run("render", "--set", "components.filesystem.enabled=true")[0] == 0
    generated = workdir / ".nachos" / "nachos-filesystem.toml"
    sidecar = workdir / ".nachos" / "sidecar-filesystem.conf"
    assert generated.is_file() and sidecar.is_file()
    (workdir / ".nachos" / "notes.txt").write_text("mine")  # not ours: never touched
    # An older nachos-deploy rendered one nachos.toml for everyone: stale too.
    shared = workdir / ".nachos" / "nachos.toml"
    shared.write_text(generated.read_text())
    # The tool is disabled again: its copy of nachos.toml is now stale.
    code, _, err = run("render", "--check")
    assert code == 1 and "nachos-filesystem.toml" in err and "nachos.toml" in err
    assert "sidecar-filesystem.conf" in err
    assert run("render")[0] == 0
    assert not generated.exists() and not shared.exists() and not sidecar.exists()
    assert (workdir / ".nachos" / "notes.txt").read_text() == "mine"
    assert run("render", "--check")[0] == 0


def test_validate_reports_tool_ids(workdir: Path) -> None:
    code, out, _ = run("validate", "--set", "components.filesystem.enabled=true")
    assert code == 0
    assert "filesystem (tool id filesystem_read)" in out


def test_status_loads_no_nats_client(workdir: Path) -> None:
    # status reads the engine and the bus's HTTP monitoring only; the NATS client is for up/request.
    script = (
        "import sys; from typer.testing import CliRunner; from nachos_deploy.interfaces.cli import app; "
        "CliRunner().invoke(app, ['status']); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'nats'))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"


def test_status_and_help_load_only_what_they_use(workdir: Path) -> None:
    # python-on-whales (about 0.2 s to import) is for the Compose calls status never makes, and
    # `up --help` needs no pydantic (Typer's coercion of options not given is lazy).
    # `down` is Compose's down and two volume listings: neither python-on-whales nor nats-py.
    down = ["down", "-p", f"ndt-imports-{os.getpid()}"]
    cases = [(["status"], "python_on_whales"), (["up", "--help"], "pydantic")]
    cases += [(down, "python_on_whales"), (down, "nats")]
    for args, heavy in cases:
        script = (
            "import sys; from typer.testing import CliRunner; from nachos_deploy.interfaces.cli import app; "
            f"CliRunner().invoke(app, {args!r}); "
            f"print(sorted(m for m in sys.modules if m.split('.')[0] == {heavy!r}))"
        )
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
        )
        assert done.stdout.strip() == "[]", (args, done.stdout)


def test_the_lazy_option_coercion_is_active() -> None:
    # lazyparams patches a Typer internal (typer.core.build_runtime_param); pyproject pins Typer to
    # the tested range. A Typer that moved it would leave the patch a silent no-op (`up --help` 70-80
    # ms slower): this fails instead. In a fresh process, as the command line imports it.
    script = (
        "import typer.core; from typer._coercion import build_runtime_param as typers; "
        "from nachos_deploy.interfaces import cli; patched = typer.core.build_runtime_param; "
        "print(patched is not typers, patched.__module__)"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.split() == ["True", "nachos_deploy.interfaces.lazyparams"]


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["up", "--timeout", "soon"], "Invalid value for '--timeout': must be a number (got 'soon')"),
        (["up", "--timeout", "0"], "Invalid value for '--timeout': must be at least 1 (got '0')"),
        (["logs", "--tail", "-5"], "Invalid value for '--tail': must be at least 0 (got '-5')"),
        (
            ["env", "--format", "xml"],
            "Invalid value for '--format': 'xml' is not one of 'dotenv', 'json', 'shell'.",
        ),
    ],
)
def test_options_are_still_coerced_by_their_types_and_refused_in_plain_words(
    args: list[str], said: str
) -> None:
    # The lazy coercion builds Typer's own for a value given: a bad value is still refused, in the
    # words the deploy file's errors use, not pydantic's ("Input should be greater than or equal to 1").
    result = runner.invoke(app, args)
    output = " ".join(result.output.replace("│", " ").split())
    assert result.exit_code == 2 and said in output, result.output
    assert "Input should" not in output and "Value error" not in output


def test_the_pure_core_imports_no_edge() -> None:
    # config -> plan -> render touch no disk, engine, bus or terminal: they import none of those modules.
    script = (
        "import sys; import nachos_deploy.core.render, nachos_deploy.core.plan, "
        "nachos_deploy.core.platform_config, "
        "nachos_deploy.core.override, nachos_deploy.core.bus_placement; "
        "edges = ('python_on_whales', 'nats', 'rich', 'typer', 'nachos_deploy.io.loader', "
        "'nachos_deploy.io.files', 'nachos_deploy.docker.engine', 'nachos_deploy.io.stack', "
        "'nachos_deploy.docker.swarm'); "
        "print(sorted(m for m in sys.modules if m in edges or m.split('.')[0] in edges))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"


def test_doctor_warns_about_anything_weaker_than_the_defaults(workdir: Path) -> None:
    (workdir / "nachos-deploy.yaml").write_text(
        "bus: {auth: false}\ncomponents:\n  x: {image: x, read_only: false, user: '0:0'}\n"
    )
    _, out, _ = run("doctor", "--json")
    warnings = [
        c["detail"] for c in json.loads(out)["checks"] if c["name"] == "security" and c["level"] == "warn"
    ]
    assert any("bus.auth is false" in w for w in warnings)
    assert any("components.x.read_only is false" in w for w in warnings)
    assert any("components.x.user is 0:0" in w for w in warnings)


def test_messages_holding_brackets_are_printed_as_they_are(workdir: Path) -> None:
    # Rich would read "[x]" as markup and drop it; errors and warnings are plain text.
    (workdir / "nachos.toml").write_text('[channels."[x]"]\nenabled = true\n')
    code, _, err = run("validate")
    assert code == 3 and "[channels.[x]]" in err


def test_shell_completion_offers_the_deploy_files_service_names(workdir: Path) -> None:
    (workdir / "nachos-deploy.yaml").write_text("components: {webchat: {enabled: true}}\n")
    script = Path(sys.executable).parent / "nachos-deploy"
    for words, cword in (("nachos-deploy logs web", "2"), ("nachos-deploy up --only ", "3")):
        done = subprocess.run(
            [str(script)],
            env={
                **os.environ,
                "_NACHOS_DEPLOY_COMPLETE": "complete_bash",
                "COMP_WORDS": words,
                "COMP_CWORD": cword,
            },
            capture_output=True,
            text=True,
            timeout=60,
            cwd=workdir,
        )
        offered = done.stdout.split()
        assert "webchat" in offered, (words, done.stdout, done.stderr)
        if words.endswith("web"):
            assert offered == ["webchat"]
    # Typer detects the shell from the parent processes unless told not to (then the option takes
    # the shell's name): under `make`'s /bin/sh it found "sh" and refused ("Shell sh not supported").
    shown = subprocess.run(
        [str(script), "--show-completion", "bash"],
        env={**os.environ, "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "_nachos_deploy_completion" in shown.stdout


@pytest.mark.parametrize(
    "write",
    ["sys.stdout.write(f'line {n} of a log\\n'); sys.stdout.flush()", "out.print(f'line {n} of a log')"],
)
def test_a_reader_that_closes_stdout_ends_a_command_quietly_with_141(write: str) -> None:
    """`nachos-deploy logs -f | grep -m1 ...` and `| head`: once the reader is gone, the command
    stops with 141 (128 + SIGPIPE, as a Unix tool) and says nothing: no "Broken pipe. Check the
    paths given" (exit 7, as OSError used to be read), no traceback, and not rich's own exit 1
    (`status | head` would have read as "a check failed"). Through the console script's ``main``,
    as the installed command runs."""
    script = (
        "import sys\n"
        "from nachos_deploy.interfaces.cli.app import app, main\n"
        "from nachos_deploy.interfaces.cli.console import out\n"
        "from nachos_deploy.interfaces.cli.guard import handle_errors\n"
        "@app.command('spill')\n"
        "@handle_errors\n"
        "def spill() -> None:\n"
        "    for n in range(1_000_000):\n"
        f"        {write}\n"
        "sys.argv = ['nachos-deploy', 'spill']\n"
        "main()\n"
    )
    command = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert command.stdout is not None and command.stderr is not None
    assert command.stdout.readline().startswith("line 0")
    command.stdout.close()  # the reader goes, as `head -1` does
    try:
        assert command.wait(timeout=30) == 141
        assert command.stderr.read() == ""
    finally:
        command.stderr.close()


@pytest.mark.parametrize("data", ["not json", "", "{'single': 'quotes'}", "[" * 100_000])
def test_request_refuses_data_that_is_not_json_before_it_looks_for_the_bus(workdir: Path, data: str) -> None:
    """The components drop a payload that is not JSON, so `request` would only wait out --timeout: it
    says so at once (exit 2), naming --raw, before any engine call (none here: no engine is asked)."""
    code, out, err = run("request", "nachos.gateway.subagents.list", data)
    assert code == 2, out + err
    message = " ".join(err.split())
    assert message.startswith("error: DATA is not JSON (") and "--raw" in message, message


@pytest.mark.parametrize(
    ("subject", "why"),
    [
        ("", "it is empty"),
        ("a b", "it holds white space"),
        ("nachos.>", "its token '>' is a wildcard"),
        ("nachos.*.list", "its token '*' is a wildcard"),
        ("nachos..list", "it has an empty token"),
        (".nachos", "it has an empty token"),
    ],
)
def test_request_refuses_a_subject_nothing_can_be_sent_on_before_it_looks_for_the_bus(
    workdir: Path, subject: str, why: str
) -> None:
    """Else nats-py's "invalid subject" or a wait for a wildcard nothing answers came back as exit
    1, "No reply"; now exit 2 at once, before any engine call (none here: no engine is asked)."""
    code, out, err = run("request", subject)
    assert code == 2, out + err
    message = " ".join(err.split())
    assert message.startswith(f"error: SUBJECT {subject!r} is not a subject a request can be sent on: {why}")
