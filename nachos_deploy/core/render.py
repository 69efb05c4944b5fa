"""Templates to file contents, in memory: nothing here touches the clock or the environment, nor the
disk beyond reading the packaged templates (and a compiled-template cache, if the caller hands one in).

Every ``{{ }}`` in the Compose template goes through :func:`yaml_scalar`, so a configuration value is
always one quoted YAML scalar: quotes, newlines, ``: ``, ``#`` or ``{{ }}`` in a value cannot change the
file's structure, and ``$`` is doubled so Compose does not substitute inside data. Host variables are
referenced only where the plan says so (``${VAR}``), which is how secrets stay out of rendered files.
"""

from __future__ import annotations

import functools
import hashlib
import re
import shlex
from pathlib import Path, PurePosixPath
from typing import Any

import jinja2
import yaml

from nachos_deploy import __version__
from nachos_deploy.core import ingress
from nachos_deploy.core.bus_nodes import leaf_remotes, route_variable
from nachos_deploy.core.errors import DeployError
from nachos_deploy.core.names import (
    BUS_STACK_FILE,
    CLUSTER_NAME,
    COMPOSE_FILE,
    CREDENTIALS_DIR,
    CREDENTIALS_INCLUDE,
    DEPLOYED_FILE,
    INIT_NETWORK,
    LAST_UP_FILE,
    LEAF_PORT,
    LEAF_URL,
    NATS_CONFIG_FILE,
    OPERATOR_PASSWORD,
    OPERATOR_USER,
    PLATFORM_CONFIG_FILE,
    PORTS,
    RELEASES_FILE,
    ROUTE_PASSWORD,
    ROUTE_PORT,
    ROUTE_USER,
    SELECTION_FILE,
    SERVER_NAME,
    SIDECARS_STACK_FILE,
    STACK_FILE,
    SYSTEM_ACCOUNT,
    SYSTEM_PASSWORD,
    SYSTEM_READS,
    SYSTEM_USER,
    TLS_CERT,
    TLS_HANDSHAKE_TIMEOUT,
    TLS_KEY,
    TLS_MOUNT,
    VOLUME_INIT,
    VOLUME_INIT_ROOT,
)
from nachos_deploy.core.plan import secret_version_variable
from nachos_deploy.core.plan_types import EnvVar, Plan, ServicePlan
from nachos_deploy.core.units import format_size

HEADER = "Rendered by nachos-deploy; edit the deploy file and run `nachos-deploy render` instead."
GITIGNORE = ".gitignore"
OUTPUT_NAMES = (
    COMPOSE_FILE,
    STACK_FILE,
    BUS_STACK_FILE,
    SIDECARS_STACK_FILE,
    NATS_CONFIG_FILE,
    PLATFORM_CONFIG_FILE,
    GITIGNORE,
    ingress.CADDYFILE,
)
# and sidecar-*.conf
SIDECAR_PATTERN = "sidecar-*.conf"


def templates_dir() -> Path:
    """Packaged templates in a wheel; the checkout's top-level ``templates/`` in an editable install."""
    from importlib import resources  # once per process: the environments are cached

    packaged = Path(str(resources.files("nachos_deploy"))) / "templates"
    if packaged.is_dir():
        return packaged
    checkout = Path(__file__).resolve().parents[2] / "templates"
    if checkout.is_dir():
        return checkout
    raise DeployError(
        "nachos-deploy's templates are missing from its installation; reinstall it "
        "(pip install --force-reinstall nachos-deploy)."
    )


# Printable ASCII but `"` and `\`: PyYAML writes these as they are between double quotes (with
# `width=2**31` it never folds), and most values are only these. A dump costs ~60 µs, which was
# most of the time rendering hundreds of components took; anything else still goes through PyYAML.
_NEEDS_NO_ESCAPE = re.compile(r"[ !#-\[\]-~]*")


