"""A YAML reader for rendered files that refuses a key given twice in one mapping.

PyYAML keeps the last of two equal keys without a word, and so does Compose: a rendered file with
two ``bus-ports:`` services would start one of them and drop the other. Tests read what nachos-deploy
wrote through this, so such a file fails the test that reads it instead of passing as the last key.
"""

from __future__ import annotations

from typing import Any

import yaml


class DuplicateKey(yaml.constructor.ConstructorError):
    """A mapping holds the same key twice."""


class _UniqueKeys(yaml.SafeLoader):
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise DuplicateKey(
                    None,
                    None,
                    f"the key {key!r} appears twice in one mapping (first at line {seen[key] + 1})",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line
        mapping: dict[Any, Any] = super().construct_mapping(node, deep=deep)
        return mapping


def load_unique(text: str) -> Any:
    """``yaml.safe_load``, but a key twice in one mapping raises :class:`DuplicateKey`."""
    return yaml.load(text, Loader=_UniqueKeys)  # a SafeLoader subclass
