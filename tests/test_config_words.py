"""Every configuration error in the project's words, never pydantic's: each key of the deploy file
(walked from the models, so a key added later is covered) given each kind of bad value must fail
with a clause of its own ("must be a whole number", "must be at least 1MB", "is required"), never
"Input should be...", "Field required", or the name of a union's branch (``Healthcheck``,
``literal[False]``, ``function-after[...]``), and never with anything but a ConfigError."""

from __future__ import annotations

import typing
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel

from nachos_deploy.core.config import Component, DeployConfig
from nachos_deploy.core.errors import ConfigError
from nachos_deploy.io.loader import validate

BAD_VALUES: list[Any] = ["x", -1, 0, [1], {"a": 1}, True, 1.5, None, 10**20, "inf", float("nan"), "", []]
PYDANTIC_WORDS = (
    "Input should",
    "Field required",
    "should be a valid",
    "Value error",
    "function-",
    "literal[",
)


def keys(model: type[BaseModel], prefix: tuple[str, ...] = (), depth: int = 0) -> Iterator[tuple[str, ...]]:
    for name, field in model.model_fields.items():
        yield (*prefix, name)
        for arg in (field.annotation, *typing.get_args(field.annotation)):
            for sub in (arg, *typing.get_args(arg)):
                if isinstance(sub, type) and issubclass(sub, BaseModel) and depth < 3:
                    yield from keys(sub, (*prefix, name), depth + 1)


KEYS = [*keys(DeployConfig), *(("components", "gateway", *key) for key in keys(Component))]


def document(key: tuple[str, ...], value: Any) -> dict[str, Any]:
    root: dict[str, Any] = {}
    node = root
    for part in key[:-1]:
        node = node.setdefault(part, {})
    node[key[-1]] = value
    return root


@pytest.mark.parametrize("key", KEYS, ids=[".".join(key) for key in KEYS])
def test_every_key_refuses_bad_values_in_plain_words(key: tuple[str, ...]) -> None:
    for value in BAD_VALUES:
        try:
            validate(document(key, value))
        except ConfigError as error:
            leaked = [word for word in PYDANTIC_WORDS if word in error.message]
            assert not leaked, f"{'.'.join(key)} = {value!r}: {error.message}"
            assert ".".join(key[:1]) in error.message


def test_the_walk_reaches_nested_keys() -> None:
    assert len(KEYS) > 150
    assert ("components", "gateway", "healthcheck", "retries") in KEYS and ("state", "maxmemory") in KEYS