def yaml_scalar(value: object) -> str:
    """One YAML scalar on one line; strings always quoted, and ``$`` escaped for Compose."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return _double_quoted(str(value).replace("$", "$$")).removesuffix("\n...")


_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_YAML_WORDS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null"}


def yaml_key(value: object) -> str:
    """A mapping key: bare when it is a plain name (they are validated as such), quoted otherwise."""
    text = str(value)
    if _PLAIN_KEY.fullmatch(text) and text.lower() not in _YAML_WORDS:
        return text
    return yaml_scalar(text)


def env_value(var: EnvVar) -> str:
    """A literal value, or a ``${VAR}`` reference (``${VAR:-}`` when it may be left unset)."""
    if var.reference:
        return yaml_scalar_raw("${" + var.value + ("}" if var.required else ":-}"))
    return yaml_scalar(var.value)


def yaml_scalar_raw(text: str) -> str:
    """Like yaml_scalar but keeps ``$``: only for references the plan built itself."""
    return _double_quoted(text)


def _double_quoted(text: str) -> str:
    """``text`` as one double-quoted YAML scalar, as PyYAML writes it."""
    if _NEEDS_NO_ESCAPE.fullmatch(text):
        return f'"{text}"'  # what PyYAML gives for these characters, without its cost
    return _dump_double_quoted(text)


@functools.lru_cache(maxsize=4096)
def _dump_double_quoted(text: str) -> str:
    """Values that need escapes; they repeat (e.g. each sidecar's healthcheck), hence the cache."""
    dumped: str = yaml.safe_dump(text, default_style='"', width=2**31, allow_unicode=True)
    return dumped.removesuffix("\n")


class _Literal(str):
    """Already-quoted template output that finalize must pass through."""


def _environment(
    loader_dir: Path, finalize: Any, compiled: jinja2.BytecodeCache | None
) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(loader_dir)),
        bytecode_cache=compiled,
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=finalize,
    )


def _finalize_yaml(value: object) -> str:
    if isinstance(value, _Literal):
        return str(value)
    return yaml_scalar(value)


@functools.cache
def _environments(
    compiled: jinja2.BytecodeCache | None,
) -> tuple[jinja2.Environment, jinja2.Environment]:
    """Compiled once per process: rendering is called often (tests, --check, up)."""
    directory = templates_dir()
    compose_env = _environment(directory, _finalize_yaml, compiled)
    compose_env.filters["env_value"] = lambda var: _Literal(env_value(var))
    compose_env.filters["key"] = lambda name: _Literal(yaml_key(name))
    compose_env.filters["safe_comment"] = lambda text: _Literal(" ".join(str(text).split()))
    text_env = _environment(directory, _finalize_text, compiled)
    text_env.filters["subjects"] = _subjects
    text_env.filters["size"] = format_size  # nats-server's own notation: 1MB, 64KB
    return compose_env, text_env


def _subjects(subjects: tuple[str, ...]) -> _Literal:
    """A list of quoted subjects for a nats-server config; subjects are validated as such."""
    return _Literal(", ".join(f'"{_finalize_text(subject)}"' for subject in subjects))


def volume_init_script(plan: Plan) -> str:
    """Chown each prepared volume unless it already has the right owner (so a second run over a
    large database costs one stat), and let the owner write its top folder."""
    steps = []
    for prepared in plan.prepared_volumes:
        folder = shlex.quote(f"{VOLUME_INIT_ROOT}/{prepared.volume}")
        owner = shlex.quote(prepared.owner)
        steps.append(
            f'[ "$(stat -c %u:%g {folder})" = {owner} ] || chown -R {owner} {folder}; chmod u+rwx {folder}'
        )
    return " && ".join(f"({step})" for step in steps) or "true"


