from __future__ import annotations

from pathlib import Path

import pytest

from nachos_deploy.core.errors import ConfigError, ExitCode
from nachos_deploy.io.loader import load


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_no_file_gives_the_documented_defaults(tmp_path: Path) -> None:
    loaded = load(cwd=tmp_path, environ={})
    config = loaded.config
    assert loaded.config_path is None
    assert config.project == "nachos"
    assert config.bus.image == "nats:alpine"
    assert config.bus.max_payload == 10 * 1024 * 1024
    assert config.bus.store_dir == "/data"
    assert (config.bus.client_port, config.bus.monitor_port) == (4222, 8222)
    assert config.bus.bind_address == "127.0.0.1"
    assert config.bus.healthcheck_interval is None  # nachos-deploy's: 1s, stretched for a large stack


def test_precedence_cli_over_env_over_file(tmp_path: Path) -> None:
    write(tmp_path / "nachos-deploy.yaml", "project: from-file\nbus:\n  client_port: 1111\n")
    env = {"NACHOS_DEPLOY_PROJECT": "from-env", "NACHOS_DEPLOY_BUS__MONITOR_PORT": "2222"}
    loaded = load(cwd=tmp_path, environ=env, sets=["project=from-cli"])
    assert loaded.config.project == "from-cli"
    assert loaded.config.bus.client_port == 1111
    assert loaded.config.bus.monitor_port == 2222
    assert load(cwd=tmp_path, environ=env).config.project == "from-env"
    assert load(cwd=tmp_path, environ={}).config.project == "from-file"


def test_env_names_components_with_underscores_for_hyphens(tmp_path: Path) -> None:
    env = {
        "NACHOS_DEPLOY_COMPONENTS__LLM_PROXY__ENABLED": "false",
        "NACHOS_DEPLOY_COMPONENTS__GATEWAY__ENVIRONMENT__LOG_LEVEL": "debug",
    }
    config = load(cwd=tmp_path, environ=env).config
    assert config.components["llm-proxy"].enabled is False
    assert config.components["gateway"].environment == {"LOG_LEVEL": "debug"}


def test_set_parses_lists_and_booleans(tmp_path: Path) -> None:
    config = load(
        cwd=tmp_path,
        environ={},
        sets=["components.x.command=[a, 'b c']", "components.x.enabled=true", "bus.max_payload=1MB"],
    ).config
    assert config.components["x"].command == ["a", "b c"]
    assert config.components["x"].enabled is True
    assert config.bus.max_payload == 1024 * 1024


def test_config_env_variable_names_the_file(tmp_path: Path) -> None:
    write(tmp_path / "other.yaml", "project: other\n")
    loaded = load(cwd=tmp_path, environ={"NACHOS_DEPLOY_CONFIG": "other.yaml"})
    assert loaded.config.project == "other"


def errors_for(tmp_path: Path, text: str, sets: list[str] | None = None) -> ConfigError:
    path = write(tmp_path / "nachos-deploy.yaml", text)
    with pytest.raises(ConfigError) as info:
        load(path, cwd=tmp_path, environ={}, sets=sets or [])
    assert info.value.exit_code == ExitCode.CONFIG
    assert "\n" not in info.value.message  # one paragraph
    return info.value


def test_unknown_key_names_file_key_and_suggestion(tmp_path: Path) -> None:
    message = errors_for(tmp_path, "bus:\n  max_paylod: 1MB\n").message
    assert str(tmp_path / "nachos-deploy.yaml") in message
    assert "bus.max_paylod is not a known key" in message
    assert "did you mean 'max_payload'" in message


def test_unknown_component_key(tmp_path: Path) -> None:
    message = errors_for(tmp_path, "components:\n  gateway:\n    imgae: x\n").message
    assert "components.gateway.imgae is not a known key" in message
    assert "did you mean 'image'" in message


def test_bad_size_says_how_to_fix(tmp_path: Path) -> None:
    message = errors_for(tmp_path, "bus:\n  max_payload: ten\n").message
    assert "bus.max_payload" in message
    assert "'ten' is not a size" in message
    assert "10MB" in message


@pytest.mark.parametrize("port", ["70000", "-1", "http"])
def test_bad_port(tmp_path: Path, port: str) -> None:
    message = errors_for(tmp_path, f"bus:\n  client_port: {port}\n").message
    assert "bus.client_port: must be a port number from 0 to 65535" in message


def test_max_payload_limits(tmp_path: Path) -> None:
    assert "above nats-server's limit of 64MB" in errors_for(tmp_path, "bus: {max_payload: 65MB}").message
    message = errors_for(tmp_path, "bus: {max_payload: 32MB, max_pending: 16MB}").message
    assert "above max_pending" in message


def test_yaml_syntax_error_gives_line(tmp_path: Path) -> None:
    message = errors_for(tmp_path, "bus:\n  image: [unclosed\n").message
    assert "is not valid YAML at line" in message


def test_not_a_mapping(tmp_path: Path) -> None:
    assert "must be a mapping" in errors_for(tmp_path, "- a\n- b\n").message


def test_error_names_the_override_it_came_from(tmp_path: Path) -> None:
    error = errors_for(tmp_path, "project: fine\n", sets=["bus.client_port=99999"])
    assert "--set bus.client_port" in error.message


def test_bad_component_name_and_secret_value(tmp_path: Path) -> None:
    assert "cannot name a component" in errors_for(tmp_path, "components:\n  Bad_Name: {}\n").message
    message = errors_for(tmp_path, "components:\n  x:\n    secrets:\n      TOKEN: 'abc-123'\n").message
    assert "must name the host environment variable" in message


