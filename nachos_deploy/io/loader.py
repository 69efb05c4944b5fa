"""Reading the configuration layers from disk and the environment, and explaining what is wrong.

This is the I/O edge of configuration: it reads the deploy file and ``nachos.toml``, merges the layers
(see :mod:`nachos_deploy.core.config`) and turns every validation failure into one :class:`ConfigError`
paragraph that names the file (or the variable or ``--set``), the dotted key, the problem and the fix.
"""

from __future__ import annotations

import copy
import difflib
import re
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import yaml
from pydantic import BaseModel, ValidationError

from nachos_deploy.core import platform_config, shown
from nachos_deploy.core.config import (
    NAME_PATTERN,
    TAKEN_NAMES_HINT,
    Component,
    DeployConfig,
    SourceFloat,
    SourceInt,
    name_taken,
)
from nachos_deploy.core.error_words import in_words
from nachos_deploy.core.errors import ConfigError
from nachos_deploy.core.platform_config import Platform
from nachos_deploy.core.shown import shortened
from nachos_deploy.io import platform_secrets

DEFAULT_CONFIG_NAME = "nachos-deploy.yaml"
ENV_PREFIX = "NACHOS_DEPLOY_"
ENV_CONFIG_PATH = "NACHOS_DEPLOY_CONFIG"  # names the deploy file; not a key override
_FREE_FORM = ("environment", "secrets")  # keys below these keep their case in variable names


@dataclass(frozen=True)
class Loaded:
    """A validated configuration with where it came from; paths in it are relative to ``base_dir``."""

    config: DeployConfig
    base_dir: Path
    config_path: Path | None
    platform: Platform


def names_deploy_file(config_path: object, environ: Mapping[str, str]) -> bool:
    """Whether the user named the deploy file (``--config``, the API's mapping, NACHOS_DEPLOY_CONFIG)
    rather than leaving it to the current folder: a file named and missing is an error, and only a
    file the folder offered may be looked past by a reading command given the project's name."""
    return config_path is not None or bool(environ.get(ENV_CONFIG_PATH))


def load(
    config_path: Path | None = None,
    *,
    cwd: Path | None = None,
    environ: Mapping[str, str] | None = None,
    sets: Sequence[str] = (),
    document: Mapping[str, Any] | None = None,
) -> Loaded:
    """Load every layer. Without ``config_path`` the default file is used when present, else defaults.
    A ``document`` (the Python API's mapping) stands in for the file, with ``cwd`` as its folder."""
    cwd = cwd or Path.cwd()
    environ = environ if environ is not None else {}
    explicit = names_deploy_file(config_path, environ)
    path = config_path or Path(environ.get(ENV_CONFIG_PATH) or DEFAULT_CONFIG_NAME)
    if not path.is_absolute():
        path = cwd / path
    data: dict[str, Any] = {}
    found: Path | None = None
    if document is not None:
        data = copy.deepcopy(dict(document))
        path = cwd / DEFAULT_CONFIG_NAME
        found = None
    elif path.is_file():
        data = _read_yaml(path)
        found = path
    elif explicit and path.exists():
        raise ConfigError(
            f"The deploy file {path} is not a regular file (a folder or a device). Give the path of "
            "a YAML file with --config or NACHOS_DEPLOY_CONFIG, e.g. ./nachos-deploy.yaml."
        )
    elif explicit:
        raise ConfigError(
            f"The deploy file {path} does not exist. Check the path given with --config or "
            f"{ENV_CONFIG_PATH}, or leave both out to use {DEFAULT_CONFIG_NAME} in the current folder "
            "(or the built-in defaults when there is none)."
        )
    else:
        found = None
    base_dir = path.parent
    origins: dict[tuple[str, ...], str] = {}
    for key_path, value, origin in [*_env_overrides(environ), *_set_overrides(sets)]:
        _put(data, key_path, value)
        origins[key_path] = origin
    source = "the mapping given" if document is not None else str(found) if found else "the built-in defaults"
    config = validate(data, source=source, origins=origins)
    platform_path = base_dir / config.platform_config
    platform = read_platform(platform_path) if platform_path.is_file() else Platform()
    return Loaded(config=config, base_dir=base_dir, config_path=found, platform=platform)