def render(plan: Plan, compiled: jinja2.BytecodeCache | None = None) -> dict[str, str]:
    """File name → content for the output folder, deterministic for a given plan. ``compiled`` is
    where the templates' compiled code is kept between runs, if the caller keeps it anywhere (see
    :mod:`nachos_deploy.io.template_cache`): it changes how fast, never what, this renders."""
    compose_env, text_env = _environments(compiled)
    context: dict[str, Any] = {
        "plan": plan,
        "leaf_port": LEAF_PORT,
        "operator_user": OPERATOR_USER,
        "operator_password": OPERATOR_PASSWORD,
        "system_account": SYSTEM_ACCOUNT,
        "system_user": SYSTEM_USER,
        "system_password": SYSTEM_PASSWORD,
        "system_reads": [f"$SYS.REQ.SERVER.*.{read}" for read in SYSTEM_READS],
        "leaf_url": LEAF_URL,
        "leaf_urls": [variable for variable, _ in leaf_remotes(len(plan.bus.nodes))],
        "credentials_include": CREDENTIALS_INCLUDE,
        "tls_mount": TLS_MOUNT,
        "tls_cert": TLS_CERT,
        "tls_key": TLS_KEY,
        "tls_timeout": TLS_HANDSHAKE_TIMEOUT,
        "header": HEADER,
        "version": __version__,
        "init_name": VOLUME_INIT,
        "init_root": VOLUME_INIT_ROOT,
        "init_script": volume_init_script(plan),
        "bus_nodes": [node.name for node in plan.bus.nodes],
        "cluster_name": CLUSTER_NAME,
        "route_port": ROUTE_PORT,
        "route_user": ROUTE_USER,
        "route_password": ROUTE_PASSWORD,
        "server_name": SERVER_NAME,
        "route_variables": [route_variable(index) for index in range(1, len(plan.bus.nodes) + 1)],
    }
    try:
        nats_conf = text_env.get_template("nats.conf.j2").render(context)
        # Compose does not look into bind-mounted files: a label with their hash makes a changed
        # nats.conf recreate the bus instead of leaving it running with the old limits.
        context["bus_config_hash"] = hashlib.sha256(nats_conf.encode()).hexdigest()[:16]
        files = {
            NATS_CONFIG_FILE: nats_conf,
            # The credentials nachos-deploy generates beside the rendered files stay out of git.
            GITIGNORE: f"# {HEADER}\n/{CREDENTIALS_DIR}/\n"
            + "".join(f"/{name}\n" for name in (SELECTION_FILE, LAST_UP_FILE, DEPLOYED_FILE, RELEASES_FILE)),
        }
        for sidecar in plan.sidecars:
            files[sidecar.config_file] = text_env.get_template("sidecar.conf.j2").render(
                {**context, "sidecar": sidecar}
            )
        files.update(plan.platform_files)  # each component's own nachos.toml (plan._own_platform_configs)
        if plan.ingress is not None:
            caddyfile = text_env.get_template("Caddyfile.j2").render(
                {
                    **context,
                    "ingress": plan.ingress,
                    "http_port": ingress.HTTP_PORT,
                    "https_port": ingress.HTTPS_PORT,
                    "health_port": ingress.HEALTH_PORT,
                    "channel_hold": ingress.CHANNEL_HOLD,
                    "channel_idle": ingress.CHANNEL_IDLE,
                    "tls_dir": ingress.TLS_DIR,
                    "acme_root": ingress.ACME_ROOT_TARGET,
                }
            )
            files[ingress.CADDYFILE] = caddyfile
            # As the bus's: Compose does not look into the bind-mounted file, the label's hash does.
            context["ingress_config_hash"] = hashlib.sha256(caddyfile.encode()).hexdigest()[:16]
        if plan.target == "swarm":
            template = compose_env.get_template("docker-stack.yml.j2")
            bus = [*plan.bus.nodes, plan.bus.ports]
            files[STACK_FILE] = template.render(
                _stack_context(context, plan, plan.services, files, "the whole stack")
            )
            files[BUS_STACK_FILE] = template.render(
                _stack_context(context, plan, bus, files, "the bus alone, deployed and proven first")
            )
            early = plan.before_components(plan.components)
            if early:
                files[SIDECARS_STACK_FILE] = template.render(
                    _stack_context(
                        context,
                        plan,
                        [*bus, *early],
                        files,
                        "the bus, the sidecars and the state store, before the components",
                    )
                )
        else:
            files[COMPOSE_FILE] = compose_env.get_template("docker-compose.yml.j2").render(context)
    except jinja2.TemplateError as exc:
        raise DeployError(f"A template failed to render: {exc}. This is a bug in nachos-deploy.") from exc
    return files