def test_missing_explicit_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load(tmp_path / "nope.yaml", cwd=tmp_path, environ={})


def test_platform_toml_enables_channels_and_tools(tmp_path: Path) -> None:
    write(tmp_path / "nachos.toml", "[channels.slack]\nenabled = true\n[tools.filesystem]\nenabled = false\n")
    loaded = load(cwd=tmp_path, environ={})
    assert loaded.platform.channels == {"slack": True}
    assert loaded.platform.tools == {"filesystem": False}


def test_platform_toml_syntax_error(tmp_path: Path) -> None:
    write(tmp_path / "nachos.toml", "[channels.slack\n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load(cwd=tmp_path, environ={})


def test_a_secret_value_where_a_name_belongs_is_never_echoed(tmp_path: Path) -> None:
    canary = "sk-ant-CANARY-0123456789"
    message = errors_for(
        tmp_path, f"components:\n  llm-proxy:\n    secrets:\n      ANTHROPIC_API_KEY: '{canary}'\n"
    ).message
    assert "must name the host environment variable" in message and canary not in message
    # given through the environment, the message names the variable, not the deploy file
    with pytest.raises(ConfigError) as error:
        load(
            cwd=tmp_path, environ={"NACHOS_DEPLOY_COMPONENTS__LLM_PROXY__SECRETS__ANTHROPIC_API_KEY": canary}
        )
    assert canary not in error.value.message
    assert "NACHOS_DEPLOY_COMPONENTS__LLM_PROXY__SECRETS__ANTHROPIC_API_KEY" in error.value.message


@pytest.mark.parametrize(
    ("volume", "complaint"),
    [
        ("/:/host:rw", "the whole host"),
        ("/var/run/docker.sock:/var/run/docker.sock", "Docker socket"),
        ("/proc/1:/x", "kernel interfaces"),
        ("a b:/data", "neither a named volume"),
        ("~/x:/data", "neither a named volume"),
    ],
)
def test_mounts_that_give_away_the_host_are_refused(tmp_path: Path, volume: str, complaint: str) -> None:
    message = errors_for(tmp_path, f"components:\n  x:\n    volumes: ['{volume}']\n").message
    assert complaint in message


def test_host_paths_outside_the_deploy_folder_warn(tmp_path: Path) -> None:
    from nachos_deploy.io.stack import prepare

    write(
        tmp_path / "nachos-deploy.yaml",
        "components:\n  x:\n    image: x\n    volumes: ['/etc:/x:ro', './ok:/ok', '../up:/up']\n",
    )
    warnings = prepare(cwd=tmp_path, environ={}).plan.warnings
    assert any("/etc on the host, outside the deploy folder, is mounted read-only" in w for w in warnings)
    assert any(f"{tmp_path.parent}/up on the host" in w and "read-write" in w for w in warnings)
    assert not any("/ok on the host" in w for w in warnings)


@pytest.mark.parametrize("network", ["egress", "host-access", "nachos-internal", "gateway-link"])
def test_networks_of_the_security_layout_are_refused(tmp_path: Path, network: str) -> None:
    message = errors_for(tmp_path, f"components:\n  x:\n    networks: [{network}]\n").message
    assert "nachos-deploy's own" in message


@pytest.mark.parametrize("name", ["EVIL", "..", "x" * 300, "bus-sneaky"])
def test_names_from_nachos_toml_follow_the_name_rules(tmp_path: Path, name: str) -> None:
    write(tmp_path / "nachos.toml", f'[channels."{name}"]\nenabled = true\n')
    with pytest.raises(ConfigError, match="cannot name a component") as error:
        load(cwd=tmp_path, environ={})
    assert len(error.value.message) < 600


@pytest.mark.parametrize(
    ("document", "clauses"),
    [
        # pydantic's bounds, in the words of the other clauses; a size as a size
        ("components: {gateway: {replicas: 0}}", ["components.gateway.replicas: must be at least 1 (got 0)"]),
        ("state: {maxmemory: 1KB}", ["state.maxmemory: must be at least 1MB (got '1KB')"]),
        ("logging: {max_file: 1000}", ["logging.max_file: must be at most 100 (got 1000)"]),
        # a scalar that is neither branch of a union: one clause naming both, no branch names
        (
            "components: {gateway: {healthcheck: yes}}",
            ["components.gateway.healthcheck: must be a mapping of keys, or must be false (got 'yes')"],
        ),
        (
            "components: {gateway: {command: 5}}",
            ["components.gateway.command: must be a list, or must be text (got 5)"],
        ),
        # a mapping (a list) given: its own errors, not the other branch's "should be false"
        (
            "components: {gateway: {healthcheck: {retries: 0}}}",
            [
                "components.gateway.healthcheck.test: is required",
                "components.gateway.healthcheck.retries: must be at least 1 (got 0)",
            ],
        ),
        ("components: {gateway: {healthcheck: {}}}", ["components.gateway.healthcheck.test: is required"]),
        ("components: {gateway: {command: [a, {b: 1}]}}", ["components.gateway.command.1: must be text"]),
    ],
    ids=[
        "bound",
        "size-bound",
        "upper-bound",
        "union-scalar",
        "list-or-text",
        "mapping",
        "empty-mapping",
        "list",
    ],
)
def test_each_problem_is_one_clause_in_plain_words(tmp_path: Path, document: str, clauses: list[str]) -> None:
    message = errors_for(tmp_path, document + "\n").message
    found = message.split(": ", 1)[1].split(". Fix the value(s)")[0].split("; ")
    assert found == clauses, message
    assert "Input should" not in message and "Field required" not in message