def validate(
    data: Mapping[str, Any],
    *,
    source: str = "the deploy file",
    origins: Mapping[tuple[str, ...], str] | None = None,
) -> DeployConfig:
    """Validate merged data, raising one ConfigError paragraph that covers every problem found."""
    try:
        return DeployConfig.model_validate(data)
    except ValidationError as exc:
        listed: set[tuple[str, ...]] = set()  # lists of known keys said once already
        errors = _meant_branches(exc.errors(), data)
        problems = _one_clause_per_key(
            [_describe(error, origins or {}, source, data, listed) for error in errors]
        )
        where = sorted({origin for origin, _ in problems})
        text = "; ".join(problem for _, problem in problems)
        raise ConfigError(
            f"Invalid configuration from {', '.join(where)}: {text}. Fix the value(s) named and run "
            "the command again (`nachos-deploy validate` checks without writing anything)."
        ) from None


def read_platform(path: Path) -> Platform:
    """Which channels and tools ``nachos.toml`` enables (a table without ``enabled`` is on, as the
    platform reads it), and what in it the platform would refuse; its other settings are its own."""
    text = _read_text(path, "The platform configuration")
    try:
        document = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError, ValueError) as exc:
        problem = "it is nested too deeply" if isinstance(exc, RecursionError) else shortened(exc, 200)
        raise ConfigError(
            f"{path} is not valid TOML ({problem}). Fix its syntax; nachos-deploy reads only its "
            "[channels.<name>] and [tools.<name>] 'enabled' keys."
        ) from None

    def enabled(section: str) -> dict[str, bool]:
        try:
            flags = platform_config.enabled_tables(document, section)
        except TypeError:
            raise ConfigError(
                f"{path}: [{section}] must be a table of tables such as [{section}.NAME]."
            ) from None
        for name, flag in flags.items():
            if not re.fullmatch(NAME_PATTERN, name):
                raise ConfigError(
                    f"{path}: [{section}.{name[:80]}] cannot name a component: use lowercase letters, "
                    "digits and '-' (tools also '_'), starting with a letter, at most 54 characters."
                )
            if name_taken(name):
                raise ConfigError(
                    f"{path}: [{section}.{name}] cannot name a component: {TAKEN_NAMES_HINT}. Rename "
                    f"the table, e.g. [{section}.my-{name}]."
                )
            if not isinstance(flag, bool):
                raise ConfigError(f"{path}: {section}.{name}.enabled must be true or false, not {flag!r}.")
        return flags

    secrets = platform_config.inline_secrets(document)
    platform_secrets.check(path, secrets)  # here, so validate and render refuse it too
    return Platform(
        path=path,
        channels=enabled("channels"),
        tools=enabled("tools"),
        problems=platform_config.problems_in(document),
        docker_subagents=platform_config.subagents_need_docker(document),
        document=document,
        secrets=secrets,
    )


MAX_FILE_BYTES = 1024 * 1024  # a deploy file, override or nachos.toml is a few kilobytes