def _stack_context(
    context: dict[str, Any],
    plan: Plan,
    services: tuple[ServicePlan, ...] | list[ServicePlan],
    files: dict[str, str],
    purpose: str,
) -> dict[str, Any]:
    """What one stack file holds: ``services`` (with volume-init when it prepares a volume they
    use), only the networks and volumes they use, and the rendered files they mount as Swarm configs
    (a bind mount would need the file at the same path on every node)."""
    prepared = list(plan.prepared_volumes)  # volume-init runs in the bus phase, as with Compose
    used_networks = {network for service in services for network in service.networks}
    if prepared:
        used_networks.add(INIT_NETWORK)
    networks = [(name, internal) for name, internal in plan.networks if name in used_networks]
    if prepared:
        networks.append((INIT_NETWORK, True))
    volumes = {m.source for s in services for m in s.mounts if m.is_volume} | {p.volume for p in prepared}
    configs = {}
    for service in services:
        for mount in service.mounts:
            name = mount.source.removeprefix("./")
            if mount.source.startswith("./") and name in files:
                digest = hashlib.sha256(files[name].encode()).hexdigest()[:12]
                key = re.sub(r"[^a-z0-9-]", "-", name.lower())
                configs[mount.source] = {"key": key, "name": f"{plan.project}-{key}-{digest}"}
    secrets = {}  # the bus's credentials (never rendered): a Swarm secret each, named by its version
    for service in services:
        for mount in service.mounts:
            if mount.source.startswith(f"./{CREDENTIALS_DIR}/") and not mount.is_volume:
                owner = PurePosixPath(mount.source).parent.name
                version = "${" + secret_version_variable(owner) + "}"
                # The passwords' file is the owner's "credentials"; other files (the TLS
                # certificate and key) are named by their own stem.
                stem = PurePosixPath(mount.source).name.removesuffix(".pem")
                kind = (
                    "credentials"
                    if mount.source.endswith(f"/{PurePosixPath(CREDENTIALS_INCLUDE).name}")
                    else stem
                )
                name = _Literal(yaml_scalar_raw(f"{plan.project}-{owner}-{kind}-{version}"))
                secrets[mount.source] = {"key": f"{owner}-{kind}", "name": name}
    placements = {plan.component(p.used_by).placement for p in prepared}
    return {
        **context,
        "services": services,
        "purpose": purpose,
        "bus_file": BUS_STACK_FILE,
        "ports_name": PORTS,
        "with_init": bool(prepared),
        "prepared_volumes": prepared,
        "init_image": plan.bus.service.image,
        "init_network": INIT_NETWORK,
        "init_placement": next(iter(placements)) if len(placements) == 1 else (),
        "networks": networks,
        "volumes": sorted(v for v in plan.volumes if v in volumes),
        "configs": configs,
        "secrets": secrets,
    }


def _finalize_text(value: object) -> str:
    """nats.conf and nachos.toml only receive numbers and checked paths; refuse anything else."""
    if isinstance(value, _Literal):
        return str(value)
    if isinstance(value, bool | int | float):
        return str(value).lower() if isinstance(value, bool) else str(value)
    text = str(value)
    if any(ch in text for ch in '"\n\\{}#'):
        raise jinja2.TemplateError(f"unsafe value {text!r} in a text template")
    return text