# libyaml's parser when PyYAML has it (about 10x faster on big files); the resolvers and
# constructors below are Python either way.
_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _UniqueKeyLoader(_BaseLoader):  # type: ignore[misc]
    """Safe YAML that refuses a key given twice in one mapping: PyYAML keeps the last one, so a
    second ``components:`` block would silently discard the first."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *anchor` merges keys that the mapping's own may override
            key = self.construct_object(key_node, deep=deep)
            try:
                line = seen.get(key)
            except TypeError:  # an unhashable key: let PyYAML report it
                break
            if line is not None:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"the key {shortened(key, 80)!r} appears twice in one mapping "
                    f"(first at line {line + 1}); keep one",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line
        mapping: dict[Any, Any] = super().construct_mapping(node, deep=deep)
        return mapping

    def construct_decimal_int(self, node: yaml.ScalarNode) -> int:
        text = str(self.construct_scalar(node))
        return SourceInt(int(text, 10), text)

    def construct_source_float(self, node: yaml.ScalarNode) -> float:
        return SourceFloat(self.construct_yaml_float(node), str(node.value))


# YAML 1.2's core schema instead of PyYAML's YAML 1.1: only true/false are booleans (`NO`, `on` and
# `y` stay strings), `0755` is 755 not 493, `12:30` and `2024-01-01` are strings (not 750 and a
# date). Values are then read by the key's type, the same way as --set and NACHOS_DEPLOY_* values.
_BOOL, _INT, _FLOAT, _TIME = (f"tag:yaml.org,2002:{kind}" for kind in ("bool", "int", "float", "timestamp"))
_UniqueKeyLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_BOOL, _INT, _FLOAT, _TIME)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_UniqueKeyLoader.add_implicit_resolver(
    _BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_UniqueKeyLoader.add_implicit_resolver(_INT, re.compile(r"^[-+]?[0-9]+$"), list("-+0123456789"))
_UniqueKeyLoader.add_implicit_resolver(
    _FLOAT,
    re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)
_UniqueKeyLoader.add_constructor(_INT, _UniqueKeyLoader.construct_decimal_int)
_UniqueKeyLoader.add_constructor(_FLOAT, _UniqueKeyLoader.construct_source_float)

MAX_VALUES = 100_000
"""Values a document may expand to: YAML aliases can make a small file stand for billions."""


def _check_tree(data: Any) -> None:
    """Refuse documents that expand too far (alias bombs) or hold NUL characters, which no file
    name, environment value or command line can carry."""
    stack: list[tuple[str, Any]] = [("", data)]
    seen = 0
    while stack:
        where, node = stack.pop()
        seen += 1
        if seen > MAX_VALUES:
            raise _Unparseable(f"it expands to more than {MAX_VALUES} values (aliases of aliases?)")
        if isinstance(node, dict):
            for key, value in node.items():
                stack.append((where, key))
                stack.append((f"{where}.{shortened(key, 40)}".lstrip("."), value))
        elif isinstance(node, list):
            stack.extend((f"{where}[{index}]", item) for index, item in enumerate(node))
        elif isinstance(node, str) and "\x00" in node:
            raise _Unparseable(
                f"{where or 'a key'}: {shortened(node, 80)!r} holds a NUL character; remove it"
            )


class _Unparseable(Exception):
    def __init__(self, problem: str, where: str = "") -> None:
        super().__init__(problem)
        self.problem = problem
        self.where = where


def _load_yaml(text: str) -> Any:
    """Parse YAML, turning every way PyYAML can fail (also outside YAMLError: a bad date, an
    ``!!int`` that is none, a number too long, nesting too deep) into one exception."""
    try:
        if _too_deep(text):
            raise RecursionError
        data = yaml.load(text, Loader=_UniqueKeyLoader)
        _check_tree(data)
        return data
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise _Unparseable(getattr(exc, "problem", None) or str(exc), where) from None
    except RecursionError:
        raise _Unparseable("it is nested too deeply") from None
    except (ValueError, TypeError, OverflowError) as exc:
        raise _Unparseable(f"a value cannot be read ({shortened(str(exc), 80)})") from None


MAX_FLOW_DEPTH = 200
"""Brackets nested deeper than this are refused before parsing: PyYAML takes 0.6 s to reach its
recursion limit at 3,000 levels, and no deploy file needs more than a handful."""


def _too_deep(text: str) -> bool:
    if text.count("[") + text.count("{") <= MAX_FLOW_DEPTH:
        return False
    depth = deepest = 0
    for char in text:
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth = max(depth - 1, 0)
    return deepest > MAX_FLOW_DEPTH


def _read_text(path: Path, what: str) -> str:
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ConfigError(
                f"{what} {path} is {size} bytes; at most {MAX_FILE_BYTES} are read. It should be a few "
                "kilobytes: check that the path names the right file."
            )
        with path.open("rb") as stream:
            data = stream.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            raise ConfigError(f"{what} {path} is larger than {MAX_FILE_BYTES} bytes; at most that is read.")
        return data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"{what} {path} cannot be read ({exc}). Check its permissions and encoding."
        ) from None


def read_override(path: Path) -> Any:
    """The Compose override file, parsed (checked by :func:`nachos_deploy.core.override.findings`)."""
    return _parse_yaml(path, "The Compose override file")


def _parse_yaml(path: Path, what: str) -> Any:
    text = _read_text(path, what)
    try:
        return _load_yaml(text)
    except _Unparseable as exc:
        raise ConfigError(
            f"{what} {path} is not valid YAML{exc.where}: {exc.problem}. Fix it there (check "
            "indentation, and quote values that contain ': ' or '#' or look like dates or numbers)."
        ) from None


def _read_yaml(path: Path) -> dict[str, Any]:
    document = _parse_yaml(path, "The deploy file")
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise ConfigError(
            f"The deploy file {path} must be a mapping of keys such as 'project:' and 'bus:', "
            f"not a {type(document).__name__}. See docs/configuration.md."
        )
    return document


def file_project(path: Path) -> str | None:
    """The ``project`` key the deploy file itself holds (not -p, --set or a variable), or None when
    it holds none or cannot be read: a reading command run with -p in another project's folder must
    not offer to apply that project's file to the one it was asked about."""
    try:
        project = _read_yaml(path).get("project")
    except (ConfigError, OSError):
        return None
    return project if isinstance(project, str) else None


def _env_overrides(environ: Mapping[str, str]) -> list[tuple[tuple[str, ...], Any, str]]:
    """``NACHOS_DEPLOY_BUS__MAX_PAYLOAD=1MB`` sets ``bus.max_payload``; a '_' in a component name is '-'."""
    result = []
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name == ENV_CONFIG_PATH:
            continue
        raw = [part for part in name[len(ENV_PREFIX) :].split("__")]
        if not all(raw):
            raise ConfigError(
                f"The environment variable {shortened(name, 80)} names no key: after {ENV_PREFIX}, give the "
                "key path with '__' between its parts, e.g. NACHOS_DEPLOY_BUS__MAX_PAYLOAD=1MB; or "
                "unset it."
            )
        parts: list[str] = []
        for index, part in enumerate(raw):
            if index > 0 and parts[index - 1] in _FREE_FORM:
                parts.append(part)
            elif index == 1 and parts[0] == "components":
                parts.append(part.lower().replace("_", "-"))
            else:
                parts.append(part.lower())
        key_path = tuple(parts)
        value = environ[name] if _is_text(key_path) else _scalar(environ[name])
        result.append((key_path, value, f"environment variable {name}"))
    return result


def _set_overrides(sets: Sequence[str]) -> list[tuple[tuple[str, ...], Any, str]]:
    result = []
    for item in sets:
        key, sep, value = item.partition("=")
        parts = tuple(key.strip().split("."))
        if not sep or not all(parts):
            raise ConfigError(
                f"--set {shortened(item, 80)!r} is not of the form key.path=value; for example "
                "--set bus.max_payload=1MB or --set components.slack.enabled=true."
            )
        if "\x00" in value:
            raise ConfigError(
                f"--set {shortened(key.strip(), 80)}: the value holds a NUL character; remove it."
            )
        result.append((parts, value if _is_text(parts) else _scalar(value), f"--set {key.strip()}"))
    return result


def _scalar(text: str) -> Any:
    """Overrides are strings, except true/false/null and flow lists or mappings (``[a, b]``)."""
    stripped = text.strip()
    if stripped in ("true", "false", "null", "~") or stripped[:1] in ("[", "{"):
        try:
            return _load_yaml(stripped)
        except _Unparseable:
            return text  # kept as the string it is; validation names the key if that is wrong
    return text


def _put(data: dict[str, Any], key_path: tuple[str, ...], value: Any) -> None:
    node = data
    for part in key_path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[key_path[-1]] = value


class _Clause(NamedTuple):
    """One problem of the paragraph: "key: problem (got X)", or "key problem" as a sentence."""

    origin: str  # where the value came from: the file, --set, a variable
    key: str
    problem: str
    given: str = ""  # " (got X)", or nothing when the problem shows the value or it is a mapping
    sentence: bool = False  # "KEY is not a known key (...)": no colon, never merged

    def text(self, problems: Sequence[str]) -> str:
        joined = ", or ".join(problems)
        return f"{self.key} {joined}" if self.sentence else f"{self.key}: {joined}{self.given}"


def _one_clause_per_key(clauses: Sequence[_Clause]) -> list[tuple[str, str]]:
    """The branches of a union a scalar failed (``healthcheck: yes``: neither a mapping nor false)
    as one clause, "key: must be A, or must be B (got X)", not one clause per branch; each clause
    with where its value came from."""
    merged: dict[_Clause, list[str]] = {}
    for clause in clauses:
        slot = clause._replace(problem="") if not clause.sentence else clause
        problems = merged.setdefault(slot, [])
        if clause.problem not in problems:
            problems.append(clause.problem)
    return [(slot.origin, slot.text(problems)) for slot, problems in merged.items()]


def _meant_branches(errors: Sequence[Any], data: Any) -> list[Any]:
    """A key that takes a mapping (or a list) or something else (``healthcheck: false`` or a mapping
    of its keys; a command as a list or a string): given a mapping or a list, the user meant that
    branch, so the other branches' "should be False" or "should be a string" are left out when the
    mapping's (the list's) own errors, below it, say what is wrong with it."""
    located = [_clause_loc(data, e) for e in errors]

    def meant(index: int) -> bool:
        if errors[index]["type"] == "missing" or not isinstance(errors[index].get("input"), dict | list):
            return False  # a missing key is the mapping's own error, reported below it
        loc = located[index]
        return any(other[: len(loc)] == loc and len(other) > len(loc) for other in located)

    return [error for index, error in enumerate(errors) if not meant(index)]


def _describe(
    error: Any,
    origins: Mapping[tuple[str, ...], str],
    source: str,
    data: Any = None,
    listed: set[tuple[str, ...]] | None = None,
) -> _Clause:
    """One ``key: problem (got X)`` clause, and where the bad value came from. A mapping's known
    keys are listed at its first unknown key only (``listed``), so the paragraph stays readable."""
    loc = _clause_loc(data, error)
    key = ".".join(loc) or "(top level)"
    origin = source
    for length in range(len(loc), 0, -1):
        if loc[:length] in origins:
            origin = origins[loc[:length]]
            break
    else:  # an override below the failing key (a whole mapping is checked at once, e.g. secrets)
        below = [o for key, o in origins.items() if key[: len(loc)] == loc and len(key) > len(loc)]
        if below:
            origin = ", ".join(sorted(set(below)))
    kind = error["type"]
    if kind == "extra_forbidden":
        known = _known_keys(loc[:-1])
        close = difflib.get_close_matches(loc[-1], known, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        if listed is not None and tuple(known) in listed:
            return _Clause(origin, key, f"is not a known key ({hint}known keys listed above)", sentence=True)
        if listed is not None:
            listed.add(tuple(known))
        return _Clause(
            origin, key, f"is not a known key ({hint}known keys here: {', '.join(known)})", sentence=True
        )
    message = in_words(error, loc)
    return _Clause(origin, key, message, shown.given(message, error.get("input")))


def _clause_loc(data: Any, error: Any) -> tuple[str, ...]:
    """The key an error's clause names: its place in the document, and for a required key that is
    missing, that key (absent from the document by definition)."""
    loc = _user_loc(data, error["loc"])
    if error["type"] == "missing" and error["loc"]:
        loc = (*loc, str(error["loc"][-1]))
    return loc


def _user_loc(data: Any, loc: Sequence[Any]) -> tuple[str, ...]:
    """pydantic's error location without the parts that name a branch of a union (``Healthcheck``,
    ``list[str]``, ``function-after[...]``): a part is kept when it is a key (or index) of the
    document at that point, so a user's key that looks like a branch name is never dropped."""
    kept: list[str] = []
    node = data
    for part in loc:
        in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if (isinstance(node, dict) and part in node) or in_list:
            node = node[part]
        else:
            continue  # a branch tag: the document has no such key here (nor any, below a scalar)
        kept.append(str(part))
    return tuple(kept) or tuple(str(part) for part in loc[:1])


def _known_keys(loc: tuple[str, ...]) -> list[str]:
    """Field names of the model found at ``loc``, for 'did you mean' hints."""
    model: type[BaseModel] = DeployConfig
    for index, part in enumerate(loc):
        if model is DeployConfig and part == "components":
            model = Component  # the next part is a component's name, then its keys
        elif not (model is Component and index > 0 and loc[index - 1] == "components"):
            nested = _model_in(model.model_fields[part].annotation) if part in model.model_fields else None
            if nested is None:
                break
            model = nested
    return sorted(model.model_fields)


def _is_text(key_path: tuple[str, ...]) -> bool:
    """Whether the key takes a plain string (``project``, ``bus.image``, an environment value), so
    that an override's text is kept as it is instead of read as a YAML list or mapping."""
    model: type[BaseModel] = DeployConfig
    annotation: Any = None
    for index, part in enumerate(key_path):
        if model is DeployConfig and part == "components" and index == 0:
            if len(key_path) < 3:
                return False
            model = Component
            continue
        if model is Component and index == 1:
            continue  # a component's name
        field = model.model_fields.get(part)
        if field is None:
            return False
        annotation = field.annotation
        if index < len(key_path) - 1:
            if part in _FREE_FORM:
                return True  # environment.X / secrets.X values are strings
            nested = _model_in(annotation)
            if nested is None:
                return False
            model = nested
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [_bare(a) for a in typing.get_args(annotation) if a is not type(None)] == [str]
    return _bare(annotation) is str


def _bare(annotation: Any) -> Any:
    """``str`` for ``Annotated[str, ...]``: the type a value is read as, without its checks."""
    return typing.get_args(annotation)[0] if typing.get_origin(annotation) is typing.Annotated else annotation


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None
